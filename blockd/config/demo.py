"""Who the operator is: the settings only the demo may leave out.

Every setting that names the operator or is shown to the public (the notice page, structured
DNS errors, the audit log's checkpoints) has no default, so a production configuration
cannot silently present itself as the demo. Only a configuration that says it is the demo
(top-level `demo = true`, as `make run`'s config/blockd.toml does) gets the values below for
what it leaves out. `[audit] key_name` is not required: outside the demo it defaults to the
origin (C2SP tlog-checkpoint: the key name SHOULD match the origin).
"""

from __future__ import annotations

from typing import Any

DEMO_OPERATOR = "Demo ISP (DEMO)"

DEMO_VALUES: dict[str, object] = {
    "dns.operator": DEMO_OPERATOR,
    "http.notice.operator_name": DEMO_OPERATOR,
    "http.notice.operator_url": "https://isp.example/blocking",
    "http.notice.operator_contact": "abuse@isp.example",
    "http.notice.helpline_name": {
        "en": "Child Helpline Cambodia",
        "km": "ខ្សែទូរស័ព្ទជំនួយកុមារកម្ពុជា",
    },
    "http.notice.helpline_number": "1280",
    "http.notice.hotline_name": {
        "en": "the child abuse reporting website",
        "km": "គេហទំព័ររាយការណ៍ការរំលោភបំពានកុមារ",
    },
    "http.notice.hotline_url": "https://report.example/",
    "audit.origin": "blockd.invalid/demo-log",
    "audit.key_name": "blockd-demo-operator",
}

_NAME = "a name, or a table of language -> name"
ACCEPTED: dict[str, str] = {
    "dns.operator": "the organisation named in structured DNS errors, e.g. 'Example ISP'",
    "http.notice.operator_name": f"your organisation's name on the notice page: {_NAME}",
    "http.notice.operator_url": "an http(s):// URL of your page about blocking "
    "(sent as Link rel=blocked-by)",
    "http.notice.operator_contact": "where a visitor contests a block with you: "
    "an e-mail address, URL or phone number",
    "http.notice.helpline_name": f"the child helpline's name: {_NAME}",
    "http.notice.helpline_number": "the child helpline's phone number, e.g. '1280'",
    "http.notice.hotline_name": f"where to report abuse material: {_NAME}",
    "http.notice.hotline_url": "an http(s):// URL for reporting abuse material",
    "audit.origin": "the audit log's name on its checkpoints, printable ASCII without "
    "spaces, e.g. 'isp.example/blockd/resolver-1'",
}
# Tables the settings above live in: created when absent, so that a missing setting is
# reported by its own path (audit.origin), not as a missing table.
TABLES = (("dns",), ("http",), ("http", "notice"), ("audit",))


def required_outside_demo(path: str) -> str | None:
    """Return the one-line problem for a missing setting that only the demo may leave out."""
    if path not in ACCEPTED:
        return None
    return f"{path}: required outside the demo (demo = true); set {ACCEPTED[path]}"


def with_demo_values(doc: dict[str, Any]) -> dict[str, Any]:
    """Return doc with its settings' tables created and, in the demo, the demo's values."""
    out = dict(doc)
    for table in TABLES:
        parent = _table(out, table[:-1])
        if parent is not None and table[-1] not in parent:
            parent[table[-1]] = {}
    if out.get("demo") is not True:
        return out
    for path, value in DEMO_VALUES.items():
        *where, key = path.split(".")
        parent = _table(out, tuple(where))
        if parent is not None and key not in parent:
            parent[key] = value
    return out


def _table(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """Return the table at path in doc, copied so doc itself is never changed (None: not one)."""
    here = doc
    for key in path:
        inner = here.get(key)
        if not isinstance(inner, dict):
            return None
        here[key] = here = dict(inner)
    return here
