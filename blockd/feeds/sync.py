"""Keep the enforced policy in step with the authorities' signed lists.

For each configured list: fetch (conditional), verify against the trust policy, fetch and
check the body, validate entries, apply guard-rails, store as last-known-good, index, and
swap in a new PolicySnapshot. Any failure keeps the previous version in force and is an
event with its reason. On start, `load` rebuilds the policy from the state directory,
verifying every stored envelope again against the pinned trust policy, before anything is
fetched.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from blockd.config import Config, ListConfig
from blockd.events import (
    Event,
    EventBus,
    FeedAccepted,
    FeedRejected,
    FeedRevoked,
    FeedUnchanged,
    GuardIntervention,
    PolicyActivated,
)
from blockd.feeds.fetch import Fetcher, FetchError, FetchPolicy, resolve_beside
from blockd.feeds.model import ListPayload, TrustPolicy
from blockd.feeds.store import HISTORY, ListState, ListStore
from blockd.feeds.trust import fetch_trust_updates, load_trust
from blockd.feeds.verify import (
    Rejected,
    VerifiedList,
    check_body,
    verify_list,
)
from blockd.policy import entries as entry_rules
from blockd.policy.compile import IndexedList, compile_snapshot, index_list
from blockd.policy.guards import Change, NeverBlock, change
from blockd.policy.snapshot import ListInfo, PolicySnapshot
from blockd.policy.verdict import ListSource

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class ListStatus:
    """What an operator sees for one configured list."""

    ref: str
    version: int | None
    entries: int
    issued_at: datetime | None
    expires: datetime | None
    state: ListState

    def fresh(self, now: datetime) -> bool:
        """Say whether the enforced version has not expired."""
        return self.expires is not None and now < self.expires


def release_memory() -> None:
    """Return the heap freed by compiling to the OS (glibc), so RSS shows what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        return


def feed_hosts(config: Config) -> list[str]:
    """Return the names blockd fetches lists and trust from: no list may ever block them.

    A list that blocked its own source (or the trust mirror) would freeze enforcement:
    neither a fix nor a revocation could reach this resolver any more.
    """
    sources = [config.trust.updates, *(c.source for c in config.lists)]
    hosts = {urlsplit(u).hostname for u in sources if u}
    return sorted(h for h in hosts if h and not _is_address(h))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _internal(cfg: ListConfig, e: Exception) -> Rejected:
    """Turn an unforeseen error into a rejection (logged with its traceback: it is a bug)."""
    log.error("%s: sync failed unexpectedly", cfg.ref, exc_info=e)
    return Rejected(
        "internal",
        f"{cfg.ref}: unexpected {type(e).__name__}: {e}"[:500].replace("\n", " "),
        authority=cfg.authority,
        list_id=cfg.list,
    )


def _change(old: IndexedList, new: IndexedList) -> Change:
    """Compare two versions over every key kind: hosts, routes and URLs."""
    return change([old.hosts, old.routes, old.urls], [new.hosts, new.routes, new.urls])


class FeedSync:
    """Owns the trust policy, the stored lists and the current PolicySnapshot."""

    def __init__(
        self,
        config: Config,
        bus: EventBus,
        *,
        fetcher: Fetcher | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        """Prepare; call `load` before reading `snapshot`."""
        self.config = config
        self.bus = bus
        self.store = ListStore(config.state.dir)
        self.fetcher = fetcher or Fetcher()
        self.clock = clock
        self.never_block = NeverBlock([*config.guards.never_block, *feed_hosts(config)])
        self._rng = rng or random.Random()
        self._indexed: dict[str, IndexedList] = {}
        self._ref_key = b""
        self.trust: TrustPolicy | None = None
        self.snapshot: PolicySnapshot = compile_snapshot([])
        self._lock = asyncio.Lock()
        self._trust_lock = asyncio.Lock()
        self._trust_refreshes = 0

    # -- start-up ---------------------------------------------------------------------

    def load(self) -> PolicySnapshot:
        """Load trust and every stored active list; build the first snapshot."""
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
                self._revoke(cfg, state.active, self._trust())
                state.active = None
                self.store.save_state(cfg.authority, cfg.list, state)
                continue
            except (OSError, entry_rules.EntriesError) as e:
                log.error("%s: stored version %s unusable: %s", cfg.ref, state.active, e)
                continue
            self._indexed[cfg.ref] = indexed
        return self._activate()

    async def reconfigure(self, config: Config) -> PolicySnapshot:
        """Apply a new configuration: trust file, guard-rails, the set and order of lists.

        The policy is rebuilt from the verified state on disk (so never-block changes apply
        to lists already accepted), in a worker thread while DNS keeps answering, and swapped
        in whole. When the new configuration cannot be used (bad never-block name, unusable
        trust file) it raises and the running one stays.
        """
        fresh = FeedSync(config, EventBus(), fetcher=self.fetcher, clock=self.clock)
        recorded: list[Event] = []
        fresh.bus.subscribe(Event, recorded.append)
        async with self._lock:
            await asyncio.to_thread(fresh.load)
            self.config, self.never_block, self.store = config, fresh.never_block, fresh.store
            self.trust, self._indexed, self._ref_key = fresh.trust, fresh._indexed, fresh._ref_key
            for event in recorded:
                if not isinstance(event, PolicyActivated):
                    self.bus.publish(event)
            return self._swap(fresh.snapshot, self._ordered())

    def _load_stored(self, cfg: ListConfig, version: int) -> IndexedList:
        """Verify and index a stored version again (it is not trusted for being on disk)."""
        envelope, body = self.store.load_version(cfg.authority, cfg.list, version)
        verified = self._verify(cfg, envelope, None, freshness=False)
        assert verified is not None
        indexed, _, guard = self._prepare(cfg, verified, body)
        if guard is not None:
            self.bus.publish(guard)
        return indexed

    # -- one sync ----------------------------------------------------------------------

    async def sync_all(self) -> None:
        """Sync every configured list once (trust refreshed once, first)."""
        await self.sync_trust()
        for cfg in self.config.lists:
            await self.sync_list(cfg, refresh_trust=False)

    async def sync_list(self, cfg: ListConfig, *, refresh_trust: bool = True) -> str:
        """Sync one list; return the outcome: accepted, unchanged, quarantined or rejected.

        Trust is refreshed first (TUF refreshes the root before every update), so a list
        is never judged by keys the regulator has already rotated out. Whatever happens,
        the outcome is an event: an unforeseen error is a rejection with reason `internal`.
        """
        if refresh_trust:
            await self.sync_trust()
        async with self._lock:
            state = self.store.state(cfg.authority, cfg.list)
            state.last_attempt = time.time()
            try:
                outcome = await self._sync(cfg, state)
            except Exception as e:
                rejected = e if isinstance(e, Rejected) else _internal(cfg, e)
                state.last_error, state.last_error_reason = str(rejected), rejected.reason
                self.bus.publish(
                    FeedRejected(
                        cfg.authority,
                        cfg.list,
                        rejected.version,
                        rejected.envelope_sha256,
                        rejected.keyids,
                        rejected.reason,
                        str(rejected),
                        rejected.payload_sha256,
                    )
                )
                outcome = "rejected"
            else:
                state.last_success = time.time()
                state.last_error = state.last_error_reason = None
            self.store.save_state(cfg.authority, cfg.list, state)
            return outcome

    async def _sync(self, cfg: ListConfig, state: ListState) -> str:
        trust = self._trust()
        authority = trust.authority(cfg.authority)
        cap = authority.max_bytes if authority else 1 << 20
        deadline = time.monotonic() + cfg.deadline
        policy = self._fetch_policy(cfg, cap)
        result = await self._fetch(cfg, cfg.source, policy, state)
        if result is None:
            self.bus.publish(FeedUnchanged(cfg.authority, cfg.list, state.active))
            return "unchanged"
        envelope, etag, last_modified = result
        # Nothing enforced (never, or revoked): the same version re-signed is welcome.
        verified = self._verify(
            cfg, envelope, state.highest, freshness=True, equal_is_new=state.active is None
        )
        if verified is None or (
            state.held_at_or_below is not None
            and verified.payload.version <= state.held_at_or_below
        ):
            state.etag, state.last_modified = etag, last_modified
            self.bus.publish(FeedUnchanged(cfg.authority, cfg.list, state.active))
            return "unchanged"
        body = None
        if verified.payload.body is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise verified.reject("deadline", "no time left to fetch the body")
            body_url = resolve_beside(cfg.source, verified.payload.body.name)
            body_policy = self._fetch_policy(cfg, verified.payload.body.size, deadline=left)
            fetched = await self._fetch(cfg, body_url, body_policy, None)
            if fetched is None:  # unconditional GET: only a misbehaving server says 304
                raise verified.reject("fetch", f"no body at {body_url}")
            body = fetched[0]
            check_body(verified, body)
        indexed, accepted, guard = await asyncio.to_thread(self._prepare, cfg, verified, body)
        if guard is not None:
            self.bus.publish(guard)
        version = verified.payload.version
        self.store.save_version(cfg.authority, cfg.list, version, envelope, body)
        state.etag, state.last_modified = etag, last_modified
        state.highest = version
        previous = self._indexed.get(cfg.ref)
        if previous is not None and self._too_big(previous, indexed):
            delta = _change(previous, indexed)
            state.quarantined = version
            self.bus.publish(
                GuardIntervention(
                    "quarantine",
                    cfg.authority,
                    cfg.list,
                    version,
                    f"update adds {delta.added} and removes {delta.removed} of "
                    f"{delta.before} entries ({delta.fraction:.0%}); approval needed",
                    delta.added + delta.removed,
                )
            )
            self.store.prune(cfg.authority, cfg.list, state)
            return "quarantined"
        self.bus.publish(accepted)
        await self._make_active(cfg, state, indexed, version)
        return "accepted"

    def _too_big(self, old: IndexedList, new: IndexedList) -> bool:
        delta = _change(old, new)
        guards = self.config.guards
        return (
            delta.added + delta.removed >= guards.min_change_entries
            and delta.fraction > guards.max_change_fraction
        )

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

    # -- pieces ------------------------------------------------------------------------

    def _trust(self) -> TrustPolicy:
        if self.trust is None:
            raise RuntimeError("FeedSync.load() must run first")
        return self.trust

    def _fetch_policy(
        self, cfg: ListConfig, cap: int, deadline: float | None = None
    ) -> FetchPolicy:
        return FetchPolicy(
            max_bytes=cap,
            deadline=deadline if deadline is not None else cfg.deadline,
            attempt_timeout=min(30.0, cfg.deadline),
            ca_file=str(cfg.ca_file) if cfg.ca_file else None,
        )

    async def _fetch(
        self, cfg: ListConfig, url: str, policy: FetchPolicy, state: ListState | None
    ) -> tuple[bytes, str | None, str | None] | None:
        try:
            res = await self.fetcher.fetch(
                url,
                policy,
                etag=state.etag if state and state.active is not None else None,
                last_modified=state.last_modified if state and state.active is not None else None,
            )
        except FetchError as e:
            reason = {"too-large": "too-large", "deadline": "deadline"}.get(e.reason, "fetch")
            raise Rejected(
                reason, f"{cfg.ref}: {e}", authority=cfg.authority, list_id=cfg.list
            ) from None
        if res.status == "not-modified" or res.data is None:
            return None
        return res.data, res.etag, res.last_modified

    def _verify(
        self,
        cfg: ListConfig,
        envelope: bytes,
        last: int | None,
        *,
        freshness: bool,
        equal_is_new: bool = False,
    ) -> VerifiedList | None:
        return verify_list(
            envelope,
            self._trust(),
            self.clock(),
            expect=(cfg.authority, cfg.list),
            last_version=last,
            skew=timedelta(seconds=self.config.guards.clock_skew),
            freshness=freshness,
            equal_is_new=equal_is_new,
        )

    def _prepare(
        self, cfg: ListConfig, v: VerifiedList, body: bytes | None
    ) -> tuple[IndexedList, FeedAccepted, GuardIntervention | None]:
        """Validate entries, apply never-block, and index: pure, so it may run in a worker
        thread while DNS keeps answering. Returns the events for the caller to publish."""
        p: ListPayload = v.payload
        try:
            lines = (
                p.entries
                if p.entries is not None
                else entry_rules.split_body(body or b"", p.entry_count)
            )
        except entry_rules.EntriesError as e:
            raise v.reject("entries", str(e)) from None
        entries = entry_rules.build(p.format, lines, p)
        dropped = self.never_block.apply(entries)
        guard = None
        if dropped:
            guard = GuardIntervention(
                "never-block",
                p.authority,
                p.list,
                p.version,
                f"{dropped} entries touch never-block names",
                dropped,
            )
        info = ListInfo(
            ListSource(p.authority, p.list, p.version, cfg.action),
            p.issued_at,
            p.expires,
            entries.count,
            tuple(entries.probes),
        )
        accepted = FeedAccepted(
            p.authority,
            p.list,
            p.version,
            v.envelope_sha256,
            v.keyids,
            entries.count,
            dict(entries.rejected),
            v.payload_sha256,
        )
        return index_list(info, entries), accepted, guard

    def _ordered(self) -> list[IndexedList]:
        return [self._indexed[c.ref] for c in self.config.lists if c.ref in self._indexed]

    def _activate(self) -> PolicySnapshot:
        """Compile and swap in a new snapshot, here and now (start-up, tests)."""
        ordered = self._ordered()
        return self._swap(self._compile(ordered), ordered)

    async def _activate_async(self) -> PolicySnapshot:
        """Compile in a worker thread, so DNS keeps answering, then swap in the loop."""
        ordered = self._ordered()
        return self._swap(await asyncio.to_thread(self._compile, ordered), ordered)

    def _compile(self, ordered: list[IndexedList]) -> PolicySnapshot:
        snapshot = compile_snapshot(
            ordered, ref_key=self._ref_key, now=self.clock(), vetoes=self.never_block.vetoes
        )
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

    # -- trust updates -------------------------------------------------------------------

    async def sync_trust(self) -> bool:
        """Fetch newer trust policy versions, one step at a time; return whether it changed.

        On a change every stored list version is verified again under the new policy and
        what fails is dropped (`_reverify`). Callers that arrive while a refresh runs share
        its result rather than fetching again.
        """
        base = self.config.trust.updates
        if base is None:
            return False
        seen = self._trust_refreshes
        async with self._trust_lock:
            if self._trust_refreshes != seen:
                return False
            before = self._trust()
            try:
                self.trust = await fetch_trust_updates(
                    base, before, self.fetcher, self.store, self.bus, self.clock()
                )
            finally:
                self._trust_refreshes += 1
        if self.trust is before:
            return False
        async with self._lock:
            await self._reverify()
        return True

    async def _reverify(self) -> None:
        """Verify every stored version (enforced, rollback history, quarantined) again.

        A version the trust policy in force no longer authorises (its keys rotated out, its
        authority or list withdrawn, its format or size no longer allowed) is dropped: an
        enforced one stops being enforced at once. Each drop is a FeedRevoked event. The
        anti-rollback mark stays, so only the same or a newer version, signed under the
        new policy, is enforced again; the next sync fetches it unconditionally.
        """
        trust = self._trust()
        dropped_active = False
        for cfg in self.config.lists:
            state = self.store.state(cfg.authority, cfg.list)
            if state.active is not None and self._revoke(cfg, state.active, trust) is not None:
                state.active = None
                self._indexed.pop(cfg.ref, None)
                dropped_active = True
            state.previous = [v for v in state.previous if self._revoke(cfg, v, trust) is None]
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
            self._verify(cfg, envelope, None, freshness=False)
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
            log.error("trust changed: %s", event.detail)
            self.bus.publish(event)
            return event
        return None

    # -- operator actions ----------------------------------------------------------------

    def _cfg(self, ref: str) -> ListConfig:
        for cfg in self.config.lists:
            if cfg.ref == ref:
                return cfg
        known = ", ".join(c.ref for c in self.config.lists) or "none"
        raise KeyError(f"no configured list {ref!r} (configured: {known})")

    async def approve(self, ref: str, version: int) -> None:
        """Apply a quarantined version the operator has reviewed."""
        cfg = self._cfg(ref)
        async with self._lock:
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
        cfg = self._cfg(ref)
        async with self._lock:
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

    # -- status and schedule -------------------------------------------------------------

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

    async def run(self) -> None:
        """Sync each list on its own schedule, with jitter, until cancelled."""

        async def loop(cfg: ListConfig) -> None:
            while True:
                try:
                    await self.sync_list(cfg)
                except Exception:
                    log.exception("%s: sync failed unexpectedly", cfg.ref)
                await asyncio.sleep(cfg.interval * self._rng.uniform(0.9, 1.1))

        async with asyncio.TaskGroup() as tg:
            for cfg in self.config.lists:
                tg.create_task(loop(cfg))

    async def close(self) -> None:
        """Release the fetcher's connections."""
        await self.fetcher.close()
