"""Running blockd with a served policy zone in tests, and publishing new list versions."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import dns.tsig

from blockd.demo import AUTHORITY, EXPIRES, ISSUED, SELFTEST_HOST, demo_key
from blockd.feeds.authoring import list_payload, sign_list
from blockd.feeds.model import TestEntry
from tests.daemon import _toml, demo_config

ZONE = "rpz.example"
SECRET = base64.b64encode(bytes(range(32))).decode()
KEY = dns.tsig.Key("xfr-key.", SECRET, dns.tsig.HMAC_SHA256)


def key_file(tmp: Path, secret: str = SECRET) -> Path:
    """Write a TSIG key file as tsig-keygen does; return its path."""
    path = tmp / "xfr.key"
    path.write_text(f'key "xfr-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n')
    return path


def rpz_config(
    tmp: Path, upstream: tuple[str, int] | None = None, *, signed: bool = True, **rpz: object
) -> str:
    """The demo config on loopback with [rpz] served on a free port to 127.0.0.1."""
    settings: dict[str, object] = {
        "enabled": True,
        "listen": ["127.0.0.1:0"],
        "zone": ZONE,
        "clients": ["127.0.0.1"],
    }
    if signed:
        settings["tsig_key_file"] = str(key_file(tmp))
    settings |= rpz
    lines = ["[rpz]"] + [f"{k} = {_toml(v)}" for k, v in settings.items()]
    return demo_config(tmp, upstream) + "\n" + "\n".join(lines) + "\n"


def publish_hosts(tmp: Path, version: int, hosts: Sequence[str]) -> None:
    """Sign a new version of the demo host list into the test's feeds directory."""
    body = len(hosts) > 1000
    payload, data = list_payload(
        AUTHORITY,
        "demo-hosts",
        version,
        "hosts",
        list(hosts),
        issued_at=ISSUED,
        expires=EXPIRES,
        body_name=f"demo-hosts-{version}.txt" if body else None,
        test_entries=[TestEntry(host=SELFTEST_HOST)],
    )
    if data is not None:
        (tmp / "feeds" / f"demo-hosts-{version}.txt").write_bytes(data)
    (tmp / "feeds" / "demo-hosts.dsse").write_bytes(sign_list(payload, [demo_key("authority-1")]))
