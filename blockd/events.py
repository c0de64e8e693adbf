"""The in-process event bus and the events enforcement and feeds emit.

Producers publish; metrics and audit subscribe. Handlers run synchronously in the
publisher's thread and must be quick and must not raise (a raising handler is logged and
skipped, so one bad subscriber cannot break enforcement).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from blockd.policy.verdict import Verdict

# Every listener a query or connection arrives on. Metrics label by these and pre-create
# their series from them, so a new transport cannot silently vanish from the metrics.
DnsTransport = Literal["udp", "tcp", "dot", "doh"]
HttpTransport = Literal["http", "https"]
Transport = DnsTransport | HttpTransport
DNS_TRANSPORTS: tuple[DnsTransport, ...] = get_args(DnsTransport)
HTTP_TRANSPORTS: tuple[HttpTransport, ...] = get_args(HttpTransport)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of all events."""


@dataclass(frozen=True)
class FeedAccepted(Event):
    """A signed list version passed every acceptance rule."""

    authority: str
    list: str
    version: int
    envelope_sha256: str
    keyids: tuple[str, ...]
    entries: int
    rejected_entries: dict[str, int] = field(default_factory=dict)
    payload_sha256: str | None = None  # the signed content's identity (envelopes vary)
    # Where the exact accepted bytes are stored (for a fleet or an RPZ server to publish;
    # not audited: paths are this machine's business).
    envelope_path: str = ""
    body_path: str | None = None


@dataclass(frozen=True)
class FeedRejected(Event):
    """A list version, or a fetch, failed; the previous version stays in force."""

    authority: str
    list: str
    version: int | None
    envelope_sha256: str | None
    keyids: tuple[str, ...]
    reason: str
    message: str
    payload_sha256: str | None = None


@dataclass(frozen=True)
class FeedRevoked(Event):
    """A stored list version no longer verifies under the trust policy and was dropped.

    Raised when a trust change (a key rotated out, an authority or list withdrawn, a
    format or cap narrowed) leaves an accepted version without authority. `entries` is
    how many entries stopped being enforced (0 for a version kept only for rollback).
    """

    authority: str
    list: str
    version: int
    envelope_sha256: str | None
    payload_sha256: str | None
    trust_version: int
    reason: str
    detail: str
    entries: int = 0


@dataclass(frozen=True)
class FeedUnchanged(Event):
    """A sync found nothing new (same version, or not modified)."""

    authority: str
    list: str
    version: int | None


@dataclass(frozen=True)
class TrustAccepted(Event):
    """A trust policy version became the root of trust."""

    version: int
    envelope_sha256: str
    keyids: tuple[str, ...]
    payload_sha256: str | None = None


@dataclass(frozen=True)
class TrustRejected(Event):
    """A trust policy update was refused."""

    version: int | None
    envelope_sha256: str | None
    reason: str
    message: str
    payload_sha256: str | None = None


@dataclass(frozen=True)
class TrustUpToDate(Event):
    """A trust refresh found no newer trust policy version (nothing to fetch)."""

    version: int


@dataclass(frozen=True)
class GuardIntervention(Event):
    """A guard-rail reduced blocking or held an update back.

    kind: `never-block` (entries dropped), `quarantine` (update held for approval),
    `approve`, `rollback`, `release` (operator actions).
    """

    kind: str
    authority: str
    list: str
    version: int
    detail: str
    count: int = 0


@dataclass(frozen=True)
class PolicyActivated(Event):
    """A new snapshot is in force."""

    generation: int
    versions: dict[str, int]
    entries: int


@dataclass(frozen=True)
class DnsDecision(Event):
    """A DNS query was answered from the policy: blocked (notice/nxdomain) or routed."""

    verdict: Verdict
    transport: DnsTransport


@dataclass(frozen=True)
class DnsProblem(Event):
    """A DNS query was dropped or refused, or forwarding failed; `reason` is a slug."""

    kind: str  # dropped, rejected, refused, upstream
    reason: str
    transport: DnsTransport


@dataclass(frozen=True)
class HttpDecision(Event):
    """An HTTP request or TLS connection was decided; nothing about the client is kept.

    `outcome`: notice (the notice page was served), pass (forwarded to the origin), splice
    (TLS relayed untouched), refused (TLS refused), misdirected (a host blockd does not
    serve). `verdict` is the matched entry's, when one matched.
    """

    verdict: Verdict | None
    outcome: str
    transport: HttpTransport


@dataclass(frozen=True)
class HttpProblem(Event):
    """An HTTP or TLS connection was rejected or failed; `reason` is a slug."""

    kind: str  # rejected (client's fault), origin (the origin failed), dropped (limits)
    reason: str
    transport: HttpTransport


@dataclass(frozen=True)
class OperatorAction(Event):
    """An operator changed something: reload, sync, approve, rollback (audited)."""

    action: str
    detail: str
    config_sha256: str = ""


@dataclass(frozen=True)
class ZoneTransferred(OperatorAction):
    """A secondary transferred the RPZ zone (audited as an operator action, `rpz-transfer`).

    `client` is the address of an operator's secondary resolver allowed by rpz.clients,
    never a subscriber's; `kind` is AXFR, IXFR or IXFR-AXFR (a full zone for an IXFR).
    """

    client: str = ""
    kind: str = ""
    serial: int = 0


@dataclass(frozen=True)
class SelfTestResult(Event):
    """A run of the self-tests: authority probes blocked, control names not."""

    passed: bool
    checks: int
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpstreamDown(Event):
    """An upstream resolver failed several attempts in a row and is set aside.

    `upstream` is its configured "address:port" (never a client's); `reason` the last
    failure (timeout, network, truncated, mismatch).
    """

    upstream: str
    reason: str
    failures: int


@dataclass(frozen=True)
class UpstreamRecovered(Event):
    """An upstream resolver that was down answered again."""

    upstream: str
    down_for: float  # seconds since it went down


@dataclass(frozen=True)
class AuditWriteFailed(Event):
    """Writing the audit log (a batch, or a checkpoint) failed; entries wait for a retry.

    Published when writing starts to fail and when the reason changes, not per attempt.
    `stage`: append, checkpoint or records (sealing and purging); `reason`, a slug:
    helper-died, refused, storage, internal.
    """

    stage: str
    reason: str
    detail: str
    pending: int


@dataclass(frozen=True)
class AuditWriteRecovered(Event):
    """The audit log is written again after a failure; nothing queued was lost."""

    stage: str
    failed_for: float  # seconds


@dataclass(frozen=True)
class AuditHelperRestarted(Event):
    """The process writing the audit log was replaced: it died, or it starved at idle priority."""

    reason: str  # died, starved
    detail: str


@dataclass(frozen=True)
class WorkerExited(Event):
    """A worker process ended unasked, or was killed for not reporting; it is restarted.

    `reason`, a slug: killed (by a signal), exited (with a status), unresponsive (killed
    after it stopped reporting), failed (could not start). `crashes` counts exits in a row
    with no stable run between; `restart_in` is the back-off before the next start.
    """

    worker: int
    reason: str
    detail: str
    crashes: int
    restart_in: float


@dataclass(frozen=True)
class WorkerRecovered(Event):
    """A restarted worker answers again."""

    worker: int
    restarts: int


E = TypeVar("E", bound=Event)


class EventBus:
    """Deliver events to the handlers subscribed to their type (or to a base type)."""

    def __init__(self) -> None:
        """Start with no subscribers."""
        self._handlers: dict[type[Event], list[Callable[[Any], None]]] = defaultdict(list)
        self._routes: dict[type[Event], tuple[Callable[[Any], None], ...]] = {}

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        """Call handler for every event of kind (and its subclasses)."""
        self._handlers[kind].append(handler)
        self._routes.clear()

    def unsubscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        """Stop calling handler for events of kind (if it was subscribed)."""
        with contextlib.suppress(ValueError):
            self._handlers[kind].remove(handler)
        self._routes.clear()

    def publish(self, event: Event) -> None:
        """Hand event to its subscribers."""
        # Hot path (every blocked DNS answer): the handlers of each event type are worked
        # out once, not per event.
        kind = type(event)
        handlers = self._routes.get(kind)
        if handlers is None:
            handlers = tuple(h for k in kind.__mro__ for h in self._handlers.get(k, ()))
            self._routes[kind] = handlers
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                log.exception("event handler %r failed on %s", handler, kind.__name__)
