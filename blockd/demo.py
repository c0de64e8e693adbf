"""The demo regulator and demo authority: DEMO KEYS, reserved names, valid for years.

`python -m blockd.demo feeds/demo` (make demo-feeds) writes the demo trust policy, the demo
lists and their keys. Keys are derived from public labels, so anyone can re-derive them:
they protect nothing and exist only so that a fresh clone enforces something real.
Output is byte-for-byte reproducible (Ed25519 is deterministic, payloads are canonical).
"""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path

from blockd.feeds.authoring import hashed_entry, list_payload, sign_list, sign_trust
from blockd.feeds.keys import SigningKey
from blockd.feeds.model import Authority, Format, Regulator, TestEntry, TrustPolicy
from blockd.files import atomic_write

ISSUED = datetime(2026, 11, 1, tzinfo=UTC)
EXPIRES = datetime(2036, 11, 1, tzinfo=UTC)
AUTHORITY = "demo-authority"
BLOCKED_HOST = "blocked.demo.test"
PARTIAL_HOST = "partial.demo.test"
LISTED_URL = "http://partial.demo.test/listed/page.html"
SELFTEST_HOST = "selftest.demo.test"
HASHED_HOST = "hashed.demo.test"
HASHED_URL_EXPRESSION = "partial.demo.test/hashed/page.html"


def demo_key(label: str) -> SigningKey:
    """Derive a DEMO key from a public label. Never use for anything real."""
    return SigningKey.from_seed(
        hashlib.sha256(f"blockd DEMO KEY, NOT SECRET: {label}".encode()).digest()
    )


def write(out: Path) -> None:
    """Write the demo trust policy, lists and keys into out."""
    regulator, authority = demo_key("regulator-1"), demo_key("authority-1")
    keys = out / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    for name, key in (("regulator-1", regulator), ("authority-1", authority)):
        atomic_write(keys / f"DEMO-{name}.key", key.private_pem(), mode=0o600)
        atomic_write(keys / f"DEMO-{name}.pub", (key.public.b64 + "\n").encode())
    trust = TrustPolicy(
        version=1,
        issued_at=ISSUED,
        expires=EXPIRES,
        regulator=Regulator(
            name="Demo Regulator (DEMO KEYS)", keys=[regulator.public.b64], threshold=1
        ),
        authorities=[
            Authority(
                id=AUTHORITY,
                name="Demo Child-Protection Authority (DEMO KEYS)",
                keys=[authority.public.b64],
                threshold=1,
                lists=["demo-hosts", "demo-urls", "demo-hashed"],
                formats=["hosts", "urls", "sha256"],
                max_entries=5_000_000,
                max_bytes=512 * 1024 * 1024,
                max_age_seconds=11 * 366 * 86400,
                legal_basis="Demo legal basis: child online protection guidelines (example)",
                contact="https://authority.example/appeals",
            )
        ],
    )
    atomic_write(out / "trust.dsse", sign_trust(trust, [regulator]))

    def publish(
        list_id: str, fmt: Format, entries: list[str], body: bool, tests: list[TestEntry]
    ) -> None:
        payload, body_data = list_payload(
            AUTHORITY,
            list_id,
            1,
            fmt,
            entries,
            issued_at=ISSUED,
            expires=EXPIRES,
            body_name=f"{list_id}-1.txt" if body else None,
            test_entries=tests,
        )
        if body_data is not None:
            atomic_write(out / f"{list_id}-1.txt", body_data)
        atomic_write(out / f"{list_id}.dsse", sign_list(payload, [authority]))

    publish("demo-hosts", "hosts", [BLOCKED_HOST], False, [TestEntry(host=SELFTEST_HOST)])
    publish("demo-urls", "urls", [LISTED_URL], True, [])
    publish(
        "demo-hashed",
        "sha256",
        [
            hashed_entry("host", HASHED_HOST),
            hashed_entry("url", HASHED_URL_EXPRESSION),
            hashed_entry("route", PARTIAL_HOST),
        ],
        False,
        [],
    )


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "feeds/demo"))
