"""The `blockd` command: tools for authorities, regulators and operators.

User mistakes print one line, `blockd: error: ...`, and exit 2; a rejected document exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from blockd import __version__, control
from blockd.admin import list_rows
from blockd.audit import commands as audit_commands
from blockd.audit.log import AuditError
from blockd.config import Config, ConfigError, StateConfig, json_schema
from blockd.config import load as load_config
from blockd.events import Event, EventBus, SelfTestResult
from blockd.feeds import listfile
from blockd.feeds.authoring import hashed_entry, list_payload, sign_list, sign_trust
from blockd.feeds.keys import KeyFileError, SigningKey, load_private, public_pem, save_private
from blockd.feeds.lines import line
from blockd.feeds.model import FORMATS, PayloadError, parse_trust, rfc3339
from blockd.feeds.sync import FeedSync
from blockd.feeds.trust import TrustError
from blockd.feeds.verify import Rejected, check_body, verify_list, verify_trust
from blockd.http import decide
from blockd.policy import entries as entry_rules
from blockd.policy.guards import GuardConfigError
from blockd.witness import commands as witness_commands

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "blockd.toml"
MAX_DAYS = 36525  # a century: a validity period beyond it is a typo
DEFAULT_CONFIG = Path(os.environ.get("BLOCKD_CONFIG", "/etc/blockd/blockd.toml"))


class UsageError(Exception):
    """A mistake on the command line or in a file the user named."""


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


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None


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


def _feed_sync(a: argparse.Namespace, bus: EventBus | None = None) -> FeedSync:
    config: Config = load_config(a.config)
    if getattr(a, "state", None):  # `blockd demo --state DIR`
        config = config.model_copy(update={"state": StateConfig(dir=a.state.resolve())})
    sync = FeedSync(config, bus or EventBus())
    sync.load()
    return sync


def _print_event(e: Event) -> None:
    if (text := line(e)) is not None:
        print(text)


def _daemon(a: argparse.Namespace, method: str, path: str, body: object = None) -> Any:
    """Call the running daemon's operator API; None when no daemon runs (said on stderr).

    The daemon is reached through its control socket, or its admin API with --admin. Only
    a daemon that is certainly not there (no socket, or nobody listening on it) lets the
    command fall back to the state directory: anything else is an error, never a silent
    local action beside a running daemon.
    """
    if getattr(a, "offline", False):
        return None
    try:
        if getattr(a, "admin", None):
            if a.token_file is None:
                raise UsageError("--admin needs --token-file")
            token = _read(a.token_file).decode("utf-8", "replace").strip()
            client = control.Client(url=a.admin, token=token)
            state = None
        else:
            config = load_config(a.config)
            state = config.state.dir
            client = control.Client(socket_path=config.admin.control_path(state))
        return client.call(method, path, body)
    except control.NoDaemon as e:
        print(f"blockd: {e}: acting on the state directory {state}", file=sys.stderr)
        return None
    except control.ControlError as e:
        raise UsageError(str(e)) from None


def _print_enforced(answer: Mapping[str, Any]) -> None:
    """Print what the daemon enforces now, from its answer."""
    versions = ", ".join(f"{ref} v{v}" for ref, v in answer["enforcing"].items()) or "nothing"
    ready = "ready" if answer["ready"] else f"NOT READY: {answer['reason']}"
    print(f"daemon       enforces {versions} (policy {answer['generation']}); {ready}")


def _print_stored(sync: FeedSync) -> None:
    versions = ", ".join(f"{r.ref} v{r.version}" for r in sync.status() if r.version) or "none"
    print(f"state        {versions} (no daemon running: enforced from its next start)")


def cmd_sync(a: argparse.Namespace) -> int:
    """Sync lists now, once, in the running daemon (or in the state directory)."""
    answer = _daemon(a, "POST", "/api/v1/sync", {"lists": a.lists})
    if answer is not None:
        for text in answer["said"]:
            print(text)
        _print_enforced(answer)
        return 1 if "rejected" in answer["outcomes"].values() else 0
    bus = EventBus()
    bus.subscribe(Event, _print_event)
    sync = _feed_sync(a, bus)

    async def go() -> list[str]:
        try:
            await sync.sync_trust()
            chosen = [c for c in sync.config.lists if not a.lists or c.ref in a.lists]
            unknown = set(a.lists) - {c.ref for c in chosen}
            if unknown:
                raise UsageError(f"no configured list {sorted(unknown)}")
            return [await sync.sync_list(c) for c in chosen]
        finally:
            await sync.close()

    with audit_commands.operator_action(sync.config, bus, "sync", " ".join(a.lists) or "all"):
        outcomes = asyncio.run(go())
    _print_stored(sync)
    return 1 if "rejected" in outcomes else 0


def cmd_status(a: argparse.Namespace) -> int:
    """Show every list the daemon enforces: version, age, expiry, entries, last error."""
    answer = _daemon(a, "GET", "/api/v1/status")
    rows = answer["lists"] if answer is not None else None
    if rows is None:
        rows = list_rows(_feed_sync(a).status(), datetime.now(UTC))
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    now = datetime.now(UTC)
    print(f"{'list':32} {'version':>8} {'entries':>9} {'age':>8} {'expires':>20}  state")
    for r in rows:
        issued = _parse_time(r["issued_at"])
        age = _ago(now - issued) if issued else "-"
        notes = []
        if r["version"] is None:
            notes.append("NOT ENFORCED")
        elif not r["fresh"]:
            notes.append("EXPIRED")
        if r["quarantined"]:
            notes.append(f"v{r['quarantined']} quarantined")
        if r["held_at_or_below"]:
            notes.append(f"held at or below v{r['held_at_or_below']}")
        if r["last_error_message"]:
            notes.append(f"last error: {r['last_error_message']}")
        print(
            f"{r['list']:32} {r['version'] or '-':>8} {r['entries']:>9} {age:>8} "
            f"{r['expires'] or '-':>20}  {'; '.join(notes) or 'ok'}"
        )
    if answer is not None:
        _print_enforced(answer)
    return 0


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _ago(d: timedelta) -> str:
    s = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def cmd_check(a: argparse.Namespace) -> int:
    """Show the daemon's verdict for hosts or URLs (or the state directory's, offline)."""
    answer = _daemon(a, "POST", "/api/v1/check", {"targets": a.targets})
    if answer is not None:
        _print_reports(answer["results"])
        return 0
    bus = EventBus()
    sync = _feed_sync(a, bus)
    snap = sync.snapshot
    with audit_commands.operator_action(sync.config, bus, "check", f"{len(a.targets)} targets"):
        _print_reports([decide.check(snap, target) for target in a.targets])
    return 0


def _print_reports(reports: Sequence[Mapping[str, Any]]) -> None:
    """Print check reports (blockd.http.decide.check), local or from the admin API."""
    for r in reports:
        v = r.get("verdict")
        shown = r.get("canonical") or r["target"]
        if "error" in r:
            print(f"{r['target']}: invalid: {r['error']}")
        elif v is None:
            print(f"{shown}: not blocked")
        else:
            print(
                f"{shown}: {v['action']} ({v['authority']}/{v['list']} "
                f"v{v['version']}, ref {v['reference']})"
            )


def _list_path(ref: str) -> str:
    authority, slash, name = ref.partition("/")
    if not (slash and authority and name) or "/" in name:
        raise UsageError(f"{ref!r} is not AUTHORITY/LIST")
    return f"/api/v1/lists/{quote(authority, safe='')}/{quote(name, safe='')}"


def cmd_approve(a: argparse.Namespace) -> int:
    """Apply a quarantined update, in the running daemon (or in the state directory)."""
    answer = _daemon(a, "POST", f"{_list_path(a.list)}/approve", {"version": a.version})
    if answer is not None:
        print(f"approved     {a.list} v{a.version}")
        _print_enforced(answer)
        return 0
    bus = EventBus()
    sync = _feed_sync(a, bus)
    with audit_commands.operator_action(sync.config, bus, "approve", f"{a.list} v{a.version}"):
        asyncio.run(sync.approve(a.list, a.version))
    print(f"approved     {a.list} v{a.version}")
    _print_stored(sync)
    return 0


def cmd_rollback(a: argparse.Namespace) -> int:
    """Return one list to its previous accepted version, in the running daemon."""
    answer = _daemon(a, "POST", f"{_list_path(a.list)}/rollback")
    done = "newer versions up to the undone one are held"
    if answer is not None:
        print(f"rolled back  {a.list} to v{answer['version']}; {done}")
        _print_enforced(answer)
        return 0
    bus = EventBus()
    sync = _feed_sync(a, bus)
    with audit_commands.operator_action(sync.config, bus, "rollback", a.list):
        target = asyncio.run(sync.rollback(a.list))
    print(f"rolled back  {a.list} to v{target}; {done}")
    _print_stored(sync)
    return 0


def cmd_reload(a: argparse.Namespace) -> int:
    """Make the running daemon re-read its configuration file (as SIGHUP does)."""
    answer = _daemon(a, "POST", "/api/v1/reload")
    if answer is None:
        print("blockd: no daemon is running: nothing to reload", file=sys.stderr)
        return 1
    print(answer["result"])
    _print_enforced(answer)
    return 0 if answer["reloaded"] else 1


def cmd_selftest(a: argparse.Namespace) -> int:
    """Test the running daemon's enforcement through its listeners (probes and a control)."""
    answer = _daemon(a, "POST", "/api/v1/selftest")
    if answer is not None:
        passed, checks, failures = answer["passed"], answer["checks"], answer["failures"]
    else:
        result = _selftest_listeners(a)
        passed, checks, failures = result.passed, result.checks, result.failures
    for failure in failures:
        print(f"FAILED  {failure}")
    print(f"self-test {'passed' if passed else 'FAILED'}: {checks} checks")
    return 0 if passed else 1


def _selftest_listeners(a: argparse.Namespace) -> SelfTestResult:
    """Probe the configured listeners from outside (no control socket to ask)."""
    from blockd import selftest
    from blockd.config import split_endpoint

    bus = EventBus()
    sync = _feed_sync(a, bus)
    cfg = sync.config
    dns = selftest.reachable(split_endpoint(cfg.dns.listen[0]))
    http = selftest.reachable(split_endpoint(cfg.http.listen[0])) if cfg.http.listen else None
    targets = selftest.Targets(dns, http)
    probes = sync.snapshot.probes()
    with audit_commands.operator_action(cfg, bus, "selftest", "blockd selftest"):
        result = asyncio.run(
            selftest.run(probes, targets, cfg.selftest.control or None, cfg.selftest.timeout)
        )
        bus.publish(result)
    return result


def cmd_run(a: argparse.Namespace) -> int:
    """Run the daemon: DNS enforcement with the configured lists."""
    from blockd import logs
    from blockd.daemon import serve

    config = load_config(a.config)
    logs.configure(a.log_level, a.log_format)
    try:
        _event_loop_runner()(serve(config, a.config))
    except OSError as e:
        raise UsageError(f"cannot start: {e}") from None
    return 0


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """Return uvloop.run when uvloop is installed (several times faster I/O), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def cmd_check_config(a: argparse.Namespace) -> int:
    """Validate a configuration file, and what it points at, without starting."""
    from blockd import preflight

    config = load_config(a.file)
    found = preflight.problems(config)
    if found:
        print(f"{a.file}: {len(found)} problem(s)", file=sys.stderr)
        for problem in found:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{a.file}: ok ({len(config.lists)} lists, trust {config.trust.pinned})")
    return 0


def cmd_config_schema(a: argparse.Namespace) -> int:
    """Print the configuration's JSON schema."""
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """Sync the demo authority's lists and show what they block (the offline demo)."""
    a.config, a.lists, a.offline = REPO_CONFIG, [], True
    print(f"blockd {__version__}: offline demo with {REPO_CONFIG}")
    cmd_sync(a)
    print()
    cmd_status(argparse.Namespace(config=REPO_CONFIG, json=False, state=a.state, offline=True))
    print()
    a.targets = [
        "blocked.demo.test",
        "www.blocked.demo.test",
        "partial.demo.test",
        "selftest.demo.test",
        "hashed.demo.test",
        "example.com",
        "http://partial.demo.test/listed/page.html",
        "http://partial.demo.test/other",
        "http://partial.demo.test/hashed/page.html",
    ]
    return cmd_check(a)


def config_arg(sp: argparse.ArgumentParser) -> None:
    """Add --config to a command (None when not given: see resolve_config)."""
    sp.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        help=f"configuration file (default {DEFAULT_CONFIG}; env BLOCKD_CONFIG)",
    )


def daemon_args(sp: argparse.ArgumentParser, *, offline: bool = False) -> None:
    """Add the options that choose how an operator command reaches the daemon."""
    sp.add_argument(
        "--admin",
        metavar="URL",
        help="reach the daemon's admin API (e.g. http://127.0.0.1:9153) instead of its "
        "control socket",
    )
    sp.add_argument("--token-file", type=Path, help="the admin API bearer token file")
    if offline:
        sp.add_argument(
            "--offline",
            action="store_true",
            help="read the state directory, never the running daemon",
        )


def resolve_config(a: argparse.Namespace) -> None:
    """Settle the configuration file: the command's --config, else the one given before the
    command, else $BLOCKD_CONFIG, else /etc/blockd/blockd.toml."""
    given: Path | None = a.global_config
    default = given or Path(os.environ.get("BLOCKD_CONFIG", "/etc/blockd/blockd.toml"))
    if "config" in a:
        a.config = a.config or default
    elif a.fn is cmd_check_config:
        a.file = a.file or default
    elif given is not None:
        raise UsageError(f"--config: `blockd {a.command}` reads no configuration")


def parser() -> argparse.ArgumentParser:
    """Build the argument parser."""
    p = argparse.ArgumentParser(prog="blockd", description=__doc__)
    p.add_argument("--version", action="version", version=f"blockd {__version__}")
    p.add_argument(
        "--config",
        "-c",
        dest="global_config",
        type=Path,
        metavar="FILE",
        help=f"configuration file for the commands that read one, before or after the "
        f"command (default {DEFAULT_CONFIG}; env BLOCKD_CONFIG)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], config: bool = False
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name, help=(fn.__doc__ or "").strip().splitlines()[0], description=fn.__doc__
        )
        sp.set_defaults(fn=fn)
        if config:
            config_arg(sp)
        return sp

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

    sp = add("sync", cmd_sync, config=True)
    sp.add_argument("lists", nargs="*", metavar="AUTHORITY/LIST", help="default: all")
    daemon_args(sp)
    sp = add("status", cmd_status, config=True)
    sp.add_argument("--json", action="store_true")
    daemon_args(sp, offline=True)
    sp = add("check", cmd_check, config=True)
    sp.add_argument("targets", nargs="+", metavar="HOST|URL")
    daemon_args(sp, offline=True)
    sp = add("approve", cmd_approve, config=True)
    sp.add_argument("list", metavar="AUTHORITY/LIST")
    sp.add_argument("version", type=int)
    daemon_args(sp)
    sp = add("rollback", cmd_rollback, config=True)
    sp.add_argument("list", metavar="AUTHORITY/LIST")
    daemon_args(sp)
    daemon_args(add("reload", cmd_reload, config=True))
    daemon_args(add("selftest", cmd_selftest, config=True))
    sp = add("run", cmd_run, config=True)
    sp.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    sp.add_argument(
        "--log-format",
        default="auto",
        choices=("auto", "json", "console"),
        help="auto (default): JSON lines unless stderr is a terminal",
    )
    sp = add("check-config", cmd_check_config)
    sp.add_argument(
        "file", type=Path, nargs="?", help="default: --config, $BLOCKD_CONFIG or the default"
    )
    add("config-schema", cmd_config_schema)
    sp = add("demo", cmd_demo)
    sp.add_argument("--state", type=Path, help="state directory (default: the example config's)")
    audit_commands.register(sub, config_arg, _daemon)
    witness_commands.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = parser().parse_args(argv)
    try:
        resolve_config(args)
        return int(args.fn(args))
    except (
        UsageError,
        ConfigError,
        AuditError,
        OSError,
        KeyFileError,
        TrustError,
        GuardConfigError,
        KeyError,
        PayloadError,
        UnicodeDecodeError,
        ValueError,
    ) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"blockd: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
