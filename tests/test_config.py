"""Configuration: strict parsing, all errors at once, schema kept in step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockd.config import ConfigError, json_schema, load, parse
from blockd.config.demo import DEMO_VALUES, required_outside_demo
from tests.factories import OPERATOR

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_is_valid_and_resolves_paths() -> None:
    cfg = load(ROOT / "config/blockd.toml")
    assert cfg.trust.pinned == ROOT / "feeds/demo/trust.dsse"
    assert [c.ref for c in cfg.lists] == [
        "demo-authority/demo-hosts",
        "demo-authority/demo-urls",
        "demo-authority/demo-hashed",
    ]
    assert cfg.lists[0].source == f"file://{ROOT}/feeds/demo/demo-hosts.dsse"


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    text = """
demo = true
[trust]
pinned = "t.dsse"
colour = "blue"
[guards]
max_change_fraction = 2
[[lists]]
authority = "UPPER"
list = "x"
source = "ftp://example.com/list"
action = "drop"
"""
    with pytest.raises(ConfigError) as e:
        parse(text, Path("/etc/blockd"), "blockd.toml")
    msg = str(e.value)
    assert msg.startswith("blockd.toml: 5 problem(s)")
    for path in (
        "trust.colour",
        "guards.max_change_fraction",
        "lists.0.authority",
        "lists.0.source",
        "lists.0.action",
    ):
        assert f"  {path}:" in msg
    assert "'notice' or 'nxdomain'" in msg


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "trust: Field required"),
        ("[trust\npinned='x'", "not valid TOML"),
        ("trust = 5", "trust"),
        (
            "[trust]\npinned='x'\n[[lists]]\nauthority='a'\nlist='l'\nsource='file:///x'\n"
            "[[lists]]\nauthority='a'\nlist='l'\nsource='file:///y'",
            "configured twice: a/l",
        ),
        (
            "[trust]\npinned='x'\n[[lists]]\nauthority='a'\nlist='l'\nsource='file:///x'\n"
            "interval=-1",
            "lists.0.interval",
        ),
        ("[trust]\npinned='x'\n[http]\nwrite_timeout=0", "http.write_timeout"),
        ("[trust]\npinned='x'\n[http]\nwrite_timeout='soon'", "http.write_timeout"),
        (
            "[trust]\npinned='x'\n[http]\nmax_connections_per_client=0",
            "http.max_connections_per_client",
        ),
        (
            "[trust]\npinned='x'\n[http]\nmax_connections_per_client=1e9",
            "http.max_connections_per_client",
        ),
    ],
)
def test_hostile_and_malformed_configs(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        parse(text, Path("/tmp"))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "bin.toml")


def test_checked_in_schema_is_current() -> None:
    on_disk = json.loads((ROOT / "config/blockd.schema.json").read_text())
    assert on_disk == json_schema(), "run: blockd config-schema > config/blockd.schema.json"


# -- what only the demo may leave out ----------------------------------------------------------

REQUIRED = [
    ("dns", "operator"),
    *(("http.notice", k) for k in OPERATOR["http.notice"]),
    ("audit", "origin"),
]


def production(*, leave_out: tuple[str, str] | None = None, extra: str = "") -> str:
    """Return a production config naming its operator, without one setting if asked."""
    lines = ['[trust]\npinned = "t.dsse"']
    for table, settings in OPERATOR.items():
        lines.append(f"[{table}]")
        lines += [f'{k} = "{v}"' for k, v in settings.items() if (table, k) != leave_out]
        if table == "audit":
            lines.append(extra)
    return "\n".join(lines)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, Path("/etc/blockd"), "blockd.toml")
    return [line.removeprefix("  ") for line in str(caught.value).splitlines()[1:]]


def test_a_production_config_that_names_its_operator_loads() -> None:
    cfg = parse(production(), Path("/etc/blockd"))
    assert cfg.dns.operator == "Test ISP" and cfg.http.notice.hotline_url == "https://report.test/"
    assert cfg.audit.names() == ("isp.test/blockd/test", "isp.test/blockd/test")


@pytest.mark.parametrize(("table", "key"), REQUIRED, ids=[f"{t}.{k}" for t, k in REQUIRED])
def test_outside_the_demo_each_operator_setting_is_required(table: str, key: str) -> None:
    [line] = problems(production(leave_out=(table, key)))
    assert line.startswith(f"{table}.{key}: required outside the demo (demo = true); set ")
    assert line == required_outside_demo(f"{table}.{key}")


def test_every_missing_setting_comes_at_once_with_field_and_cross_field_errors() -> None:
    text = """
[trust]
pinned = "t.dsse"
[dns]
ttl = "x"
[audit.records]
keep_min_days = 30
keep_max_days = 10
"""
    found = problems(text)
    required = [f"{t}.{k}" for t, k in REQUIRED]
    assert [line.split(":")[0] for line in found] == [
        "dns.ttl",
        *required,
        "audit.records",
    ]
    for path in required:
        assert any(line.startswith(f"{path}: required outside the demo") for line in found)
    assert found[-1] == "audit.records: keep_max_days (10) must not be below keep_min_days (30)"
    assert all(len(line) < 200 and "{" not in line for line in found)  # one line, no dump


def test_the_demo_gets_the_demo_values() -> None:
    cfg = parse('demo = true\n[trust]\npinned = "t.dsse"\n', Path("/etc/blockd"))
    assert cfg.dns.operator == DEMO_VALUES["dns.operator"]
    notice = cfg.http.notice.model_dump()
    for path, value in DEMO_VALUES.items():
        if path.startswith("http.notice."):
            assert notice[path.removeprefix("http.notice.")] == value
    assert cfg.audit.names() == ("blockd.invalid/demo-log", "blockd-demo-operator")
    # what the demo does set is kept
    cfg = parse('demo = true\n[trust]\npinned = "t"\n[dns]\noperator = "Mine"', Path("/"))
    assert cfg.dns.operator == "Mine"


def test_no_demo_value_is_a_default_in_the_models_or_the_schema() -> None:
    schema = json.dumps(json_schema())
    for value in ("blockd.invalid/demo-log", "blockd-demo-operator", "report.example", "1280"):
        assert value not in schema
    assert "Demo ISP" not in schema and "abuse@isp.example" not in schema


def test_the_key_name_defaults_to_the_origin_outside_the_demo() -> None:
    cfg = parse(production(extra='key_name = "isp.test-key"'), Path("/"))
    assert cfg.audit.names() == ("isp.test/blockd/test", "isp.test-key")
    text = production().replace('origin = "isp.test/blockd/test"', 'origin = "isp.test/a+b"')
    [line] = problems(text)
    assert line.startswith("audit.key_name: required when origin has a '+'")


def test_a_disabled_audit_log_needs_no_origin() -> None:
    cfg = parse(production(leave_out=("audit", "origin"), extra="enabled = false"), Path("/"))
    assert cfg.audit.origin is None
    with pytest.raises(ConfigError, match=r"audit log is off \(audit.enabled = false\)"):
        cfg.audit.names()


@pytest.mark.parametrize(
    ("table", "setting", "needle"),
    [
        ("dns", 'operator = ""', "dns.operator: must not be empty or only spaces"),
        ("dns", 'operator = "   "', "dns.operator: must not be empty or only spaces"),
        ("dns", "operator = 5", "dns.operator: Input should be a valid string"),
        ("http.notice", 'operator_name = ""', "http.notice.operator_name: "),
        ("http.notice", 'operator_name = " \\t "', "http.notice.operator_name: "),
        ("http.notice", "operator_name = {}", "operator_name: must name at least one language"),
        ("http.notice", 'operator_name = { en = " " }', "the 'en' name must be text, not empty"),
        ("http.notice", 'operator_name = { EN = "x" }', "'EN' is not a language tag"),
        ("http.notice", "operator_name = [1]", "operator_name: must be a name, or a table of"),
        ("http.notice", "operator_name = { en = 5 }", "the 'en' name must be text"),
        ("http.notice", 'operator_url = ""', "http.notice.operator_url: must be an http://"),
        ("http.notice", 'operator_url = "  "', "http.notice.operator_url: must be an http://"),
        ("http.notice", 'operator_contact = ""', "http.notice.operator_contact: must not be"),
        ("http.notice", 'operator_contact = "  "', "http.notice.operator_contact: must not be"),
        ("http.notice", "operator_contact = 7", "http.notice.operator_contact: Input should"),
        ("http.notice", 'helpline_name = " "', "http.notice.helpline_name"),
        ("http.notice", 'helpline_number = ""', "http.notice.helpline_number: String should"),
        ("http.notice", 'helpline_number = "  "', "http.notice.helpline_number: String should"),
        ("http.notice", "helpline_number = 1280", "http.notice.helpline_number: Input should"),
        ("http.notice", 'hotline_name = ""', "http.notice.hotline_name"),
        ("http.notice", 'hotline_url = ""', "http.notice.hotline_url: must be an http://"),
        ("http.notice", "hotline_url = true", "http.notice.hotline_url: Input should"),
        ("audit", 'origin = ""', "audit.origin: String should have at least 1 character"),
        ("audit", 'origin = "  "', "audit.origin: String should match pattern"),
        ("audit", 'origin = "isp.test/a b"', "audit.origin: String should match pattern"),
        ("audit", "origin = 5", "audit.origin: Input should be a valid string"),
        ("audit", 'key_name = ""', "audit.key_name: String should have at least 1 character"),
        ("audit", 'key_name = "a+b"', "audit.key_name: String should match pattern"),
        ("audit", 'key_name = " "', "audit.key_name: String should match pattern"),
    ],
)
def test_hostile_operator_settings_are_refused(table: str, setting: str, needle: str) -> None:
    key = setting.split(" ")[0]
    text = production(leave_out=(table, key)).replace(f"[{table}]", f"[{table}]\n{setting}", 1)
    found = problems(text)
    assert len(found) == 1 and needle in found[0], found
    assert "required outside the demo" not in found[0]
