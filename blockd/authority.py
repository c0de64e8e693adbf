"""The authority's and regulator's tools: keys, signing lists and trust policies, verifying.

`blockd keygen`, `sign-list`, `sign-trust` and `verify` work on files alone: no daemon, no
configuration, no network. `sign-list` refuses what blockd itself would refuse.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.exception
import dns.zone

from blockd.feeds import listfile, rpzin
from blockd.feeds.authoring import hashed_entry, list_payload, sign_list, sign_trust
from blockd.feeds.keys import SigningKey, load_private, public_pem, save_private
from blockd.feeds.model import FORMATS, PayloadError, RpzBinding, parse_trust, rfc3339
from blockd.feeds.verify import Rejected, check_body, verify_list, verify_trust
from blockd.policy import entries as entry_rules
from blockd.usage import Add, UsageError
from blockd.usage import read as _read

MAX_DAYS = 36525  # a century: a validity period beyond it is a typo


def _time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time like 2026-01-01T00:00:00Z"
        ) from None
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. ...Z")
    return t.astimezone(UTC)


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not 0 < days <= MAX_DAYS:  # NaN fails too
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of days above 0 and at most {MAX_DAYS}"
        )
    return days


def _keys(paths: Sequence[Path]) -> list[SigningKey]:
    return [load_private(p) for p in paths]


# -- authority and regulator tools ---------------------------------------------------------


def cmd_keygen(a: argparse.Namespace) -> int:
    """Generate an Ed25519 key pair: PREFIX.key (0600) and PREFIX.pub."""
    key = SigningKey.generate()
    priv, pub = Path(f"{a.out}.key"), Path(f"{a.out}.pub")
    if priv.exists() or pub.exists():
        raise UsageError(f"{priv} or {pub} exists; refusing to overwrite a key")
    save_private(key, priv)
    pub.write_bytes(public_pem(key.public))
    print(f"private key  {priv} (mode 0600; keep it offline)")
    print(f"public key   {pub}")
    print(f"keyid        {key.keyid}")
    print(f"base64       {key.public.b64}   (put this in the trust policy)")
    return 0


def cmd_sign_list(a: argparse.Namespace) -> int:
    """Sign a list of entries (one per line) into a DSSE envelope.

    Entries, self-test probes and dates blockd would refuse are refused here first, one
    line each; with --force they are signed anyway and printed as warnings.
    """
    if a.hash_from and a.format != "sha256":
        raise UsageError("--hash-from needs --format sha256")
    try:
        lines = listfile.read_lines(_read(a.entries))
        tests = listfile.probes(a.test_host, a.test_url)
    except listfile.ListFileError as e:
        raise UsageError(f"{a.entries}: {e}") from None
    now = datetime.now(UTC).replace(microsecond=0)
    issued = a.issued_at or now
    expires = a.expires or issued + timedelta(days=a.expires_in)
    problems = [
        *listfile.check_entries(a.hash_from or a.format, lines, str(a.entries)),
        *listfile.check_probes(a.format, tests),
        *listfile.check_dates(issued, expires, now),
    ]
    for problem in problems:
        print(f"blockd: {'warning' if a.force else 'error'}: {problem}", file=sys.stderr)
    if problems and not a.force:
        raise UsageError(
            f"{len(problems)} problem(s) blockd would refuse; nothing signed (--force signs anyway)"
        )
    entries = [ln.text for ln in lines]
    if a.hash_from:
        entries = _hash_entries(entries, a.hash_from)
    out: Path = a.output
    body_name = f"{out.stem}-{a.version}.txt" if a.body else None
    payload, body = list_payload(
        a.authority,
        a.list,
        a.version,
        a.format,
        entries,
        issued_at=issued,
        expires=expires,
        body_name=body_name,
        test_entries=tests,
    )
    envelope = sign_list(payload, _keys(a.key))
    if body is not None and body_name:
        (out.parent / body_name).write_bytes(body)
        print(f"body         {out.parent / body_name} ({len(body)} bytes)")
    out.write_bytes(envelope)
    print(
        f"envelope     {out}: {a.authority}/{a.list} v{a.version}, {len(entries)} entries, "
        f"expires {rfc3339(expires)}"
    )
    return 0


def cmd_sign_rpz_manifest(a: argparse.Namespace) -> int:
    """Sign the manifest that makes a zone (RPZ) a list: its serial, ZONEMD and hosts.

    The zone file is the one the primary serves, with its ZONEMD; it is read by the rules
    blockd reads a transferred zone by, so a zone blockd would refuse is refused here.
    """
    origin = a.zone.lower().rstrip(".")
    try:
        zone = dns.zone.from_text(_read(a.zone_file).decode(), origin + ".", relativize=True)
        found = rpzin.read(zone)
    except UnicodeDecodeError:
        raise UsageError(f"{a.zone_file}: not a text zone file") from None
    except dns.exception.DNSException as e:
        raise UsageError(f"{a.zone_file}: not a zone file for {origin}: {e}") from None
    except rpzin.ZoneError as e:
        raise UsageError(f"{a.zone_file}: {e}") from None
    now = datetime.now(UTC).replace(microsecond=0)
    issued = a.issued_at or now
    expires = a.expires or issued + timedelta(days=a.expires_in)
    try:
        problems = listfile.check_dates(issued, expires, now)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if problems:
        raise UsageError("; ".join(str(p) for p in problems))
    out: Path = a.output
    binding = RpzBinding(zone=found.zone, serial=found.serial, zonemd=found.zonemd)
    payload, _ = list_payload(
        a.authority,
        a.list,
        a.version,
        "hosts",
        found.hosts,
        issued_at=issued,
        expires=expires,
        body_name=f"{a.list}-{a.version}.txt",
        rpz=binding,
    )
    out.write_bytes(sign_list(payload, _keys(a.key)))
    print(
        f"manifest     {out}: {a.authority}/{a.list} v{a.version}, zone {found.zone} serial "
        f"{found.serial}, {len(found.hosts)} hosts, expires {rfc3339(expires)}"
    )
    return 0


def _hash_entries(entries: list[str], kind: str) -> list[str]:
    """Turn plaintext hosts or URLs into sha256 lines, adding route lines for URL hosts.

    An entry with no canonical form cannot be hashed: it is left out (sign-list has
    already refused it, or warned with --force).
    """
    out: list[str] = []
    routes: set[str] = set()
    for e in entries:
        try:
            if kind == "hosts":
                out.append(hashed_entry("host", entry_rules.host_key(e)))
            else:
                expression = entry_rules.url_key(e)
                routes.add(expression.partition("/")[0])
                out.append(hashed_entry("url", expression))
        except ValueError:
            continue
    return out + [hashed_entry("route", r) for r in sorted(routes)]


def cmd_sign_trust(a: argparse.Namespace) -> int:
    """Sign a trust policy (JSON, as in feeds/FORMAT.md)."""
    try:
        policy = parse_trust(_read(a.policy))
    except PayloadError as e:
        raise UsageError(f"{a.policy}: {e}") from None
    keys = _keys(a.key)
    own = {k.keyid for k in policy.regulator.public_keys()}
    stranger = [k.keyid[:16] for k in keys if k.keyid not in own]
    if stranger and not a.previous_regulator:
        raise UsageError(
            f"keys {stranger} are not regulator keys of this policy; pass "
            "--previous-regulator when signing a rotation with the old keys"
        )
    a.output.write_bytes(sign_trust(policy, keys))
    print(
        f"trust policy {a.output}: version {policy.version}, {len(policy.authorities)} "
        f"authorities, signed by {len(keys)} key(s)"
    )
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    """Verify a list envelope against a trust policy; print ACCEPT or REJECT and why."""
    now = a.at or datetime.now(UTC)
    try:
        trust = verify_trust(_read(a.trust), None, datetime.min.replace(tzinfo=UTC)).policy
        v = verify_list(_read(a.envelope), trust, now, last_version=a.last_version)
        if v is None:
            print(f"UNCHANGED  version equals --last-version {a.last_version}")
            return 0
        p = v.payload
        if p.body is not None:
            body_path = a.body or a.envelope.parent / p.body.name
            check_body(v, _read(body_path))
    except Rejected as e:
        print(f"REJECT  {e.reason}: {e}")
        return 1
    print(f"ACCEPT  {p.ref} version {p.version} ({p.format}, {p.entry_count} entries)")
    print(f"        issued {rfc3339(p.issued_at)}, expires {rfc3339(p.expires)}")
    print(
        f"        signed by {', '.join(k[:16] for k in v.keyids)} "
        f"({v.authority.threshold} of {len(v.authority.keys)} required)"
    )
    print(f"        envelope sha256 {v.envelope_sha256}")
    return 0


# -- operator tools ---------------------------------------------------------------------


def register(add: Add) -> None:
    """Add the authority's and regulator's commands to the parser."""
    sp = add("keygen", cmd_keygen)
    sp.add_argument("--out", required=True, help="path prefix for PREFIX.key and PREFIX.pub")

    sp = add("sign-list", cmd_sign_list)
    sp.add_argument("entries", type=Path, help="file with one entry per line (# comments)")
    sp.add_argument(
        "--key", type=Path, action="append", required=True, help="signing key (repeat for t of n)"
    )
    sp.add_argument("--authority", required=True)
    sp.add_argument("--list", required=True)
    sp.add_argument("--version", type=int, required=True, help="must exceed the last published")
    sp.add_argument("--format", choices=FORMATS, required=True)
    sp.add_argument(
        "--issued-at",
        type=_time,
        metavar="TIME",
        help="RFC 3339 time with its UTC offset, e.g. 2026-01-01T00:00:00Z (default: now)",
    )
    sp.add_argument(
        "--expires",
        type=_time,
        metavar="TIME",
        help="RFC 3339 time, e.g. 2026-01-08T00:00:00Z (default: --issued-at + --expires-in)",
    )
    sp.add_argument(
        "--expires-in",
        type=_days,
        default=7,
        metavar="DAYS",
        help="days after --issued-at, fractions allowed, e.g. 0.5 (default 7)",
    )
    sp.add_argument(
        "--force",
        action="store_true",
        help="sign even entries, probes and dates blockd would refuse (printed as warnings)",
    )
    sp.add_argument(
        "--body", action="store_true", help="deliver entries in a file beside the envelope"
    )
    sp.add_argument("--hash-from", choices=("hosts", "urls"), help="hash plaintext hosts or URLs")
    sp.add_argument("--test-host", action="append", default=[], help="self-test probe host")
    sp.add_argument("--test-url", action="append", default=[], help="self-test probe URL")
    sp.add_argument("-o", "--output", type=Path, required=True)

    sp = add("sign-rpz-manifest", cmd_sign_rpz_manifest)
    sp.add_argument("zone_file", type=Path, help="the zone file the primary serves (with ZONEMD)")
    sp.add_argument("--zone", required=True, help="the zone's name, e.g. rpz.authority.example")
    sp.add_argument(
        "--key", type=Path, action="append", required=True, help="signing key (repeat for t of n)"
    )
    sp.add_argument("--authority", required=True)
    sp.add_argument("--list", required=True)
    sp.add_argument("--version", type=int, required=True, help="must exceed the last published")
    sp.add_argument("--issued-at", type=_time, metavar="TIME", help="RFC 3339 (default: now)")
    sp.add_argument("--expires", type=_time, metavar="TIME", help="RFC 3339")
    sp.add_argument("--expires-in", type=_days, default=7, metavar="DAYS", help="days (default 7)")
    sp.add_argument("-o", "--output", type=Path, required=True)
    sp = add("sign-trust", cmd_sign_trust)
    sp.add_argument("policy", type=Path, help="trust policy JSON")
    sp.add_argument("--key", type=Path, action="append", required=True)
    sp.add_argument(
        "--previous-regulator",
        action="store_true",
        help="allow keys that are not in this policy (the outgoing regulator keys)",
    )
    sp.add_argument("-o", "--output", type=Path, required=True)

    sp = add("verify", cmd_verify)
    sp.add_argument("envelope", type=Path)
    sp.add_argument("--trust", type=Path, required=True, help="trust policy envelope")
    sp.add_argument("--body", type=Path, help="body file (default: beside the envelope)")
    sp.add_argument("--last-version", type=int, help="last accepted version (rollback check)")
    sp.add_argument("--at", type=_time, help="judge freshness at this time instead of now")
