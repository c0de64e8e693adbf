"""Keep the enforced policy in step with the authorities' signed lists: schedule and fetch.

For each configured list, on its own schedule: refresh the trust policy (TUF refreshes the
root before every update), fetch the envelope (conditionally), verify it enough to know
whether it is new and which body it signs, fetch the body, and hand both to the policy
holder (`blockd.feeds.holder`), which accepts, stores and activates them. Any failure keeps
the previous version in force and is an event with its reason. `FeedSync` is also the face
the rest of blockd sees: the snapshot in force, status, and the operator's actions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, datetime

from blockd.config import Config, ListConfig, TsigKeyError, read_tsig_key, rpz_endpoint
from blockd.events import EventBus, FeedUnchanged
from blockd.feeds import dsse, rpzin
from blockd.feeds.fetch import Fetcher, FetchError, FetchPolicy, resolve_beside
from blockd.feeds.holder import Clock, Outcome, PolicyHolder, release_memory
from blockd.feeds.model import PayloadError, RpzBinding, TrustPolicy, parse_list
from blockd.feeds.store import ListState, ListStatus, ListStore
from blockd.feeds.trust import fetch_trust_updates
from blockd.feeds.verify import Rejected, VerifiedList, check_body
from blockd.policy.snapshot import PolicySnapshot

__all__ = ["FeedSync", "ListStatus", "release_memory"]

log = logging.getLogger(__name__)


class FeedSync:
    """Fetches lists and trust updates on schedule; the holder owns what is enforced."""

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
        self.bus = bus
        self.holder = PolicyHolder(config, bus, clock)
        self.fetcher = fetcher or Fetcher()
        self.clock = clock
        self._rng = rng or random.Random()
        self._trust_lock = asyncio.Lock()
        self._trust_refreshes = 0

    # -- what the rest of blockd reads ------------------------------------------------

    @property
    def config(self) -> Config:
        """Return the configuration in force."""
        return self.holder.config

    @property
    def snapshot(self) -> PolicySnapshot:
        """Return the PolicySnapshot in force (replaced whole; read without a lock)."""
        return self.holder.snapshot

    @snapshot.setter
    def snapshot(self, snapshot: PolicySnapshot) -> None:
        self.holder.snapshot = snapshot

    @property
    def trust(self) -> TrustPolicy | None:
        """Return the trust policy in force (None before load)."""
        return self.holder.trust

    @property
    def store(self) -> ListStore:
        """Return the state directory's list store."""
        return self.holder.store

    def load(self) -> PolicySnapshot:
        """Load trust and every stored active list; build the first snapshot."""
        return self.holder.load()

    async def reconfigure(self, config: Config) -> PolicySnapshot:
        """Apply a new configuration (see PolicyHolder.reconfigure)."""
        return await self.holder.reconfigure(config)

    def status(self) -> list[ListStatus]:
        """Return the status of every configured list."""
        return self.holder.status()

    async def approve(self, ref: str, version: int) -> None:
        """Apply a quarantined version the operator has reviewed."""
        await self.holder.approve(ref, version)

    async def rollback(self, ref: str) -> int:
        """Return one list to its previous accepted version and hold newer ones back."""
        return await self.holder.rollback(ref)

    def _activate(self) -> PolicySnapshot:
        """Compile and swap in the same lists again (tests)."""
        return self.holder.activate()

    # -- one sync -------------------------------------------------------------------

    async def sync_all(self) -> None:
        """Sync every configured list once (trust refreshed once, first)."""
        await self.sync_trust()
        for cfg in self.config.lists:
            await self.sync_list(cfg, refresh_trust=False)

    async def sync_list(self, cfg: ListConfig, *, refresh_trust: bool = True) -> Outcome:
        """Sync one list; return the outcome: accepted, unchanged, quarantined or rejected.

        Trust is refreshed first, so a list is never judged by keys the regulator has
        already rotated out. Whatever happens, the outcome is an event: an unforeseen error
        is a rejection with reason `internal`.
        """
        if refresh_trust:
            await self.sync_trust()
        holder = self.holder
        async with holder.lock:
            state = holder.store.state(cfg.authority, cfg.list)
            state.last_attempt = time.time()
            try:
                outcome = await self._sync(cfg, state)
            except Exception as e:
                holder.rejected(cfg, state, e)
                outcome = "rejected"
            else:
                state.last_success = time.time()
                state.last_error = state.last_error_reason = None
            holder.store.save_state(cfg.authority, cfg.list, state)
            return outcome

    async def _sync(self, cfg: ListConfig, state: ListState) -> Outcome:
        authority = self.holder.trusted().authority(cfg.authority)
        cap = authority.max_bytes if authority else 1 << 20
        deadline = time.monotonic() + cfg.deadline
        if cfg.is_rpz:
            return await self._sync_zone(cfg, state, cap, deadline)
        got = await self._envelope(cfg, cfg.source, cap, state)
        if got is None:
            return "unchanged"
        verified, envelope, etag, last_modified = got
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
        outcome = await self.holder.accept(cfg, state, verified, envelope, body)
        state.etag, state.last_modified = etag, last_modified
        return outcome

    async def _envelope(
        self, cfg: ListConfig, url: str, cap: int, state: ListState
    ) -> tuple[VerifiedList, bytes, str | None, str | None] | None:
        """Fetch and verify the envelope at url; None (FeedUnchanged published) if not new."""
        result = await self._fetch(cfg, url, self._fetch_policy(cfg, cap), state)
        if result is None:
            self.bus.publish(FeedUnchanged(cfg.authority, cfg.list, state.active))
            return None
        envelope, etag, last_modified = result
        verified = self.holder.verify(cfg, envelope, state)
        if verified is None:
            state.etag, state.last_modified = etag, last_modified
            self.bus.publish(FeedUnchanged(cfg.authority, cfg.list, state.active))
            return None
        return verified, envelope, etag, last_modified

    async def _sync_zone(
        self, cfg: ListConfig, state: ListState, cap: int, deadline: float
    ) -> Outcome:
        """Sync a list delivered as a zone: its manifest first, the transfer only when new.

        The manifest is a list envelope verified by the holder's own rules; the zone must be
        the one it names (serial and ZONEMD), and the hosts it converts to must be the body
        the manifest signs. Manifest and body then take the path of any fetched list.
        """
        assert cfg.manifest is not None  # the configuration requires it with rpz://
        got = await self._envelope(cfg, cfg.manifest, cap, state)
        if got is None:
            return "unchanged"
        verified, envelope, etag, last_modified = got
        binding = verified.payload.rpz
        host, port, zone = rpz_endpoint(cfg.source)
        if binding is None:
            raise verified.reject("zone-mismatch", "the manifest binds no zone (no rpz field)")
        if binding.zone != zone:
            raise verified.reject(
                "zone-mismatch", f"the manifest is for zone {binding.zone}, not {zone}"
            )
        old = self._enforced_binding(cfg, state)
        self._check_serial(verified, binding, old)
        try:
            key = read_tsig_key(cfg.tsig_key_file) if cfg.tsig_key_file else None
        except TsigKeyError as e:
            raise verified.reject("transfer", str(e)) from None
        base = None  # the zone of the version in force, for an IXFR
        if old is not None and old.zone == zone and state.active is not None:
            kept = self.store.zone_path(cfg.authority, cfg.list, state.active)
            base = await asyncio.to_thread(rpzin.load, kept, zone, old.serial)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise verified.reject("deadline", "no time left to transfer the zone")
            try:
                transferred = await rpzin.transfer(host, port, zone, key, left, base)
                found = await asyncio.to_thread(rpzin.read, transferred)
                rpzin.check(found, binding)
                break
            except (rpzin.TransferError, rpzin.ZoneError) as e:
                if base is None:
                    reason = e.reason if isinstance(e, rpzin.ZoneError) else "transfer"
                    raise verified.reject(reason, str(e)) from None
                log.warning("%s: %s; transferring the whole zone instead", cfg.ref, e)
                base = None
        body = found.body()
        check_body(verified, body)
        outcome = await self.holder.accept(cfg, state, verified, envelope, body)
        state.etag, state.last_modified = etag, last_modified
        if outcome in ("accepted", "quarantined"):
            kept = self.store.zone_path(cfg.authority, cfg.list, verified.payload.version)
            try:
                await asyncio.to_thread(rpzin.save, transferred, kept)
            except OSError as e:  # only the next IXFR's base: an AXFR does without
                log.warning("%s: cannot keep the zone for the next IXFR: %s", cfg.ref, e)
        return outcome

    def _enforced_binding(self, cfg: ListConfig, state: ListState) -> RpzBinding | None:
        """Return the zone binding of the version in force (None: none, or not a zone)."""
        if state.active is None:
            return None
        try:
            old_envelope, _ = self.store.load_version(cfg.authority, cfg.list, state.active)
            return parse_list(dsse.parse(old_envelope).payload).rpz
        except (OSError, dsse.EnvelopeError, PayloadError):
            return None  # the stored version is checked again wherever it is used

    @staticmethod
    def _check_serial(verified: VerifiedList, binding: RpzBinding, old: RpzBinding | None) -> None:
        """Refuse a manifest whose zone serial is older (RFC 1982) than the one enforced."""
        if old is None or old.zone != binding.zone:
            return
        diff = (binding.serial - old.serial) % 2**32
        if diff >= 2**31:  # equal is fine: the same zone under a new manifest (new expiry)
            raise verified.reject(
                "rollback",
                f"zone {binding.zone} serial {binding.serial} is not newer than the enforced "
                f"version's {old.serial}",
            )

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
        known = state is not None and state.active is not None
        try:
            res = await self.fetcher.fetch(
                url,
                policy,
                etag=state.etag if state is not None and known else None,
                last_modified=state.last_modified if state is not None and known else None,
            )
        except FetchError as e:
            reason = {"too-large": "too-large", "deadline": "deadline"}.get(e.reason, "fetch")
            raise Rejected(
                reason, f"{cfg.ref}: {e}", authority=cfg.authority, list_id=cfg.list
            ) from None
        if res.status == "not-modified" or res.data is None:
            return None
        return res.data, res.etag, res.last_modified

    # -- trust updates --------------------------------------------------------------

    async def sync_trust(self) -> bool:
        """Fetch newer trust policy versions, one step at a time; return whether it changed.

        On a change every stored list version is verified again under the new policy and
        what fails is dropped (`PolicyHolder.reverify`). Callers that arrive while a refresh
        runs share its result rather than fetching again.
        """
        base = self.config.trust.updates
        if base is None:
            return False
        seen = self._trust_refreshes
        async with self._trust_lock:
            if self._trust_refreshes != seen:
                return False
            before = self.holder.trusted()
            try:
                self.holder.trust = await fetch_trust_updates(
                    base, before, self.fetcher, self.store, self.bus, self.clock()
                )
            finally:
                self._trust_refreshes += 1
        if self.holder.trust is before:
            return False
        await self.holder.reverify()
        return True

    # -- schedule -------------------------------------------------------------------

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
