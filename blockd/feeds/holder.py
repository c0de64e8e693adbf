"""The policy holder: accepted list versions, the snapshot in force, and the one apply seam.

The holder owns what is enforced: the stored versions (last-known-good), their indexes, and
the `PolicySnapshot` it compiles and swaps in whole. Every way a list version arrives goes
through `apply` (a fetch by `FeedSync`, a fleet node's copy from Redis, an RPZ transfer):
verify the exact envelope bytes against the trust policy in force, check the body, prepare
(`accept`), store, quarantine a change too large, else activate. Operator actions (approve,
rollback) and trust changes (`reverify`) act here too. Any failure keeps the previous
version in force and is an event with its reason.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from blockd.config import Config, ListConfig
from blockd.events import (
    Event,
    EventBus,
    FeedRejected,
    FeedRevoked,
    FeedUnchanged,
    GuardIntervention,
    PolicyActivated,
)
from blockd.feeds import accept
from blockd.feeds.model import TrustPolicy
from blockd.feeds.store import HISTORY, ListState, ListStatus, ListStore
from blockd.feeds.trust import load_trust
from blockd.feeds.verify import Rejected, VerifiedList, check_body
from blockd.policy import entries as entry_rules
from blockd.policy.compile import IndexedList, compile_snapshot
from blockd.policy.guards import NeverBlock
from blockd.policy.mapped import SnapshotFileError, open_mapped, publish
from blockd.policy.snapshot import PolicySnapshot

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
Outcome = Literal["accepted", "unchanged", "quarantined", "rejected"]


def release_memory() -> None:
    """Return the heap freed by compiling to the OS (glibc), so RSS shows what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        return


class PolicyHolder:
    """Owns the stored lists and the current PolicySnapshot; `apply` is the way in."""

    def __init__(self, config: Config, bus: EventBus, clock: Clock) -> None:
        """Prepare; call `load` before reading `snapshot`."""
        self.config = config
        self.bus = bus
        self.clock = clock
        self.store = ListStore(config.state.dir)
        self.never_block = NeverBlock([*config.guards.never_block, *accept.feed_hosts(config)])
        self.trust: TrustPolicy | None = None
        self.snapshot: PolicySnapshot = compile_snapshot([])
        self.lock = asyncio.Lock()  # one change at a time: syncs, applies, operator actions
        self._indexed: dict[str, IndexedList] = {}
        self._ref_key = b""

    # -- start-up and configuration ---------------------------------------------------

    def load(self) -> PolicySnapshot:
        """Load trust and every stored active list; build the first snapshot."""
        self.store.secure()
        self.trust = load_trust(self.config.trust.pinned, self.store.trust_updates(), self.clock())
        self._ref_key = self.store.ref_key()
        for cfg in self.config.lists:
            state = self.store.state(cfg.authority, cfg.list)
            if state.active is None:
                continue
            try:
                indexed = self._load_stored(cfg, state.active)
            except Rejected:
                # The trust policy changed while blockd was stopped: revoked, as at run time.
                self._revoke(cfg, state.active, self.trusted())
                state.active = None
                self.store.save_state(cfg.authority, cfg.list, state)
                continue
            except (OSError, entry_rules.EntriesError) as e:
                log.error("%s: stored version %s unusable: %s", cfg.ref, state.active, e)
                continue
            self._indexed[cfg.ref] = indexed
        return self.activate()

    async def reconfigure(self, config: Config) -> PolicySnapshot:
        """Apply a new configuration: trust file, guard-rails, the set and order of lists.

        The policy is rebuilt from the verified state on disk (so never-block changes apply
        to lists already accepted), in a worker thread while DNS keeps answering, and swapped
        in whole. When the new configuration cannot be used (bad never-block name, unusable
        trust file) it raises and the running one stays.
        """
        fresh = PolicyHolder(config, EventBus(), self.clock)
        recorded: list[Event] = []
        fresh.bus.subscribe(Event, recorded.append)
        async with self.lock:
            await asyncio.to_thread(fresh.load)
            self.config, self.never_block, self.store = config, fresh.never_block, fresh.store
            self.trust, self._indexed, self._ref_key = fresh.trust, fresh._indexed, fresh._ref_key
            for event in recorded:
                if not isinstance(event, PolicyActivated):
                    self.bus.publish(event)
            return self._swap(fresh.snapshot, self._ordered())

    def trusted(self) -> TrustPolicy:
        """Return the trust policy in force."""
        if self.trust is None:
            raise RuntimeError("PolicyHolder.load() must run first")
        return self.trust

    def list_config(self, ref: str) -> ListConfig:
        """Return the configuration of list `ref` ('authority/list'); KeyError if none."""
        for cfg in self.config.lists:
            if cfg.ref == ref:
                return cfg
        known = ", ".join(c.ref for c in self.config.lists) or "none"
        raise KeyError(f"no configured list {ref!r} (configured: {known})")

    # -- the apply seam ---------------------------------------------------------------

    async def apply(self, ref: str, envelope: bytes, body: bytes | None) -> Outcome:
        """Apply a signed list version from any source; return the outcome.

        The exact envelope bytes are verified against the trust policy in force (whoever
        delivered them is not trusted), the body against the digest it signs; then as for
        a fetched version: a version not newer than the highest accepted is unchanged, a
        change too large is quarantined, anything else is activated. Every outcome is an
        event; a refusal keeps the previous version in force.
        """
        cfg = self.list_config(ref)
        async with self.lock:
            state = self.store.state(cfg.authority, cfg.list)
            try:
                verified = self.verify(cfg, envelope, state)
                if verified is None:
                    self.bus.publish(FeedUnchanged(cfg.authority, cfg.list, state.active))
                    return "unchanged"
                spec = verified.payload.body
                if spec is None:
                    body = None  # a body the envelope does not sign is not kept
                elif body is None:
                    raise verified.reject("digest-mismatch", f"body {spec.name} is missing")
                else:
                    check_body(verified, body)
                outcome = await self.accept(cfg, state, verified, envelope, body)
            except Exception as e:
                self.rejected(cfg, state, e)
                outcome = "rejected"
            self.store.save_state(cfg.authority, cfg.list, state)
            return outcome

    def verify(self, cfg: ListConfig, envelope: bytes, state: ListState) -> VerifiedList | None:
        """Verify a new envelope for cfg; None when it is not newer than what state holds.

        Nothing enforced (never, or revoked): the same version re-signed is welcome. After
        an operator rollback, versions at or below the one rolled back are held back.
        """
        verified = accept.verify(
            cfg,
            envelope,
            self.trusted(),
            self.clock(),
            self.config.guards,
            last=state.highest,
            freshness=True,
            equal_is_new=state.active is None,
        )
        if verified is None or (
            state.held_at_or_below is not None
            and verified.payload.version <= state.held_at_or_below
        ):
            return None
        return verified

    async def accept(
        self,
        cfg: ListConfig,
        state: ListState,
        verified: VerifiedList,
        envelope: bytes,
        body: bytes | None,
    ) -> Outcome:
        """Prepare, store and activate (or quarantine) a verified version; hold the lock."""
        prepared = await asyncio.to_thread(accept.prepare, cfg, verified, body, self.never_block)
        if prepared.guard is not None:
            self.bus.publish(prepared.guard)
        version = verified.payload.version
        self.store.save_version(cfg.authority, cfg.list, version, envelope, body)
        envelope_path, body_path = self.store.version_paths(cfg.authority, cfg.list, version)
        prepared = accept.stored_at(
            prepared, str(envelope_path), str(body_path) if body is not None else None
        )
        state.highest = version
        held = accept.quarantine(self._indexed.get(cfg.ref), prepared.indexed, self.config.guards)
        if held is not None:
            state.quarantined = version
            self.bus.publish(held)
            self.store.prune(cfg.authority, cfg.list, state)
            return "quarantined"
        self.bus.publish(prepared.accepted)
        await self._make_active(cfg, state, prepared.indexed, version)
        return "accepted"

    def rejected(self, cfg: ListConfig, state: ListState, e: Exception) -> None:
        """Record and publish a refusal (an unforeseen error is one with reason internal)."""
        refusal = e if isinstance(e, Rejected) else accept.internal(cfg, e)
        state.last_error, state.last_error_reason = str(refusal), refusal.reason
        self.bus.publish(
            FeedRejected(
                cfg.authority,
                cfg.list,
                refusal.version,
                refusal.envelope_sha256,
                refusal.keyids,
                refusal.reason,
                str(refusal),
                refusal.payload_sha256,
            )
        )

    # -- operator actions -------------------------------------------------------------

    async def approve(self, ref: str, version: int) -> None:
        """Apply a quarantined version the operator has reviewed."""
        cfg = self.list_config(ref)
        async with self.lock:
            state = self.store.state(cfg.authority, cfg.list)
            if state.quarantined != version:
                raise KeyError(
                    f"{ref}: version {version} is not quarantined "
                    f"(quarantined: {state.quarantined})"
                )
            indexed = self._load_stored(cfg, version)
            self.bus.publish(
                GuardIntervention(
                    "approve",
                    cfg.authority,
                    cfg.list,
                    version,
                    "operator approved a quarantined update",
                )
            )
            await self._make_active(cfg, state, indexed, version)

    async def rollback(self, ref: str) -> int:
        """Return one list to its previous accepted version and hold newer ones back."""
        cfg = self.list_config(ref)
        async with self.lock:
            state = self.store.state(cfg.authority, cfg.list)
            if not state.previous or state.active is None:
                raise KeyError(f"{ref}: no previous version to roll back to")
            target, undone = state.previous[-1], state.active
            indexed = self._load_stored(cfg, target)
            state.previous = state.previous[:-1]
            state.held_at_or_below = max(undone, state.held_at_or_below or 0)
            state.active = None
            self.bus.publish(
                GuardIntervention(
                    "rollback",
                    cfg.authority,
                    cfg.list,
                    target,
                    f"operator rolled back from version {undone}",
                )
            )
            await self._make_active(cfg, state, indexed, target)
            return target

    # -- trust changes ----------------------------------------------------------------

    async def reverify(self) -> None:
        """Verify every stored version (enforced, rollback history, quarantined) again.

        A version the trust policy in force no longer authorises (its keys rotated out, its
        authority or list withdrawn, its format or size no longer allowed) is dropped: an
        enforced one stops being enforced at once. Each drop is a FeedRevoked event. The
        anti-rollback mark stays, so only the same or a newer version, signed under the
        new policy, is enforced again; the next sync fetches it unconditionally.
        """
        trust = self.trusted()
        async with self.lock:
            dropped_active = False
            for cfg in self.config.lists:
                state = self.store.state(cfg.authority, cfg.list)
                if state.active is not None and self._revoke(cfg, state.active, trust):
                    state.active = None
                    self._indexed.pop(cfg.ref, None)
                    dropped_active = True
                state.previous = [v for v in state.previous if not self._revoke(cfg, v, trust)]
                if state.quarantined is not None and self._revoke(cfg, state.quarantined, trust):
                    state.quarantined = None
                self.store.save_state(cfg.authority, cfg.list, state)
                self.store.prune(cfg.authority, cfg.list, state)
            if dropped_active:
                await self._activate_async()

    def _revoke(self, cfg: ListConfig, version: int, trust: TrustPolicy) -> FeedRevoked | None:
        """Check one stored version under trust; publish and return its revocation, if any."""
        try:
            envelope, _ = self.store.load_version(cfg.authority, cfg.list, version)
            self._verify_stored(cfg, envelope)
        except OSError:
            return None  # missing files are the store's concern, reported when used
        except Rejected as e:
            enforced = self._indexed.get(cfg.ref)
            entries = (
                enforced.info.entries
                if enforced is not None and enforced.info.source.version == version
                else 0
            )
            effect = (
                f"its {entries} entries are no longer enforced until {cfg.authority} "
                "publishes a version signed under the new policy"
                if entries
                else "dropped from the versions kept for rollback and approval"
            )
            event = FeedRevoked(
                cfg.authority,
                cfg.list,
                version,
                e.envelope_sha256,
                e.payload_sha256,
                trust.version,
                e.reason,
                f"{cfg.ref} v{version} no longer verifies under trust policy "
                f"v{trust.version} ({e.reason}); {effect}",
                entries,
            )
            self.bus.publish(event)  # blockd.failures logs it
            return event
        return None

    # -- status -----------------------------------------------------------------------

    def status(self) -> list[ListStatus]:
        """Return the status of every configured list."""
        infos = {i.source.ref: i for i in self.snapshot.lists}
        out = []
        for cfg in self.config.lists:
            info = infos.get(cfg.ref)
            out.append(
                ListStatus(
                    cfg.ref,
                    info.source.version if info else None,
                    info.entries if info else 0,
                    info.issued_at if info else None,
                    info.expires if info else None,
                    self.store.state(cfg.authority, cfg.list),
                )
            )
        return out

    # -- pieces -----------------------------------------------------------------------

    def _verify_stored(self, cfg: ListConfig, envelope: bytes) -> VerifiedList:
        """Verify a stored envelope again (expiry aside: it was fresh when accepted)."""
        verified = accept.verify(
            cfg,
            envelope,
            self.trusted(),
            self.clock(),
            self.config.guards,
            last=None,
            freshness=False,
        )
        assert verified is not None
        return verified

    def _load_stored(self, cfg: ListConfig, version: int) -> IndexedList:
        """Verify and index a stored version again (it is not trusted for being on disk)."""
        envelope, body = self.store.load_version(cfg.authority, cfg.list, version)
        prepared = accept.prepare(cfg, self._verify_stored(cfg, envelope), body, self.never_block)
        if prepared.guard is not None:
            self.bus.publish(prepared.guard)
        return prepared.indexed

    async def _make_active(
        self, cfg: ListConfig, state: ListState, indexed: IndexedList, version: int
    ) -> None:
        if state.active is not None and state.active != version:
            state.previous = [*state.previous, state.active][-HISTORY:]
        state.active = version
        if state.quarantined is not None and state.quarantined <= version:
            state.quarantined = None
        self.store.save_state(cfg.authority, cfg.list, state)
        self.store.prune(cfg.authority, cfg.list, state)
        self._indexed[cfg.ref] = indexed
        await self._activate_async()

    def _ordered(self) -> list[IndexedList]:
        return [self._indexed[c.ref] for c in self.config.lists if c.ref in self._indexed]

    def activate(self) -> PolicySnapshot:
        """Compile and swap in a new snapshot, here and now (start-up, tests)."""
        ordered = self._ordered()
        return self._swap(self._compile(ordered), ordered)

    async def _activate_async(self) -> PolicySnapshot:
        """Compile in a worker thread, so DNS keeps answering, then swap in the loop."""
        ordered = self._ordered()
        return self._swap(await asyncio.to_thread(self._compile, ordered), ordered)

    def _publish(self, snapshot: PolicySnapshot) -> PolicySnapshot:
        """Write snapshot to <state>/policy/ for workers to map; return it mapped.

        This process then answers from the same pages as the workers (one copy of the policy
        in memory, not two). Enforcement here does not depend on it: on a failure it is
        logged and the compiled snapshot stays in force in this process.
        """
        try:
            return open_mapped(publish(snapshot, self.config.state.dir / "policy"))
        except (OSError, SnapshotFileError) as e:
            log.error("policy snapshot %s not published: %s", snapshot.generation, e)
            return snapshot

    def _compile(self, ordered: list[IndexedList]) -> PolicySnapshot:
        snapshot = compile_snapshot(
            ordered, ref_key=self._ref_key, now=self.clock(), never_block=self.never_block
        )
        if self.config.publishes_policy():
            snapshot = self._publish(snapshot)  # here: async activations write in the thread
        release_memory()
        return snapshot

    def _swap(self, snapshot: PolicySnapshot, ordered: list[IndexedList]) -> PolicySnapshot:
        self.snapshot = snapshot  # one reference assignment: readers never see half
        self.bus.publish(
            PolicyActivated(
                self.snapshot.generation,
                dict(self.snapshot.versions),
                sum(x.info.entries for x in ordered),
            )
        )
        return self.snapshot
