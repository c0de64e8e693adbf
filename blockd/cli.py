"""The `blockd` command: tools for authorities, regulators and operators.

User mistakes print one line, `blockd: error: ...`, and exit 2; a rejected document exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from blockd import __version__, authority, operate
from blockd.audit import commands as audit_commands
from blockd.audit.log import AuditError
from blockd.config import ConfigError, json_schema
from blockd.config import load as load_config
from blockd.feeds.keys import KeyFileError
from blockd.feeds.model import PayloadError
from blockd.feeds.trust import TrustError
from blockd.fleet import commands as fleet_commands
from blockd.policy.guards import GuardConfigError
from blockd.usage import UsageError
from blockd.witness import commands as witness_commands

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "blockd.toml"
DEFAULT_CONFIG = Path(os.environ.get("BLOCKD_CONFIG", "/etc/blockd/blockd.toml"))


def cmd_run(a: argparse.Namespace) -> int:
    """Run the daemon: DNS enforcement with the configured lists."""
    from blockd import logs
    from blockd.daemon import serve
    from blockd.loop import runner

    config = load_config(a.config)
    logs.configure(a.log_level, a.log_format)
    zygote = None
    if config.daemon.worker_count() > 1:
        from blockd.workers.worker import main as worker_main
        from blockd.workers.zygote import Zygote

        zygote = Zygote.fork(worker_main)  # before the event loop and any thread exist
    try:
        runner()(serve(config, a.config, zygote))
    except OSError as e:
        raise UsageError(f"cannot start: {e}") from None
    return 0


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
    operate.cmd_sync(a)
    print()
    operate.cmd_status(
        argparse.Namespace(config=REPO_CONFIG, json=False, state=a.state, offline=True)
    )
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
    return operate.cmd_check(a)


def config_arg(sp: argparse.ArgumentParser) -> None:
    """Add --config to a command (None when not given: see resolve_config)."""
    sp.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        help=f"configuration file (default {DEFAULT_CONFIG}; env BLOCKD_CONFIG)",
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

    authority.register(add)
    operate.register(add)
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
    audit_commands.register(sub, config_arg, operate.daemon)
    witness_commands.register(sub)
    fleet_commands.register(sub, config_arg)
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
