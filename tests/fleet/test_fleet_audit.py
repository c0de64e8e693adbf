"""`blockd fleet audit` and `blockd audit verify-fleet`: real nodes, a real Redis, hostile data.

The bundle holds each node's checkpoint as signed and the key its heartbeat names; the keys
come from Redis, so only keys the regulator pins count as trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from blockd.app import App
from blockd.audit import note
from blockd.cli import main
from blockd.fleet import status
from blockd.fleet.keys import Keys
from tests.fleet.nodes import Fleet, fetched, one_syncer, redis, syncer, until, version

if TYPE_CHECKING:
    pass

pytestmark = pytest.mark.slow


def cli(*args: str) -> tuple[int, str, str]:
    """Run blockd's command line; return its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def vkey(app: App) -> str:
    assert app.audit is not None
    return app.audit.log.signer.verifier.vkey


async def published(fleet: Fleet, *apps: App) -> dict[str, status.Beat]:
    """Sign a checkpoint on each app; wait until its heartbeat carries it and its key."""
    for app in apps:
        assert app.audit is not None
        await app.audit.flush(checkpoint=True)
    keys, r = Keys("test"), redis(fleet.redis)
    beats: dict[str, status.Beat] = {}

    async def there() -> bool:
        survey = await status.read(r, keys, time.time())
        beats.update({n.beat.node: n.beat for n in survey.nodes})
        return all(
            (b := beats.get(app.config.fleet.node)) is not None  # type: ignore[union-attr]
            and b.audit_key == vkey(app)
            and b.checkpoint is not None
            and b.checkpoint == app.audit.log.latest_checkpoint()  # type: ignore[union-attr]
            for app in apps
        )

    try:
        await until(there, "every node's heartbeat names its checkpoint and key")
    finally:
        await r.aclose()
    return beats


def edit(path: Path, change: Any) -> Path:
    """Write a copy of the bundle at path changed by change(bundle); return the copy."""
    data = json.loads(path.read_text())
    change(data)
    out = path.with_name(f"edited-{len(list(path.parent.glob('edited-*')))}.json")
    out.write_text(json.dumps(data))
    return out


def node(data: dict[str, Any], name: str) -> dict[str, Any]:
    [entry] = [n for n in data["nodes"] if n["node"] == name]
    return entry  # type: ignore[no-any-return]


async def test_a_bundle_of_every_nodes_checkpoint_verifies_and_edits_fail(fleet: Fleet) -> None:
    async with fleet.node("a") as a, fleet.node("b") as b:
        await until(lambda: version(a) == 1 and version(b) == 1, "both enforce v1")
        beats = await published(fleet, a, b)
        keys, r = Keys("test"), redis(fleet.redis)
        try:  # a node whose audit log has signed nothing, and one whose heartbeat is junk
            await status.beat(r, keys, status.Beat("quiet", time.time(), {"auth/hosts": 1}))
            # a checkpoint with a key that did not sign it, written straight into Redis
            cp = beats["a"].checkpoint
            mismatch = status.Beat("mismatch", time.time(), {}, checkpoint=cp, audit_key=vkey(b))
            await status.beat(r, keys, mismatch)
            await r.hset(keys.node("junk"), mapping={"time": "1", "versions": "x" * 70_000})
            await r.zadd(keys.nodes, {"junk": time.time()})
        finally:
            await r.aclose()
        conf = fleet.tmp / "a" / "blockd.toml"
        conf.write_text(fleet.config("a"))
        out = fleet.tmp / "fleet.json"
        code, _, err = await asyncio.to_thread(
            cli, "fleet", "audit", "-c", str(conf), "-o", str(out)
        )
    assert code == 0, err
    assert "heartbeat of node 'junk' skipped: versions: longer than" in err
    assert "node quiet has no signed checkpoint yet" in err
    assert "a regulator pins each node's key" in err
    data = json.loads(out.read_text("utf-8"))
    assert data["format"] == "blockd-fleet-audit/1" and data["prefix"] == "test"
    assert {n["node"] for n in data["nodes"]} == {"a", "b", "mismatch", "quiet"}
    assert data["skipped"] == [{"node": "junk", "reason": "versions: longer than 65536 bytes"}]
    for app, name in ((a, "a"), (b, "b")):
        entry = node(data, name)
        assert entry["checkpoint"] == beats[name].checkpoint  # the note, byte for byte
        assert entry["audit_key"] == vkey(app) and entry["versions"] == {"auth/hosts": 1}
        assert entry["heartbeat"].endswith("Z")
    assert node(data, "quiet")["checkpoint"] is None

    # the node without a checkpoint fails; the others verify, their keys not pinned
    code, said, _ = cli("audit", "verify-fleet", str(out))
    assert code == 1
    assert "FAIL  quiet: no signed checkpoint" in said
    assert said.count("key not pinned") == 2 and "OK    a: checkpoint " in said
    assert "FAIL  mismatch: does not verify with the key in the bundle" in said
    assert "FAILED: 2 of 4 node(s)" in said

    def only_ab(d: dict[str, Any]) -> None:
        d["nodes"] = [n for n in d["nodes"] if n["node"] in ("a", "b")]

    two = edit(out, only_ab)
    code, said, _ = cli("audit", "verify-fleet", str(two))
    assert code == 0 and "OK: 2 node(s) verified" in said
    assert "WARNING: 2 node key(s) not pinned" in said and "independent source" in said
    code, said, _ = cli("audit", "verify-fleet", str(two), "--strict")
    assert code == 1 and "FAIL  a:" in said

    pins = fleet.tmp / "pinned-keys"
    pins.write_text(f"# from the operator's registration\na {vkey(a)}\nb {vkey(b)}\n")
    code, said, _ = cli("audit", "verify-fleet", str(two), "--keys", str(pins), "--strict")
    assert code == 0, said
    assert said.count("key pinned") == 2 and "not pinned" not in said
    code, said, _ = cli("audit", "verify-fleet", str(two), "--key", vkey(a), "--key", vkey(b))
    assert code == 0 and said.count("key pinned") == 2

    # a checkpoint edited after export
    def grow(d: dict[str, Any]) -> None:
        cp = node(d, "a")["checkpoint"]
        origin, size, rest = cp.split("\n", 2)
        node(d, "a")["checkpoint"] = f"{origin}\n{int(size) + 1}\n{rest}"

    code, said, _ = cli("audit", "verify-fleet", str(edit(two, grow)))
    assert code == 1 and "FAIL  a: does not verify with the key in the bundle" in said
    assert "OK    b:" in said

    # whoever writes to Redis re-signs b's checkpoint with a key of its own, under b's name
    signer = note.Signer.from_skey(note.generate_key(vkey(b).split("+")[0])[0])

    def forge(d: dict[str, Any]) -> None:
        cp = node(d, "b")["checkpoint"]
        node(d, "b")["checkpoint"] = note.sign_note(cp[: cp.rfind("\n\n") + 1], signer)
        node(d, "b")["audit_key"] = signer.verifier.vkey

    forged = edit(two, forge)
    code, said, _ = cli("audit", "verify-fleet", str(forged))
    assert code == 0 and "OK    b:" in said and "key not pinned" in said  # why keys are pinned
    code, said, _ = cli("audit", "verify-fleet", str(forged), "--keys", str(pins))
    assert code == 1 and "FAIL  b: does not verify with the pinned key" in said

    swapped = fleet.tmp / "swapped-keys"
    swapped.write_text(f"a {vkey(b)}\nb {vkey(a)}\n")
    code, said, _ = cli("audit", "verify-fleet", str(two), "--keys", str(swapped))
    assert code == 1 and said.count("does not verify with the pinned key") == 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "cannot read the bundle"),
        ('{"format": "blockd-audit-bundle/1", "nodes": []}', "not a fleet audit bundle"),
        ('{"format": "blockd-fleet-audit/1", "nodes": {}}', "'nodes' is not a list"),
        ('{"format": "blockd-fleet-audit/1", "nodes": []}', "lists no node"),
        ('{"format": "blockd-fleet-audit/1", "nodes": [], "nodes": []}', "duplicate key"),
        ('{"format": "blockd-fleet-audit/1", "nodes": [5]}', "malformed entry"),
        (
            '{"format": "blockd-fleet-audit/1", "nodes": [{"node": "a", "checkpoint": "x"},'
            '{"node": "a", "checkpoint": null}]}',
            "listed twice",
        ),
        (
            '{"format": "blockd-fleet-audit/1", "nodes": [{"node": "a", "checkpoint": "x\\n",'
            '"audit_key": "nope"}]}',
            "not a vkey",
        ),
        (
            '{"format": "blockd-fleet-audit/1", "nodes": [{"node": "a", "checkpoint": "x\\n"}]}',
            "no key in the bundle",
        ),
    ],
)
def test_a_malformed_fleet_bundle_fails(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(text)
    code, said, _ = cli("audit", "verify-fleet", str(path))
    assert code == 1 and "FAIL" in said and needle in said, said


def test_a_pinned_key_that_is_not_a_key_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "fleet.json").write_text('{"format": "blockd-fleet-audit/1", "nodes": []}')
    (tmp_path / "keys").write_text("a b c\n")
    assert cli("audit", "verify-fleet", str(tmp_path / "fleet.json"), "--key", "x")[0] == 2
    code, _, err = cli(
        "audit", "verify-fleet", str(tmp_path / "fleet.json"), "--keys", str(tmp_path / "keys")
    )
    assert code == 2 and "line 1: give VKEY or NODE VKEY" in err


async def test_junk_heartbeats_in_redis_are_skipped_with_a_warning(fleet: Fleet) -> None:
    keys, r = Keys("test"), redis(fleet.redis)
    now = time.time()
    try:
        await status.beat(r, keys, status.Beat("good", now, {"auth/hosts": 1}))
        junk: dict[str, dict[str, bytes | str]] = {
            "huge-checkpoint": {"time": "1", "checkpoint": "x" * 1_000_000},
            "binary": {"time": "1", "checkpoint": b"\xff\xfe\x00"},
            "no-time": {"versions": "{}"},
            "nan": {"time": "nan"},
            "deep": {"time": "1", "versions": "[" * 20_000},
            "bad id!": {"time": "1"},
        }
        for name, fields in junk.items():
            await r.hset(keys.node(name), mapping=fields)  # type: ignore[arg-type]
            await r.zadd(keys.nodes, {name: now})
        await r.zadd(keys.nodes, {b"\xff\xfe": now})  # not UTF-8
        await r.zadd(keys.nodes, {"gone": now})  # no hash at all: expired, not junk
        survey = await status.read(r, keys, now)
    finally:
        await r.aclose()
    assert [n.beat.node for n in survey.nodes] == ["good"]
    assert {n for n, _ in survey.skipped} == set(junk) | {"\ufffd\ufffd"}
    conf = fleet.tmp / "blockd.toml"
    conf.write_text(fleet.config("reader"))
    code, out, err = await asyncio.to_thread(cli, "fleet", "status", "-c", str(conf), "--json")
    assert code == 0, err  # the one heartbeat that is one is live
    assert "heartbeat of node 'huge-checkpoint' skipped: checkpoint: longer than 4096" in err
    assert "heartbeat of node 'binary' skipped: checkpoint: not UTF-8" in err
    assert len(json.loads(out)["skipped"]) == len(junk) + 1


def entries(app: App) -> list[dict[str, Any]]:
    assert app.audit is not None
    log = app.audit.log
    return [json.loads(data) for _, data in log.entries(0, log.head().size)]


async def test_a_follower_logs_what_it_applies_from_redis_in_its_own_audit_log(
    fleet: Fleet,
) -> None:
    async with fleet.node("a") as a, fleet.node("b") as b:
        await until(lambda: one_syncer(a, b), "one syncer")
        await until(lambda: version(a) == 1 and version(b) == 1, "both enforce v1")
        leader = syncer(a, b)
        follower = b if leader is a else a
        fleet.publish(2, ["one.example", "two.example"])
        await leader.feeds.sync_all()
        await until(lambda: version(follower) == 2, "the follower enforces v2 from Redis")
        assert not fetched(follower)
        assert follower.audit is not None
        await follower.audit.flush(checkpoint=True)
        logged = entries(follower)
        [accepted] = [e for e in logged if e["type"] == "feed-accepted" and e["version"] == 2]
        assert (accepted["authority"], accepted["list"]) == ("auth", "hosts")
        activations = [e for e in logged if e["type"] == "policy-activated"]
        assert activations[-1]["versions"] == {"auth/hosts": 2}
        assert logged.index(accepted) < logged.index(activations[-1])
        # and the checkpoint the follower's heartbeat carries covers those entries
        beats = await published(fleet, follower)
        name = follower.config.fleet.node  # type: ignore[union-attr]
        checkpoint = beats[name].checkpoint
        assert checkpoint is not None
        text, _ = note.open_note(checkpoint, [follower.audit.log.signer.verifier])
        assert note.Checkpoint.parse(text).size >= len(logged)
