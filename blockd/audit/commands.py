"""`blockd audit …`: print the log key, export a bundle, verify one, report from one.

`export` runs on the operator's machine (it reads the log and signs a fresh checkpoint);
`verify` and `report --bundle` run anywhere, with only the bundle and the operator's public
key (vkey), which is how a regulator uses them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from blockd.audit import bundle, cosignature, fleetbundle, note, report
from blockd.audit.entries import Entry, entry_of, utc
from blockd.audit.log import MerkleLog, open_log
from blockd.audit.span import entry_span
from blockd.audit.witnessing import Witnessing, targets
from blockd.config import Config
from blockd.config import load as load_config
from blockd.events import Event, EventBus, OperatorAction


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _open(config: Config) -> MerkleLog:
    audit = config.audit
    return open_log(audit.directory(config.state.dir), *audit.names())


@contextlib.contextmanager
def operator_action(config: Config, bus: EventBus, action: str, detail: str) -> Iterator[None]:
    """Record an offline operator command and every audited event it causes."""
    events: list[Event] = []
    bus.subscribe(Event, events.append)
    try:
        yield
    finally:
        if config.audit.enabled:
            now = utc(datetime.now(UTC).timestamp())
            entries = [e for e in (entry_of(ev, now) for ev in events) if e is not None]
            _record(config, action, detail, entries, now)


def _record(config: Config, action: str, detail: str, entries: list[Entry], now: str) -> None:
    """Append an operator action (with the configuration's digest) and entries; sign."""
    action_entry = entry_of(OperatorAction(action, detail, config.digest()), now)
    assert action_entry is not None
    log = _open(config)
    try:
        log.append([action_entry, *entries])
        log.sign_checkpoint(now)
    finally:
        log.close()


def _time(text: str) -> str:
    """Parse a date or date-time to ISO 8601 UTC seconds."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return utc(t.timestamp())


def cmd_key(a: argparse.Namespace) -> int:
    """Print the operator's log verifier key (vkey), creating the key on first use."""
    log = _open(load_config(a.config))
    print(log.signer.verifier.vkey)
    log.close()
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    """Sign a fresh checkpoint and write a bundle of the entries in [--from, --to) (audited).

    A running daemon makes the bundle and logs the export itself (it owns the log); with
    none running, the export is logged here first, so the bundle holds its own record.
    """
    config = load_config(a.config)
    previous_text = a.previous.read_text() if a.previous else None
    query = {"from": a.start, "to": a.end, "previous": previous_text}
    path = "/api/v1/audit/export"
    if any(query.values()):
        path += "?" + urlencode({k: v for k, v in query.items() if v})
    answer = a.daemon(a, "GET", path) if getattr(a, "daemon", None) else None
    if answer is not None:
        begin, end = answer["begin"], answer["end"]
        data = bundle.dumps(answer)
    else:
        now = utc(datetime.now(UTC).timestamp())
        _record(config, "export", f"from {a.start or 'start'} to {a.end or 'now'}", [], now)
        log = _open(config)
        try:
            if config.audit.witnesses:
                asyncio.run(_cosign(log, config))
            size = log.head().size
            begin, end = log.index_range(a.start, a.end) if (a.start or a.end) else (0, size)
            previous = None
            if previous_text is not None:
                text, _ = note.open_note(previous_text, [log.signer.verifier])
                previous = note.Checkpoint.parse(text)
            witnessed = len(config.audit.witnesses)
            data = bundle.dumps(
                bundle.export(log, begin, end, previous=previous, witnessed=witnessed)
            )
        finally:
            log.close()
    if a.output:
        a.output.write_text(data)
        print(f"wrote {a.output}: {entry_span(begin, end)}", file=sys.stderr)
    else:
        sys.stdout.write(data)
    return 0


async def _cosign(log: MerkleLog, config: Config) -> None:
    """Have the configured witnesses cosign the checkpoint just signed (say which did not)."""
    audit = config.audit
    witnessing = Witnessing(log, targets(audit.witnesses), timeout=audit.witness_timeout)
    try:
        async with asyncio.timeout(audit.witness_timeout * 3):
            outcomes = await witnessing.cosign()
    except TimeoutError:
        outcomes = {}
    finally:
        await witnessing.stop()
    for s in witnessing.states:
        outcome = outcomes.get(s.target.label, "error")
        if outcome != "cosigned":
            problem = s.problem or "no answer in time"
            print(f"witness {s.target.label} did not cosign: {problem}", file=sys.stderr)


def _verifier(a: argparse.Namespace) -> note.Verifier:
    text = a.key if a.key else a.key_file.read_text().strip()
    return note.Verifier.from_vkey(text)


def _witness_key(text: str) -> cosignature.CosignatureVerifier:
    try:
        return cosignature.CosignatureVerifier.from_vkey(text)
    except note.NoteError as e:
        raise ValueError(f"--witness-key {text[:60]!r}: not a witness vkey: {e}") from None


def _load_bundle(path: Path) -> object:
    try:
        return bundle.load(path.read_bytes())
    except (OSError, ValueError) as e:  # bundle.Malformed and json.JSONDecodeError included
        raise ValueError(f"{path}: cannot read the bundle: {e}") from None


def cmd_verify(a: argparse.Namespace) -> int:
    """Verify a bundle offline; exit 1 on any failure, naming the first bad index."""
    previous = a.previous.read_text() if a.previous else None
    witnesses = [_witness_key(k) for k in a.witness_key]
    threshold = a.witness_threshold
    if threshold is not None and not 1 <= threshold <= len(witnesses):
        raise ValueError(f"--witness-threshold {threshold}: give 1..{len(witnesses)} (the keys)")
    verifier = _verifier(a)
    try:
        data = _load_bundle(a.bundle)
    except ValueError as e:
        print(f"FAILED: {e}")
        return 1
    verdict = bundle.verify(
        data,
        verifier,
        previous,
        witnesses=witnesses,
        threshold=threshold,
        origin=a.origin,
        allow_gap=a.allow_gap,
    )
    if verdict.ok:
        print(verdict.message)
        for warning in verdict.warnings:
            print(f"WARNING: {warning}")
        for anomaly in verdict.anomalies:
            print(f"{'ANOMALY' if a.strict else 'WARNING'}: {anomaly.kind} {anomaly}")
        if verdict.checkpoint is not None:
            print(f"latest checkpoint root {_b64(verdict.checkpoint.root)}")
        if a.strict and verdict.anomalies:
            print(f"FAILED: {len(verdict.anomalies)} duplicate or backdated entries (--strict)")
            return 1
        return 0
    where = (
        f" (first bad index: {verdict.first_bad_index})"
        if verdict.first_bad_index is not None
        else ""
    )
    print(f"FAILED: {verdict.message}{where}")
    return 1


def cmd_verify_fleet(a: argparse.Namespace) -> int:
    """Check every node's checkpoint in a `blockd fleet audit` bundle; exit 1 on any failure."""
    lines = a.keys.read_text().splitlines() if a.keys else []
    pins = fleetbundle.Pins.parse(a.key, lines)
    try:
        data = fleetbundle.read(a.bundle.read_bytes())
    except (OSError, ValueError) as e:
        print(f"FAILED: {a.bundle}: cannot read the bundle: {e}")
        return 1
    verdict = fleetbundle.verify(data, pins)
    if not verdict.ok:
        print(f"FAILED: {verdict.message}")
        return 1
    print(
        f"fleet audit bundle exported {verdict.exported_at or '(no time)'}: "
        f"{len(verdict.nodes)} node(s). Only the checkpoints are signed; versions and "
        "heartbeat times are what each node wrote to Redis."
    )
    for n in verdict.nodes:
        word = "OK" if n.ok and (n.pinned or not a.strict) else "FAIL"
        print(f"{word:<5} {n.node}: {n.message}")
    unpinned = sum(n.ok and not n.pinned for n in verdict.nodes)
    failed = sum(not n.ok for n in verdict.nodes) + (unpinned if a.strict else 0)
    if unpinned:
        print(
            f"WARNING: {unpinned} node key(s) not pinned: the keys in the bundle come from "
            "Redis, which is not trusted; pin each node's key from an independent source "
            "(--key, --keys)" + (" (--strict: a failure)" if a.strict else "")
        )
    if not verdict.nodes:
        print("FAILED: the bundle lists no node")
        return 1
    if failed:
        print(f"FAILED: {failed} of {len(verdict.nodes)} node(s)")
        return 1
    print(f"OK: {len(verdict.nodes)} node(s) verified")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    """Write the transparency report from a verified bundle (or this machine's log)."""
    if a.bundle:
        # The report names the index range it read: entries before it are not a failure here.
        verdict = bundle.verify(_load_bundle(a.bundle), _verifier(a), allow_gap=True)
        if not verdict.ok or verdict.checkpoint is None:
            print(f"FAILED: {verdict.message}", file=sys.stderr)
            return 1
        cp, verifier = verdict.checkpoint, _verifier(a)
        entries = list(enumerate(verdict.entries, start=verdict.begin))
    else:
        log = _open(load_config(a.config))
        try:
            log.sign_checkpoint(utc(datetime.now(UTC).timestamp()))
            data = bundle.export(log, 0, log.head().size)
            verifier = log.signer.verifier
        finally:
            log.close()
        verdict = bundle.verify(data, verifier)
        if not verdict.ok or verdict.checkpoint is None:
            print(f"FAILED: the local log does not verify: {verdict.message}", file=sys.stderr)
            return 1
        cp = verdict.checkpoint
        entries = list(enumerate(verdict.entries))
    source = report.ReportSource(
        cp.origin,
        cp.size,
        _b64(cp.root),
        verifier.name,
        True,
        f"{verifier.key_id:08x}",
        verifier.vkey,
    )
    now = utc(datetime.now(UTC).timestamp())
    built = report.build_report(
        entries, source, a.start, a.end, now=now, anomalies=verdict.anomalies
    )
    render: Callable[[report.Report], str] = {
        "html": report.render_html,
        "json": report.render_json,
        "csv": report.render_csv,
    }[a.format]
    text = render(built)
    if a.output:
        a.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


Daemon = Callable[[argparse.Namespace, str, str], Any]  # the running daemon's API, or None


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
    daemon: Daemon | None = None,
) -> None:
    """Add `blockd audit …` to the command line; daemon calls a running daemon's API."""
    audit = sub.add_parser("audit", help="the audit log: key, export, verify, report")
    asub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], doc: str
    ) -> argparse.ArgumentParser:
        sp = asub.add_parser(name, help=doc, description=doc)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("key", cmd_key, "print the operator's log public key (vkey) for regulators")
    config_arg(sp)
    sp = add("export", cmd_export, "sign a checkpoint and export a verifiable bundle")
    sp.set_defaults(daemon=daemon)
    config_arg(sp)
    sp.add_argument("--from", dest="start", type=_time, help="first entry time (UTC)")
    sp.add_argument("--to", dest="end", type=_time, help="entries before this time (UTC)")
    sp.add_argument("--previous", type=Path, help="a checkpoint a regulator holds: prove growth")
    sp.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    sp = add(
        "verify-fleet",
        cmd_verify_fleet,
        "check every node's signed checkpoint in a `blockd fleet audit` bundle",
    )
    sp.add_argument("bundle", type=Path)
    sp.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="VKEY",
        help="a node's log vkey you hold from an independent source (repeatable)",
    )
    sp.add_argument("--keys", type=Path, help="file of pinned keys, one a line: VKEY or NODE VKEY")
    sp.add_argument("--strict", action="store_true", help="fail a node whose key is not pinned")
    for name, fn, doc in (
        ("verify", cmd_verify, "verify a bundle offline with the operator's public key"),
        ("report", cmd_report, "the transparency report (html, json or csv)"),
    ):
        sp = add(name, fn, doc)
        key = sp.add_mutually_exclusive_group(required=name == "verify")
        key.add_argument("--key", help="the operator's vkey (name+id+key)")
        key.add_argument("--key-file", type=Path, help="file holding the operator's vkey")
        if name == "verify":
            sp.add_argument("bundle", type=Path)
            sp.add_argument("--previous", type=Path, help="the checkpoint you verified last time")
            sp.add_argument(
                "--witness-key",
                action="append",
                default=[],
                metavar="VKEY",
                help="a witness's cosignature vkey; the latest checkpoint needs its cosignature "
                "(repeatable)",
            )
            sp.add_argument(
                "--witness-threshold",
                type=int,
                metavar="N",
                help="cosignatures needed from the --witness-key witnesses (default: all)",
            )
            sp.add_argument(
                "--origin", help="the log the bundle must be of (its checkpoint origin)"
            )
            sp.add_argument(
                "--allow-gap",
                action="store_true",
                help="accept a bundle that starts after your previous checkpoint (warns instead)",
            )
            sp.add_argument(
                "--strict",
                action="store_true",
                help="fail on duplicate or backdated entries instead of warning",
            )
        else:
            config_arg(sp)
            sp.add_argument("--bundle", type=Path, help="report from this bundle (needs --key)")
            sp.add_argument("--from", dest="start", type=_time)
            sp.add_argument("--to", dest="end", type=_time)
            sp.add_argument("--format", choices=("html", "json", "csv"), default="html")
            sp.add_argument("-o", "--output", type=Path)
