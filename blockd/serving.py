"""The query path: what answers DNS and HTTP, built the same in one process or in a worker.

Everything here reads the policy through `source.snapshot` and reports through the event
bus; none of it fetches, verifies or writes the audit log. `App` runs one QueryPath in its
own process (workers = 1); each worker process runs one of its own (blockd.workers).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from blockd.config import Config, split_endpoint
from blockd.dns import tlsconf
from blockd.dns.answers import AnswerPolicy
from blockd.dns.cache import AnswerCache
from blockd.dns.ddr import Ddr
from blockd.dns.forward import Forwarder, UpstreamState, resolv_conf_upstreams
from blockd.dns.pipeline import AccessList, DnsPipeline, SnapshotSource
from blockd.dns.server import DnsServer
from blockd.events import EventBus
from blockd.feeds.model import Authority, TrustPolicy
from blockd.http.doh import DohServer
from blockd.http.notice import NoticePage
from blockd.http.origin import OriginResolver
from blockd.http.proxy import HttpFront, Limits
from blockd.http.server import HttpServer
from blockd.http.tls import TlsFront

DEMO_NAME = "dns.demo.test"  # the demo resolver's name (DDR, the demo certificate)
log = logging.getLogger("blockd")


class QueryPath:
    """DNS and HTTP listeners, the pipeline, the cache and the upstreams of one process."""

    def __init__(
        self,
        config: Config,
        source: SnapshotSource,
        bus: EventBus,
        *,
        on_upstream_change: Callable[[UpstreamState], None] | None = None,
        cache_entries: int | None = None,
        reuse_port: bool = False,
    ) -> None:
        """Build the parts; nothing listens until start()."""
        self.config = config
        self.bus = bus
        self.trust: TrustPolicy | None = None
        n = config.dns.cache_entries if cache_entries is None else cache_entries
        self.cache = AnswerCache(n)
        upstreams = [split_endpoint(u) for u in config.dns.upstreams] or resolv_conf_upstreams()
        self.forwarder = Forwarder(
            upstreams,
            attempt_timeout=config.dns.attempt_timeout,
            total_timeout=config.dns.total_timeout,
            on_change=on_upstream_change,
        )
        self.pipeline = DnsPipeline(
            source,
            AnswerPolicy.build(config.dns, None),
            self.forwarder,
            self.cache,
            bus,
            AccessList(config.dns.allow),
            keep_client_subnet=config.dns.keep_client_subnet,
        )
        self.pipeline.closed = config.dns_start() == "fail-closed"
        self.dns = DnsServer(config.dns, self.pipeline, bus, reuse_port=reuse_port)
        self.resolver = OriginResolver(self.forwarder, config.http.origins, own=[])
        self.http_front = HttpFront(
            lambda: source.snapshot,
            NoticePage(config.http.notice),
            self.resolver,
            bus,
            self.authority,
            limits(config),
        )
        self.tls_front = TlsFront(
            lambda: source.snapshot,
            self.resolver,
            bus,
            limits(config),
            {c.ref: c.https for c in config.lists},
            default=config.http.tls_default,
            origin_port=config.http.origin_https_port,
        )
        self.http = HttpServer(
            config.http, self.http_front, self.tls_front, bus, reuse_port=reuse_port
        )
        encrypted = config.dns.encrypted
        self.doh: DohServer | None = None
        self._contexts: list[ssl.SSLContext] = []
        if encrypted.enabled:
            assert encrypted.certificate is not None and encrypted.private_key is not None
            cert, key = encrypted.certificate, encrypted.private_key
            if encrypted.dot_listen:
                self.dns.tls = tlsconf.server_context(cert, key, tlsconf.DOT_ALPN)
                self._contexts.append(self.dns.tls)
            if encrypted.doh_listen:
                context = tlsconf.server_context(cert, key, tlsconf.DOH_ALPN)
                self._contexts.append(context)
                self.doh = DohServer(encrypted, self.pipeline, bus, context, reuse_port=reuse_port)
        self.pipeline.ddr = _ddr(config)

    def authority(self, authority_id: str) -> Authority | None:
        """Return an authority of the trust policy in force, for notice pages."""
        return self.trust.authority(authority_id) if self.trust is not None else None

    @property
    def bound(self) -> list[tuple[str, str, int]]:
        """Return every bound listener as (kind, address, port): DNS, then HTTP."""
        return [*self.dns.bound, *(self.doh.bound if self.doh else []), *self.http.bound]

    async def start(self) -> None:
        """Open the DNS listeners, then HTTP's; stop what opened if one fails."""
        await self.dns.start()
        try:
            if self.doh is not None:
                await self.doh.start()
            await self.http.start()
        except BaseException:
            if self.doh is not None:
                await self.doh.stop()
            await self.dns.stop()
            raise
        for _, address, port in self.dns.bound:
            self.resolver.add_own(address, port)  # no origin may be one of our listeners
        self.pipeline.ddr = _ddr(self.config, self.bound)

    async def stop(self) -> None:
        """Close the listeners (draining what is in progress), then the upstreams."""
        try:
            await self.http.stop()
            if self.doh is not None:
                await self.doh.stop()
            await self.dns.stop()
        finally:
            await self.forwarder.close()

    @property
    def closed(self) -> bool:
        """Say whether the start is still fail-closed (REFUSED for what no list decides)."""
        return self.pipeline.closed

    def open(self) -> None:
        """Every configured list is in force: forward what the policy does not decide."""
        self.pipeline.closed = False

    def add_own(self, address: str, port: int) -> None:
        """Never treat address:port (another of blockd's listeners) as an origin."""
        self.resolver.add_own(address, port)

    def upstreams(self) -> list[UpstreamState]:
        """Return what the forwarder knows of each upstream."""
        return self.forwarder.states()

    def set_trust(self, trust: TrustPolicy | None) -> None:
        """Take authority names and contacts (EDE texts, notice pages) from trust."""
        self.trust = trust
        self.pipeline.answers = AnswerPolicy.build(self.config.dns, trust)

    def configure(self, config: Config, notice: NoticePage) -> None:
        """Apply what a reload may change; listen addresses and the cache size need a restart."""
        self.config = config
        self.pipeline.access = AccessList(config.dns.allow)
        self.pipeline.answers = AnswerPolicy.build(config.dns, self.trust)
        self.pipeline.keep_client_subnet = config.dns.keep_client_subnet
        self.http_front.notice = notice
        self.http_front.limits = self.tls_front.limits = limits(config)
        self.resolver.overrides = config.http.origins
        self.tls_front.modes = {c.ref: c.https for c in config.lists}
        self.tls_front.default = config.http.tls_default
        self.pipeline.ddr = _ddr(config, self.bound)
        e = config.dns.encrypted
        if e.certificate is not None and e.private_key is not None:
            for context in self._contexts:  # a renewed certificate, for new handshakes
                try:
                    tlsconf.reload(context, e.certificate, e.private_key)
                except (OSError, ssl.SSLError) as error:
                    log.error("certificate not reloaded, keeping the one in use: %s", error)


def _ddr(config: Config, bound: list[tuple[str, str, int]] | None = None) -> Ddr:
    """Return what DDR announces: the encrypted listeners under the resolver's name."""
    e = config.dns.encrypted
    name = e.name or (DEMO_NAME if config.demo else None)
    built = Ddr.build(e, name, bound or ()) if name is not None else None
    return built or Ddr(())


def with_certificate(config: Config) -> Config:
    """Return config with the demo's certificate filled in where the demo configures none."""
    e = config.dns.encrypted
    if not (config.demo and e.enabled) or (e.certificate and e.private_key):
        return config
    cert, key = tlsconf.demo_certificate(config.state.dir / "tls", e.name or DEMO_NAME)
    encrypted = e.model_copy(update={"certificate": cert, "private_key": key})
    return config.model_copy(update={"dns": config.dns.model_copy(update={"encrypted": encrypted})})


def limits(config: Config) -> Limits:
    """Return the HTTP fronts' time limits from config."""
    h = config.http
    return Limits(
        header_timeout=h.header_timeout,
        idle_timeout=h.idle_timeout,
        origin_timeout=h.origin_timeout,
        connect_timeout=h.connect_timeout,
        tunnel_idle_timeout=h.tunnel_idle_timeout,
        write_timeout=h.write_timeout,
        origin_port=h.origin_http_port,
    )
