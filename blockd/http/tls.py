"""The HTTPS contract: decide on the SNI of a ClientHello, never terminating TLS.

blockd holds no certificate for anyone's site, so over HTTPS it cannot see a URL, show a
page, or block one URL and not another. What it can do, per connection:
1. hello    read the ClientHello (it may span TCP segments) within header_timeout
2. name     the SNI; none is refused. An Encrypted Client Hello is refused, or with
            `tls_default = "splice"` decided on its visible (outer) name like any other
3. policy   wholly blocked host: refused with a TLS access_denied alert (the browser shows
            a connection error; the DNS answer already pointed it at the notice server).
            Routed host: the list's `https` setting: `splice` relays the connection to the
            origin untouched (its URLs cannot be checked, so they are not blocked), `refuse`
            sends the alert. Any other host: unrecognized_name.
Every decision is an HttpDecision event with transport "https".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Literal

from blockd.events import EventBus, HttpDecision, HttpProblem
from blockd.http import relay, sni
from blockd.http.decide import decide
from blockd.http.origin import OriginError, OriginResolver
from blockd.http.proxy import Limits
from blockd.policy.snapshot import PolicySnapshot
from blockd.policy.verdict import Verdict

TlsMode = Literal["splice", "refuse"]
READ = 16384


class TlsFront:
    """Decide TLS connections by SNI; splice or refuse."""

    def __init__(
        self,
        source: Callable[[], PolicySnapshot],
        resolver: OriginResolver,
        bus: EventBus,
        limits: Limits,
        modes: Mapping[str, TlsMode],
        *,
        default: TlsMode = "refuse",
        origin_port: int = 443,
    ) -> None:
        """Wire it; modes maps 'authority/list' to what a routed host of that list gets."""
        self.source = source
        self.resolver = resolver
        self.bus = bus
        self.limits = limits
        self.modes = dict(modes)
        self.default = default
        self.origin_port = origin_port

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one TLS connection."""
        try:
            hello, data = await self._hello(reader, writer)
            if hello is None:
                return
            name = hello.server_name
            if name is None or (hello.ech and self.default == "refuse"):
                # No SNI: nowhere to splice to. ECH: the visible (outer) name is a public
                # one, and the site inside is unknown.
                self._refuse(writer, None, sni.ALERT_UNRECOGNIZED_NAME)
                return
            # Past here the visible name decides, with ECH as without: a blocked outer name
            # is refused, and only a routed one is spliced (never an open relay to :443).
            d = decide(self.source(), name, None)
            if d.outcome in ("misdirected", "bad-request"):
                self.bus.publish(HttpDecision(None, "misdirected", "https"))
                writer.write(sni.alert(sni.ALERT_UNRECOGNIZED_NAME))
                return
            verdict = d.verdict
            assert verdict is not None
            if d.outcome == "notice":
                self._refuse(writer, verdict, sni.ALERT_ACCESS_DENIED)
                return
            if self.modes.get(f"{verdict.authority}/{verdict.list}", "splice") == "refuse":
                self._refuse(writer, verdict, sni.ALERT_ACCESS_DENIED)
                return
            self.bus.publish(HttpDecision(verdict, "splice", "https"))
            await self._splice(name, data, reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            relay.close(writer, self.limits.write_timeout)

    async def _hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[sni.ClientHello | None, bytes]:
        """Read until a whole ClientHello is in; (None, b'') when there is none to be had."""
        hellos = sni.HelloReader()
        try:
            async with asyncio.timeout(self.limits.header_timeout):
                while True:
                    data = await reader.read(READ)
                    if not data:
                        return None, b""
                    hello = hellos.feed(data)
                    if hello is not None:
                        return hello, bytes(hellos.data)
        except TimeoutError:
            self.bus.publish(HttpProblem("rejected", "slow-client", "https"))
        except sni.TlsParseError as e:
            self.bus.publish(HttpProblem("rejected", e.reason, "https"))
            if not isinstance(e, sni.NotTls):
                writer.write(sni.alert(sni.ALERT_DECODE_ERROR))
        return None, b""

    def _refuse(self, writer: asyncio.StreamWriter, verdict: Verdict | None, alert: int) -> None:
        self.bus.publish(HttpDecision(verdict, "refused", "https"))
        writer.write(sni.alert(alert))

    async def _splice(
        self, name: str, hello: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Connect to the origin, hand it the ClientHello, relay both ways untouched."""
        try:
            o_reader, o_writer = await self.resolver.connect(
                name, self.origin_port, self.limits.connect_timeout
            )
        except OriginError as e:
            self.bus.publish(HttpProblem("origin", e.reason, "https"))
            writer.write(sni.alert(sni.ALERT_INTERNAL_ERROR))
            return
        try:
            o_writer.write(hello)
            await relay.pipe(
                (reader, writer),
                (o_reader, o_writer),
                self.limits.tunnel_idle_timeout,
                self.limits.write_timeout,
            )
        finally:
            relay.close(o_writer, self.limits.write_timeout)
