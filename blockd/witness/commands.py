"""`blockd witness keygen` and `blockd witness run`: the witness a regulator runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from blockd import logs
from blockd.audit import cosignature, note
from blockd.files import atomic_write
from blockd.witness.server import Witness, serve
from blockd.witness.state import WitnessState


def cmd_keygen(a: argparse.Namespace) -> int:
    """Generate a witness key: PREFIX.key (0600, secret) and PREFIX.pub (its vkey)."""
    priv, pub = Path(f"{a.output}.key"), Path(f"{a.output}.pub")
    if priv.exists() or pub.exists():
        raise ValueError(f"{priv} or {pub} exists; refusing to overwrite a key")
    cosigner = cosignature.generate(a.name)
    atomic_write(priv, (cosigner.skey + "\n").encode(), mode=0o600)
    atomic_write(pub, (cosigner.verifier.vkey + "\n").encode())
    print(f"private key  {priv} (mode 0600)")
    print(f"vkey         {cosigner.verifier.vkey}   (give this to the log operator)")
    return 0


def _logs(specs: list[str]) -> dict[str, list[note.Verifier]]:
    """Parse repeated --log ORIGIN=VKEY into origin -> keys."""
    logs_: dict[str, list[note.Verifier]] = {}
    for spec in specs:
        origin, sep, vkey = spec.partition("=")
        if not sep or not origin or "\n" in origin:
            raise ValueError(f"--log {spec!r}: expected ORIGIN=VKEY")
        try:
            verifier = note.Verifier.from_vkey(vkey.strip())
        except note.NoteError as e:
            raise ValueError(f"--log {origin}: not a log vkey: {e}") from None
        logs_.setdefault(origin, []).append(verifier)
    return logs_


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected ADDRESS:PORT")
    return host.strip("[]"), int(port)


def cmd_run(a: argparse.Namespace) -> int:
    """Serve add-checkpoint until SIGTERM or SIGINT."""
    try:
        cosigner = cosignature.Cosigner.from_skey(a.key.read_text("ascii"))
    except (UnicodeDecodeError, note.NoteError) as e:
        raise ValueError(f"{a.key}: not a witness key: {e}") from None
    logs_ = _logs(a.log)
    host, port = _listen(a.listen)
    logs.configure(a.log_level, "auto")
    witness = Witness(cosigner, logs_, WitnessState(a.state))
    asyncio.run(_run(witness, host, port))
    return 0


async def _run(witness: Witness, host: str, port: int) -> None:
    runner = await serve(witness, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for address in runner.addresses:
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        print(
            f"witness {witness.cosigner.name} listening on http://{shown}:{address[1]}",
            file=sys.stderr,
            flush=True,
        )
    print(f"vkey {witness.cosigner.verifier.vkey}", file=sys.stderr, flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    await runner.cleanup()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `blockd witness …` to the command line."""
    w = sub.add_parser("witness", help="a witness for operators' audit logs (C2SP tlog-witness)")
    wsub = w.add_subparsers(dest="witness_command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        sp = wsub.add_parser(name, help=doc, description=doc)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("keygen", cmd_keygen)
    sp.add_argument("--name", required=True, help="the witness's name, e.g. regulator.example/w1")
    sp.add_argument("-o", "--output", required=True, help="file prefix: PREFIX.key, PREFIX.pub")
    sp = add("run", cmd_run)
    sp.add_argument("--key", type=Path, required=True, help="the witness key (PREFIX.key)")
    sp.add_argument("--listen", required=True, help="ADDRESS:PORT, e.g. 127.0.0.1:7380")
    sp.add_argument("--state", type=Path, required=True, help="directory for state and evidence")
    sp.add_argument(
        "--log",
        action="append",
        required=True,
        metavar="ORIGIN=VKEY",
        help="a log to witness: its origin and the operator's vkey (repeatable)",
    )
    sp.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
