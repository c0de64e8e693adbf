"""The composition root: config, policy, DNS servers, events, signals.

Start-up order matters: the last verified policy is loaded from disk before the first query
is answered; listeners open next; only then do feeds sync over the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blockd import __version__, health, selftest, tasks
from blockd.admin import Admin
from blockd.audit.log import open_log
from blockd.audit.recorder import AuditRecorder
from blockd.audit.records import DAY, RecordKeeper
from blockd.audit.witnessing import Witnessing, targets
from blockd.audit.writer import LogWriter
from blockd.config import Config, ConfigError, split_endpoint
from blockd.config import load as load_config
from blockd.dns.forward import UpstreamState, resolv_conf_upstreams
from blockd.events import (
    Event,
    EventBus,
    OperatorAction,
    PolicyActivated,
    SelfTestResult,
    UpstreamDown,
    UpstreamRecovered,
)
from blockd.failures import FailureLog
from blockd.feeds.sync import FeedSync
from blockd.feeds.trust import TrustError
from blockd.fleet.node import FleetNode
from blockd.health import Readiness
from blockd.http.notice import NoticeError, NoticePage
from blockd.http.server import demo_origin
from blockd.metrics import (
    AuditStatus,
    BlockCounts,
    CacheView,
    DnsCounters,
    FleetStatus,
    Metrics,
    MetricsState,
    RpzStatus,
    WitnessStatus,
)
from blockd.policy.guards import GuardConfigError
from blockd.rpz.server import RpzServer
from blockd.rpz.source import Sources
from blockd.serving import QueryPath, with_certificate
from blockd.workers.supervisor import Workers
from blockd.workers.totals import Tallies, Totals
from blockd.workers.worker import main as worker_main
from blockd.workers.zygote import Zygote

SYNC_RESTART_DELAY = 30  # seconds before a crashed sync loop starts again
log = logging.getLogger("blockd")


class App:
    """One running blockd."""

    def __init__(
        self, config: Config, config_path: Path | None = None, zygote: Zygote | None = None
    ) -> None:
        """Build the parts; nothing runs until start().

        With daemon.workers above 1, workers are forked from zygote (forked before the event
        loop and any thread started: `blockd run` does); without one, it is forked here.
        """
        config = with_certificate(config)
        self.config = config
        self.config_path = config_path
        self.bus = EventBus()
        self.failures = FailureLog(self.bus)  # every failure said once in the daemon log
        self.feeds = FeedSync(config, self.bus)
        self._demo_origin: asyncio.Server | None = None
        self.blocks = BlockCounts(self.bus)  # one count for metrics and audit
        self.path: QueryPath | None = None  # one process answers
        self.workers: Workers | None = None  # worker processes answer
        self.front: QueryPath | Workers
        dns_counts = DnsCounters()
        count = config.daemon.worker_count()
        if count > 1:
            self.totals = Totals(Tallies(self.blocks, dns_counts), _upstreams(config))
            self.totals.on_upstream_change = self._upstream_changed
            self.front = self.workers = Workers(
                config,
                count,
                self.bus,
                zygote or Zygote.fork(worker_main),
                self.totals,
                config.state.dir / "policy",
            )
            cache: CacheView = self.totals
        else:
            self.front = self.path = QueryPath(
                config, self.feeds, self.bus, on_upstream_change=self._upstream_changed
            )
            dns_counts = self.path.pipeline.counts
            cache = self.path.cache
        self.audit: AuditRecorder | None = None
        self.witnessing: Witnessing | None = None
        records: RecordKeeper | None = None
        if config.audit.enabled:
            audit = config.audit
            if audit.records.enabled:
                r = audit.records
                records = RecordKeeper(
                    audit.directory(config.state.dir) / "records",
                    period=r.period,
                    keep_min=r.keep_min_days * DAY,
                    keep_max=r.keep_max_days * DAY,
                )
                assert self.path is not None  # the configuration allows records with one process
                self.path.pipeline.on_block = self.path.http_front.on_block = records.note
                self.path.http_front.records_nothing = False
            directory = audit.directory(config.state.dir)
            origin, key_name = audit.names()
            self.audit = AuditRecorder(
                open_log(directory, origin, key_name),
                self.bus,
                writer=LogWriter(
                    directory,
                    origin,
                    key_name,
                    idle=audit.helper_priority == "idle",
                ),
                period=audit.period,
                checkpoint_interval=audit.checkpoint_interval,
                records=records,
                blocks=self.blocks,
            )
            if audit.witnesses:
                self.witnessing = Witnessing(
                    self.audit.log,
                    targets(audit.witnesses),
                    timeout=audit.witness_timeout,
                    retry_max=audit.witness_retry_max,
                )
                self.audit.on_checkpoint = self.witnessing.wake
        # In a fleet, the fleet loop replaces the sync loop: only the syncer fetches lists.
        self.fleet_node: FleetNode | None = None
        if config.fleet is not None:
            self.fleet_node = FleetNode(
                config.fleet,
                self.feeds,
                self.bus,
                checkpoint=self._latest_checkpoint,
                audit_key=self.audit.log.signer.verifier.vkey if self.audit else None,
            )
        self.metrics = Metrics(
            self.bus,
            MetricsState(
                lists=self.feeds.status,
                intervals=lambda: {c.ref: c.interval for c in self.config.lists},
                trust=lambda: self.feeds.trust,
                cache=lambda: cache,
                upstreams=self.front.upstreams,
                audit=self._audit_status,
                ready=lambda: self.readiness().ready,
                http_connections=self._http_connections,
                witnesses=self._witness_status,
                workers=self.workers.statuses if self.workers is not None else tuple,
                fleet=self._fleet_status,
                rpz=self._rpz_status,
            ),
            dns=dns_counts,
            blocks=self.blocks,
        )
        if self.workers is not None:  # what workers count goes where /metrics reads it
            t = self.metrics.tallies
            self.totals.tallies = Tallies(
                self.blocks, dns_counts, t.dns_problems, t.http, t.http_problems
            )
        self.admin = Admin(
            self, config.admin, control_socket=config.admin.control_path(config.state.dir)
        )
        # The policy zone for existing resolvers: here, in the supervisor, never in workers.
        self.rpz = RpzServer(config, self.bus, self._rpz_sources) if config.rpz.enabled else None
        self._selftest_task: asyncio.Task[None] | None = None
        self.bus.subscribe(PolicyActivated, self._on_policy)
        self._sync_task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()  # what start() started, to stop in reverse
        self._stopped = asyncio.Event()

    def _rpz_sources(self) -> Sources | None:
        """Return what the policy zone is built from now (None before trust is loaded)."""
        trust = self.feeds.trust
        if trust is None:
            return None
        holder = self.feeds.holder
        return Sources(self.config, holder.store, trust, holder.never_block)

    def _rpz_status(self) -> RpzStatus | None:
        rpz = self.rpz
        if rpz is None:
            return None
        z = rpz.zone
        return RpzStatus(
            dict(rpz.transfers),
            dict(rpz.refused),
            z.serial if z else None,
            len(z.entries) if z else None,
        )

    def _http_connections(self) -> int:
        if self.workers is not None:
            return self.totals.http_connections()
        assert self.path is not None
        return self.path.http.connections

    def _audit_status(self) -> AuditStatus | None:
        a = self.audit
        if a is None:
            return None
        return AuditStatus(a.size, a.last_checkpoint or None, a.checkpoint_interval)

    def _fleet_status(self) -> FleetStatus | None:
        node = self.fleet_node
        if node is None:
            return None
        survey = node.fleet
        return FleetStatus(
            node.redis_up,
            node.syncer,
            survey.live if survey is not None else None,
            survey.divergent if survey is not None else None,
        )

    def _fleet_fact(self) -> health.FleetFact | None:
        node = self.fleet_node
        if node is None:
            return None
        survey = node.fleet
        return health.FleetFact(
            node.cfg.node,
            node.redis_up,
            node.problem,
            node.down_since,
            node.syncer,
            survey.live if survey is not None else None,
            survey.divergent if survey is not None else None,
        )

    def fleet_view(self) -> dict[str, Any] | None:
        """Return this node and the fleet as it last read it; None outside a fleet."""
        return self.fleet_node.view() if self.fleet_node is not None else None

    async def _latest_checkpoint(self) -> str | None:
        """Return the audit log's latest signed checkpoint, for the fleet's heartbeat."""
        if self.audit is None:
            return None
        return await asyncio.to_thread(self.audit.log.latest_checkpoint)

    def _witness_status(self) -> list[WitnessStatus]:
        w = self.witnessing
        if w is None:
            return []
        return [
            WitnessStatus(s.target.label, dict(s.outcomes), s.cosigned_size, s.cosigned_time)
            for s in w.states
        ]

    def _on_policy(self, event: Event) -> None:
        # Authority names and contacts for EDE texts come from the trust policy in force.
        self.front.set_trust(self.feeds.trust)
        if isinstance(event, PolicyActivated):
            wanted = {c.ref for c in self.config.lists}
            if self.workers is not None:
                self.workers.policy(event.generation)
            if self.front.closed and wanted <= set(event.versions):
                self.front.open()
                log.info("every configured list is in force: answering from upstream now")
            lists = ", ".join(f"{ref} v{v}" for ref, v in event.versions.items()) or "none"
            r = self.readiness()
            log.info(
                "policy %d active: %s; %s",
                event.generation,
                lists,
                "ready" if r.ready else f"NOT READY: {r.reason}",
            )

    def listeners(self) -> list[tuple[str, str, int]]:
        """Return every bound listener as (kind, address, port): DNS, then HTTP."""
        return self.front.bound

    def readiness(self) -> Readiness:
        """Say whether a current policy is enforced, and every check behind the answer."""
        return health.assess(self.health_facts())

    def health_facts(self) -> health.Facts:
        """Gather what readiness depends on, as plain values."""
        snap = self.feeds.snapshot
        trust = self.feeds.trust
        audit = None
        if self.audit is not None:
            a = self.audit
            problem = a.log.broken or (
                f"{a.problem.stage} failing ({a.problem.reason}): {a.problem.detail}"
                if a.problem is not None
                else None
            )
            audit = health.AuditFact(problem, a.size)
        return health.Facts(
            now=datetime.now(UTC),
            configured=[c.ref for c in self.config.lists],
            enforced={
                i.source.ref: health.EnforcedList(i.source.version, i.expires) for i in snap.lists
            },
            trust=health.TrustFact(trust.version, trust.expires) if trust is not None else None,
            upstreams=[
                health.UpstreamFact(u.name, u.down, u.last_reason, u.down_since)
                for u in self.front.upstreams()
            ],
            upstream_required=self.config.admin.ready_needs_upstream,
            sync_running=self._sync_task is None or not self._sync_task.done(),
            audit=audit,
            witnesses=[
                health.WitnessFact(s.target.label, s.cosigned_size, s.problem)
                for s in (self.witnessing.states if self.witnessing is not None else ())
            ],
            workers=self._workers_fact(),
            fleet=self._fleet_fact(),
        )

    def _workers_fact(self) -> health.WorkersFact | None:
        w = self.workers
        if w is None:
            return None
        each = [
            {
                "worker": s.index,
                "state": s.state,
                "pid": s.pid,
                "restarts": s.restarts,
                "crashes_in_a_row": s.crashes,
                "policy_generation": s.generation,
            }
            for s in w.slots
        ]
        return health.WorkersFact(len(w.slots), w.serving(), w.problem(), each)

    def _upstream_changed(self, state: UpstreamState) -> None:
        """Publish an upstream going down or coming back (the forwarder's transitions)."""
        if state.down:
            reason = state.last_reason or "network"
            self.bus.publish(UpstreamDown(state.name, reason, state.failures))
        else:
            since = state.down_since if state.down_since is not None else time.time()
            self.bus.publish(UpstreamRecovered(state.name, max(0.0, time.time() - since)))

    async def start(self) -> None:
        """Load the last verified policy, open the listeners, start syncing.

        Parts start in order and each registers its stop on one exit stack, so `stop` (or a
        part that fails to start) stops exactly what started, in reverse.
        """
        async with contextlib.AsyncExitStack() as stack:
            if self.audit is not None:
                self.audit.start(config_sha256=self.config_digest())
                stack.push_async_callback(self._close_audit)
            if self.witnessing is not None:
                self.witnessing.start()
                stack.push_async_callback(self.witnessing.stop)
            stack.push_async_callback(self.feeds.close)
            self.feeds.load()
            self.front.set_trust(self.feeds.trust)
            if self.config.http.demo_origin:
                self._demo_origin = await demo_origin(self.config.http.demo_origin)
                stack.callback(self._demo_origin.close)
            await self.front.start()
            stack.push_async_callback(self.front.stop)
            if self.rpz is not None:
                await self.rpz.start()
                stack.push_async_callback(self.rpz.stop)
            await self.admin.start()
            stack.push_async_callback(self.admin.stop)
            # No origin, however configured, may be one of our own listeners (a loop).
            for address, port in self.admin.bound:
                self.front.add_own(address, port)
            loop = asyncio.get_running_loop()
            self._sync_task = loop.create_task(self._sync_forever())
            stack.push_async_callback(lambda: tasks.cancel(self._sync_task))  # reload replaces it
            if self.config.selftest.interval:
                self._selftest_task = loop.create_task(self._selftests())
                stack.push_async_callback(tasks.cancel, self._selftest_task)
            self._stack = stack.pop_all()  # started: stop() unwinds it

    async def _close_audit(self) -> None:
        """Flush and close the audit log and its writer."""
        assert self.audit is not None
        await self.audit.stop()
        self.audit.log.close()
        if self.audit.writer is not None:
            await asyncio.to_thread(self.audit.writer.close)

    async def run_selftest(self) -> SelfTestResult:
        """Test enforcement now through our own listeners; publish and return the result."""
        dns = next(((a, p) for t, a, p in self.listeners() if t == "udp"), None)
        web = next(((a, p) for t, a, p in self.listeners() if t == "http"), None)
        if dns is None:
            result = SelfTestResult(False, 0, ("no DNS listener",))
        else:
            cfg = self.config.selftest
            targets = selftest.Targets(
                selftest.reachable(dns), selftest.reachable(web) if web else None
            )
            probes = self.feeds.snapshot.probes()
            result = await selftest.run(probes, targets, cfg.control or None, cfg.timeout)
        self.bus.publish(result)  # a failure is logged by blockd.failures
        return result

    async def _selftests(self) -> None:
        cfg = self.config.selftest
        await asyncio.sleep(cfg.first_after)
        while True:
            try:
                await self.run_selftest()
            except Exception:
                log.exception("self-test run failed")
            await asyncio.sleep(cfg.interval)

    async def _sync_forever(self) -> None:
        """Keep the lists current until cancelled; a bug restarts the loop, never ends it.

        In a fleet, the fleet node's loop: it runs the feed sync only while it is the syncer.
        """
        while True:
            try:
                if self.fleet_node is not None:
                    await self.fleet_node.run()
                    continue
                await self.feeds.sync_trust()
                await self.feeds.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("feed sync failed; restarting it in %d s", SYNC_RESTART_DELAY)
                await asyncio.sleep(SYNC_RESTART_DELAY)

    async def reload(self) -> str:
        """Re-read the configuration file; keep the old one if the new one is bad."""
        if self.config_path is None:
            return "no configuration file to reload"
        try:
            new = with_certificate(load_config(self.config_path))
        except ConfigError as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            return f"reload refused: {e}"
        if (problem := self._renames_the_log(new)) is not None:
            log.error("reload refused, keeping the running configuration: %s", problem)
            return f"reload refused: {problem}"
        try:
            await self.feeds.reconfigure(new)
        except (GuardConfigError, TrustError, OSError) as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            return f"reload refused: {e}"
        try:
            notice = NoticePage(new.http.notice)
        except NoticeError as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            return f"reload refused: {e}"
        if (new.dns.listen, new.http.listen, new.http.tls_listen) != (
            self.config.dns.listen,
            self.config.http.listen,
            self.config.http.tls_listen,
        ):
            log.warning("listen addresses changed: they take effect on restart")
        if new.fleet != self.config.fleet:
            log.warning("fleet settings changed: they take effect on restart")
        self._derive(new, notice)
        if self._sync_task is not None:
            await tasks.cancel(self._sync_task)  # ended before the next starts: one session
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_forever())
        self.bus.publish(OperatorAction("reload", str(self.config_path), self.config_digest()))
        log.info("configuration reloaded from %s", self.config_path)
        return "reloaded"

    def _renames_the_log(self, new: Config) -> str | None:
        """Say how new would rename the running audit log, if it would: a log keeps its names."""
        old = self.config.audit
        if self.audit is None or not new.audit.enabled or new.audit.names() == old.names():
            return None
        (origin, key), (new_origin, new_key) = old.names(), new.audit.names()
        return (
            f"audit: the log is named {origin!r} and signed by {key!r}, not {new_origin!r} "
            f"by {new_key!r}: a log's origin and key name never change"
        )

    def _derive(self, config: Config, notice: NoticePage) -> None:
        """Rebuild everything derived from the configuration that a reload may change.

        Listen addresses, the cache size and the audit log are not: they need a restart.
        """
        self.config = config
        self.front.configure(config, notice)

    async def stop(self) -> None:
        """Stop what start() started, in reverse: tasks, listeners (drained), then the rest."""
        await self._stack.aclose()
        self._stopped.set()

    def config_digest(self) -> str:
        """Return the SHA-256 of the configuration file in force (read at start or reload)."""
        return self.config.digest()

    def describe(self) -> str:
        """Return where everything listens and what is enforced, for the console."""
        lines = [f"blockd {__version__}"]
        for kind, address, port in self.listeners():
            room = "dns " if kind in ("udp", "tcp", "dot", "doh") else "http"
            lines.append(f"  {room}  {kind:5} {address}:{port}")
        if self.workers is not None:
            lines.append(f"  workers    {len(self.workers.slots)} processes (SO_REUSEPORT)")
        lines += [
            f"  admin       http://{a}:{p}/status  /metrics  /readyz" for a, p in self.admin.bound
        ]
        if self._demo_origin is not None:
            lines.append(f"  demo origin {self.config.http.demo_origin} (routed demo hosts)")
        ups = ", ".join(f"{h}:{p}" for h, p in (s.address for s in self.front.upstreams()))
        lines.append(f"  upstreams  {ups or 'none: clean names get SERVFAIL'}")
        if self.config.fleet is not None:
            lines.append(f"  fleet      node {self.config.fleet.node}, {self.config.fleet.where()}")
        if self.audit is not None:
            lines.append(f"  audit log  {self.audit.log.path}")
            lines.append(f"  audit key  {self.audit.log.signer.verifier.vkey}")
        for ref, version in self.feeds.snapshot.versions.items():
            lines.append(f"  enforcing  {ref} v{version}")
        r = self.readiness()
        lines.append(f"  {'ready' if r.ready else 'NOT READY'}: {r.reason}")
        return "\n".join(lines)


def _upstreams(config: Config) -> list[tuple[str, int]]:
    """Return the upstreams the workers use, as (address, port)."""
    return [split_endpoint(u) for u in config.dns.upstreams] or resolv_conf_upstreams()
