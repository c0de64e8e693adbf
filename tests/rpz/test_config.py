"""The [rpz] section and its TSIG key file: off by default, strict, hostile input refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockd import preflight
from blockd.cli import main
from blockd.config import ConfigError, TsigKeyError, parse, read_tsig_key
from tests.daemon import demo_config

KEY = 'key "xfr-key" {\n\talgorithm hmac-sha256;\n\tsecret "' + "A" * 43 + '=";\n};\n'


def with_rpz(tmp: Path, **rpz: object) -> str:
    lines = ["[rpz]"] + [f"{k} = {_toml(v)}" for k, v in rpz.items()]
    return demo_config(tmp, ("127.0.0.1", 53)) + "\n" + "\n".join(lines)


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return f'"{v}"' if isinstance(v, str) else str(v)


def test_rpz_is_off_by_default(tmp_path: Path) -> None:
    config = parse(demo_config(tmp_path, ("127.0.0.1", 53)), tmp_path)
    assert not config.rpz.enabled
    assert config.rpz.zone == "rpz.blockd"


def test_a_served_zone_resolves_its_key_file_and_names(tmp_path: Path) -> None:
    (tmp_path / "xfr.key").write_text(KEY)
    text = with_rpz(
        tmp_path,
        enabled=True,
        zone="RPZ.Example.",
        clients=["127.0.0.1", "192.0.2.0/24"],
        unsigned_clients=["127.0.0.1"],
        notify=["127.0.0.1:5399"],
        tsig_key_file="xfr.key",
        lists=["demo-authority/demo-hosts"],
    )
    config = parse(text, tmp_path)
    assert config.rpz.zone == "rpz.example"
    assert config.rpz.tsig_key_file == tmp_path / "xfr.key"
    assert config.rpz.clients == ["127.0.0.1/32", "192.0.2.0/24"]
    key = read_tsig_key(tmp_path / "xfr.key")
    assert (key.name, key.algorithm, len(key.secret)) == ("xfr-key", "hmac-sha256", 32)
    assert preflight.problems(config) == []


@pytest.mark.parametrize(
    ("rpz", "needle"),
    [
        ({"enabled": True}, "rpz.clients: name the secondaries"),
        ({"listen": ["rpz.example:53"]}, "rpz.listen.0"),
        ({"listen": "127.0.0.1:53"}, "rpz.listen"),
        ({"zone": "bad zone"}, "rpz.zone"),
        ({"zone": "a..b"}, "rpz.zone"),
        ({"zone": "x" * 64 + ".test"}, "rpz.zone"),
        ({"zone": ""}, "rpz.zone"),
        ({"clients": ["not-an-address"]}, "rpz.clients.0"),
        ({"clients": ["10.0.0.1"], "unsigned_clients": ["10.0.0.2"]}, "is not in rpz.clients"),
        ({"notify": ["127.0.0.1"]}, "rpz.notify.0"),
        ({"notify": ["127.0.0.1:70000"]}, "rpz.notify.0"),
        ({"lists": ["demo-authority/nothing"]}, "rpz.lists.0: 'demo-authority/nothing' is not"),
        ({"lists": ["../../etc"]}, "rpz.lists.0"),
        ({"lists": [5]}, "rpz.lists.0"),
        ({"history": -1}, "rpz.history"),
        ({"history": 10**9}, "rpz.history"),
        ({"ttl": 1e9}, "rpz.ttl"),
        ({"refresh": 0}, "rpz.refresh"),
        ({"colour": "blue"}, "rpz.colour"),
        ({"enabled": "yes please"}, "rpz.enabled"),
    ],
)
def test_hostile_rpz_settings_are_refused(
    tmp_path: Path, rpz: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        parse(with_rpz(tmp_path, **rpz), tmp_path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "expected one key"),
        ("garbage", "expected one key"),
        (KEY + KEY, "expected one key"),
        (KEY.replace("hmac-sha256", "hmac-md5"), "algorithm must be hmac-sha256"),
        (KEY.replace("algorithm hmac-sha256;", ""), "algorithm must be hmac-sha256"),
        (KEY.replace('"' + "A" * 43 + '="', '"!!!"'), "expected algorithm and secret"),
        (KEY.replace("A" * 43 + "=", "A" * 5), "not base64"),
        (KEY.replace("A" * 43 + "=", "AAAA"), "at least 16"),
        (KEY.replace("\tsecret", "\tsecret x;\n\tsecret"), "expected algorithm and secret"),
        (KEY + "#" + "x" * 5000, "too long"),
        ('key "é" {};', "not ASCII"),
        (KEY.replace("};", "}; key"), "expected one key"),
    ],
)
def test_hostile_key_files_are_refused(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "k.key"
    path.write_text(text)
    with pytest.raises(TsigKeyError, match=needle):
        read_tsig_key(path)


def test_a_key_file_with_comments_reads(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_text("# made by tsig-keygen\n" + KEY.replace("};", "}; // end"))
    assert read_tsig_key(path).name == "xfr-key"
    with pytest.raises(TsigKeyError, match="cannot read"):
        read_tsig_key(tmp_path / "missing.key")


def test_check_config_says_a_hashed_list_cannot_be_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's hashed list is known hashed once a version of it is stored."""
    text = with_rpz(
        tmp_path,
        enabled=True,
        clients=["127.0.0.1"],
        lists=["demo-authority/demo-hosts", "demo-authority/demo-hashed"],
        tsig_key_file="missing.key",
    )
    (tmp_path / "blockd.toml").write_text(text)
    assert main(["sync", "--config", str(tmp_path / "blockd.toml")]) == 0
    capsys.readouterr()
    assert main(["check-config", str(tmp_path / "blockd.toml")]) == 1
    err = capsys.readouterr().err
    assert "rpz.lists.1: demo-authority/demo-hashed is a hashed (sha256) list" in err
    assert "rpz.tsig_key_file: cannot read" in err
    assert "rpz.lists.0" not in err


_BASE: dict[Path, str] = {}


def _rpz_list(tmp: Path, extra: str) -> str:
    """The demo config with demo-hosts' source replaced by extra."""
    if tmp not in _BASE:
        _BASE[tmp] = demo_config(tmp, None)
    old = f'source = "file://{tmp}/feeds/demo-hosts.dsse"'
    assert old in _BASE[tmp]
    return _BASE[tmp].replace(old, extra)


def test_a_zone_source_needs_the_authoritys_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs manifest"):
        parse(_rpz_list(tmp_path, 'source = "rpz://192.0.2.1:53/rpz.authority.example"'), tmp_path)
    text = _rpz_list(
        tmp_path,
        'source = "rpz://192.0.2.1:53/rpz.authority.example"\n'
        'manifest = "https://authority.example/manifest.dsse"',
    )
    cfg = parse(text, tmp_path).lists[0]
    assert cfg.is_rpz and cfg.manifest == "https://authority.example/manifest.dsse"


def test_manifest_and_tsig_go_with_zone_sources_only(tmp_path: Path) -> None:
    text = _rpz_list(
        tmp_path, 'source = "https://a.example/l.dsse"\nmanifest = "https://a.example/m.dsse"'
    )
    with pytest.raises(ConfigError, match="rpz:// only"):
        parse(text, tmp_path)
    with pytest.raises(ConfigError, match="rpz://PRIMARY:PORT/ZONE"):
        parse(
            _rpz_list(
                tmp_path, 'source = "rpz://192.0.2.1/"\nmanifest = "https://a.example/m.dsse"'
            ),
            tmp_path,
        )
