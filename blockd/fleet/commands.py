"""`blockd fleet status` and `blockd fleet audit`: every node as its heartbeat tells it.

Both read Redis directly with the configuration's [fleet] settings (no daemon needed), so
an operator can run them from any node. `status` exits 0 when every node is live and
enforces the newest published versions, 1 when any diverges or is stale, 2 on a usage
error. `audit` writes one bundle of every node's latest signed audit checkpoint and the key
it says signs it, for `blockd audit verify-fleet` (blockd.audit.fleetbundle).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blockd.audit import fleetbundle
from blockd.audit.entries import utc
from blockd.config import load as load_config
from blockd.config.fleet import FleetConfig
from blockd.fleet.keys import Keys
from blockd.usage import UsageError

if TYPE_CHECKING:  # every blockd command builds this parser: Redis is imported when used
    from blockd.fleet import status


def _survey(a: argparse.Namespace) -> tuple[FleetConfig, status.Survey]:
    """Read every heartbeat from the configured Redis; warn of each one skipped."""
    from redis.exceptions import RedisError

    from blockd.fleet import connect, status

    config = load_config(a.config)
    cfg = config.fleet
    if cfg is None:
        raise UsageError(f"{a.config}: no [fleet] section: this blockd runs alone")

    async def read() -> status.Survey:
        r = connect.client(cfg, cfg.password())
        try:
            return await status.read(r, Keys(cfg.prefix), time.time())
        finally:
            await r.aclose()

    try:
        survey = asyncio.run(read())
    except (RedisError, OSError) as e:
        raise UsageError(f"fleet: cannot read Redis ({cfg.where()}): {e}") from None
    for node, why in survey.skipped:
        print(f"warning: heartbeat of node {node!r} skipped: {why}", file=sys.stderr)
    return cfg, survey


def cmd_status(a: argparse.Namespace) -> int:
    """Show every node of the fleet: versions enforced, heartbeat age, divergence."""
    from blockd.fleet import status

    _, survey = _survey(a)
    if a.json:
        print(json.dumps(status.as_json(survey), indent=2, sort_keys=True))
    else:
        print(as_text(survey))
    return 0 if all(not n.stale and not n.divergent for n in survey.nodes) else 1


def cmd_audit(a: argparse.Namespace) -> int:
    """Write one bundle of every node's latest signed audit checkpoint and its key."""
    cfg, survey = _survey(a)
    data = audit_bundle(survey, cfg.prefix, cfg.node)
    text = fleetbundle.dumps(data)
    for n in survey.nodes:
        if n.beat.checkpoint is None:
            print(f"warning: node {n.beat.node} has no signed checkpoint yet", file=sys.stderr)
        elif n.beat.audit_key is None:
            print(f"warning: node {n.beat.node} publishes no audit key", file=sys.stderr)
    print(
        "note: the keys in this bundle come from Redis; a regulator pins each node's key "
        "from an independent source (blockd audit verify-fleet --key)",
        file=sys.stderr,
    )
    if a.output:
        a.output.write_text(text, "utf-8")
        print(f"wrote {a.output}: {len(survey.nodes)} node(s)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def audit_bundle(survey: status.Survey, prefix: str, node: str) -> dict[str, Any]:
    """Return the fleet audit bundle of a survey: each node's checkpoint, key and claims."""
    return {
        "format": fleetbundle.FORMAT,
        "prefix": prefix,
        "exported_at": utc(survey.at),
        "exported_by": node,
        "newest": dict(survey.newest),
        "nodes": [
            fleetbundle.node_record(
                n.beat.node,
                utc(n.beat.time),
                n.beat.versions,
                n.beat.checkpoint,
                n.beat.audit_key,
                policy_generation=n.beat.generation,
                syncer=n.beat.syncer,
                stale=n.stale,
                divergent=n.divergent,
                blockd=n.beat.blockd,
            )
            for n in survey.nodes
        ],
        "skipped": [{"node": node, "reason": why} for node, why in survey.skipped],
    }


def as_text(survey: status.Survey) -> str:
    """Return the survey as a table an operator reads."""
    newest = ", ".join(f"{ref} v{v}" for ref, v in sorted(survey.newest.items())) or "nothing yet"
    lines = [
        f"newest published: {newest}",
        f"{len(survey.nodes)} node(s), {survey.live} live, {survey.divergent} divergent",
    ]
    for n in survey.nodes:
        flags = [f for f, on in (("STALE", n.stale), ("DIVERGENT", n.divergent)) if on]
        versions = ", ".join(
            f"{ref} v{v}" if v is not None else f"{ref} none" for ref, v in n.beat.versions.items()
        )
        role = " (syncer)" if n.beat.syncer else ""
        lines.append(
            f"  {n.beat.node}{role}  heartbeat {n.age:.0f}s ago  policy {n.beat.generation}  "
            f"{versions or 'no lists'}{'  ' + ' '.join(flags) if flags else ''}"
        )
        for ref, (has, want) in n.behind.items():
            lines.append(f"      {ref}: enforces {'none' if has is None else has}, newest {want}")
    return "\n".join(lines)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `blockd fleet status` and `blockd fleet audit` to the command line."""
    fleet = sub.add_parser("fleet", help="the fleet of resolvers sharing lists over Redis")
    fsub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    doc = (cmd_status.__doc__ or "").strip()
    sp = fsub.add_parser("status", help=doc, description=doc)
    sp.set_defaults(fn=cmd_status)
    config_arg(sp)
    sp.add_argument("--json", action="store_true", help="print JSON")
    doc = (cmd_audit.__doc__ or "").strip()
    sp = fsub.add_parser("audit", help=doc, description=doc)
    sp.set_defaults(fn=cmd_audit)
    config_arg(sp)
    sp.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
