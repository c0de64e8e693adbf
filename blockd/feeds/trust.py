"""The root of trust at run time: the pinned policy, and the updates that rotate it.

Trust is never taken from the writable state: accepted updates are stored there, but at
every start they are verified again, in version order, from the operator's pinned file.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from blockd.events import EventBus, TrustAccepted, TrustRejected, TrustUpToDate
from blockd.feeds.fetch import Fetcher, FetchError, FetchPolicy
from blockd.feeds.model import TrustPolicy
from blockd.feeds.store import ListStore
from blockd.feeds.verify import Rejected, verify_trust

log = logging.getLogger(__name__)
UPDATE_POLICY = FetchPolicy(max_bytes=1 << 20, deadline=60, attempt_timeout=30)


class TrustError(Exception):
    """The pinned trust policy cannot be used; blockd cannot enforce anything."""


def load_trust(pinned: Path, updates: list[bytes], now: datetime) -> TrustPolicy:
    """Verify the pinned trust policy, then each stored update in turn from it."""
    try:
        raw = pinned.read_bytes()
    except OSError as e:
        raise TrustError(f"{pinned}: cannot read pinned trust policy: {e.strerror}") from None
    try:
        # The pinned policy's own expiry is reported, not fatal: fail safe, never empty.
        trust = verify_trust(raw, None, datetime.min.replace(tzinfo=UTC)).policy
    except Rejected as e:
        raise TrustError(f"{pinned}: pinned trust policy rejected: {e}") from None
    for update in updates:
        try:
            trust = verify_trust(update, trust, datetime.min.replace(tzinfo=UTC)).policy
        except Rejected as e:
            log.warning("stored trust update ignored: %s", e)
    return trust


async def fetch_trust_updates(
    base: str,
    current: TrustPolicy,
    fetcher: Fetcher,
    store: ListStore,
    bus: EventBus,
    now: datetime,
) -> TrustPolicy:
    """Fetch <version+1>.trust.dsse from base until there is none; return the newest.

    Each step must pass the rotation rule against the policy before it; the first failure
    stops the walk and keeps the policy reached so far. A walk that ends because there is
    nothing newer is a TrustUpToDate event (so a failure that went away is seen to).
    """
    while True:
        url = base.rstrip("/") + f"/{current.version + 1}.trust.dsse"
        try:
            res = await fetcher.fetch(url, UPDATE_POLICY)
            if res.data is None:
                bus.publish(TrustUpToDate(current.version))
                return current
            v = verify_trust(res.data, current, now)
        except FetchError as e:
            if e.reason != "not-found":
                bus.publish(TrustRejected(None, None, "fetch", str(e)))
            else:
                bus.publish(TrustUpToDate(current.version))
            return current
        except Exception as e:  # nothing a mirror sends may stop the walk badly
            r = e if isinstance(e, Rejected) else Rejected("internal", f"{url}: {type(e).__name__}")
            if r is not e:
                log.error("trust update %s: unexpected error", url, exc_info=e)
            bus.publish(
                TrustRejected(r.version, r.envelope_sha256, r.reason, str(r), r.payload_sha256)
            )
            return current
        store.save_trust(v.policy.version, v.envelope)
        current = v.policy
        bus.publish(TrustAccepted(v.policy.version, v.envelope_sha256, v.keyids, v.payload_sha256))
