"""The operator's commands: they act on the running daemon, or on the state directory.

`sync`, `status`, `check`, `approve`, `rollback`, `reload` and `selftest` call the daemon's
operator API through its control socket (blockd.control), or its admin listener with
--admin, and print what the daemon now enforces. Only a daemon that is certainly not there
lets them act on the state directory, and they say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from blockd import control
from blockd.admin import list_rows
from blockd.audit import commands as audit_commands
from blockd.config import Config, StateConfig
from blockd.config import load as load_config
from blockd.events import Event, EventBus, SelfTestResult
from blockd.feeds.lines import line
from blockd.feeds.sync import FeedSync
from blockd.http import decide
from blockd.usage import Add, UsageError
from blockd.usage import read as _read


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


def daemon(a: argparse.Namespace, method: str, path: str, body: object = None) -> Any:
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
    answer = daemon(a, "POST", "/api/v1/sync", {"lists": a.lists})
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
    answer = daemon(a, "GET", "/api/v1/status")
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
    answer = daemon(a, "POST", "/api/v1/check", {"targets": a.targets})
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
    answer = daemon(a, "POST", f"{_list_path(a.list)}/approve", {"version": a.version})
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
    answer = daemon(a, "POST", f"{_list_path(a.list)}/rollback")
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
    answer = daemon(a, "POST", "/api/v1/reload")
    if answer is None:
        print("blockd: no daemon is running: nothing to reload", file=sys.stderr)
        return 1
    print(answer["result"])
    _print_enforced(answer)
    return 0 if answer["reloaded"] else 1


def cmd_selftest(a: argparse.Namespace) -> int:
    """Test the running daemon's enforcement through its listeners (probes and a control)."""
    answer = daemon(a, "POST", "/api/v1/selftest")
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


def register(add: Add) -> None:
    """Add the operator's commands to the parser."""
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
