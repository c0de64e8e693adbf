"""Acceptance rules for trust policies and signed lists, after TUF's client workflow.

Pure functions: bytes and the trust policy in, a verified document or a `Rejected` with a
stable reason slug and a one-line message out. Signatures are checked over the exact bytes
received before any payload field is believed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from blockd.feeds import dsse
from blockd.feeds.model import (
    LIST_PAYLOAD_TYPE,
    TRUST_PAYLOAD_TYPE,
    Authority,
    ListPayload,
    PayloadError,
    TrustPolicy,
    parse_list,
    parse_trust,
)

DEFAULT_SKEW = timedelta(minutes=5)

# Reason slugs (stable: they are metric labels and audit fields).
REASONS = (
    "malformed",
    "payload-type",
    "signature",
    "unknown-authority",
    "list-not-authorised",
    "format-not-authorised",
    "list-mismatch",
    "rollback",
    "expired",
    "future",
    "too-old",
    "digest-mismatch",
    "transfer",
    "zonemd",
    "zone-mismatch",
    "too-large",
    "deadline",
    "trust-expired",
    "fetch",
    "entries",
    "version-mismatch",
    "internal",
)


class Rejected(Exception):
    """A document failed an acceptance rule; the previous version stays in force."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        authority: str | None = None,
        list_id: str | None = None,
        version: int | None = None,
        envelope_sha256: str | None = None,
        payload_sha256: str | None = None,
        keyids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.authority = authority
        self.list_id = list_id
        self.version = version
        self.envelope_sha256 = envelope_sha256
        self.payload_sha256 = payload_sha256
        self.keyids = keyids


@dataclass(frozen=True)
class VerifiedList:
    """A list envelope that passed every rule that does not need its body."""

    payload: ListPayload
    authority: Authority
    envelope: bytes
    envelope_sha256: str
    payload_sha256: str  # the signed content's identity: envelopes may differ around it
    keyids: tuple[str, ...]

    def reject(self, reason: str, message: str) -> Rejected:
        """Return a rejection of this version (for rules checked after the envelope)."""
        return list_rejection(
            self.payload, self.envelope_sha256, self.payload_sha256, self.keyids, reason, message
        )


@dataclass(frozen=True)
class VerifiedTrust:
    """A trust policy that passed the rotation rule."""

    policy: TrustPolicy
    envelope: bytes
    envelope_sha256: str
    payload_sha256: str
    keyids: tuple[str, ...]


def verify_trust(raw: bytes, current: TrustPolicy | None, now: datetime) -> VerifiedTrust:
    """Accept a trust policy: the pinned one (current None) or an update to current.

    An update needs a threshold of the *current* regulator keys and a threshold of its own
    keys (so a rotation cannot lock itself out), and exactly the next version (TUF: one
    step at a time, so no signed version can be skipped).
    """
    env = _envelope(raw)
    sha, payload_sha = env.sha256, env.payload_sha256
    try:
        policy = parse_trust(env.payload)
    except PayloadError as e:
        # Unsigned content is not believed, but a malformed payload is reported as such.
        raise Rejected(
            "malformed", str(e), envelope_sha256=sha, payload_sha256=payload_sha
        ) from None
    signers = current.regulator if current is not None else policy.regulator
    try:
        keyids = dsse.verify(env, TRUST_PAYLOAD_TYPE, signers.public_keys(), signers.threshold)
        if current is not None:
            dsse.verify(
                env, TRUST_PAYLOAD_TYPE, policy.regulator.public_keys(), policy.regulator.threshold
            )
    except dsse.EnvelopeError as e:
        raise Rejected(
            e.reason, f"trust policy: {e}", envelope_sha256=sha, payload_sha256=payload_sha
        ) from None

    def reject(reason: str, message: str) -> Rejected:
        return Rejected(
            reason, message, version=policy.version, envelope_sha256=sha, payload_sha256=payload_sha
        )

    if current is not None and policy.version <= current.version:
        raise reject(
            "rollback", f"trust policy version {policy.version} is not above {current.version}"
        )
    if current is not None and policy.version != current.version + 1:
        raise reject(
            "version-mismatch",
            f"trust policy version {policy.version} skips {current.version + 1}: "
            "updates go one version at a time",
        )
    if policy.expires <= now:
        raise reject(
            "expired",
            f"trust policy version {policy.version} expired at {policy.expires:%Y-%m-%dT%H:%M:%SZ}",
        )
    return VerifiedTrust(policy, raw, sha, payload_sha, keyids)


def verify_list(
    raw: bytes,
    trust: TrustPolicy,
    now: datetime,
    *,
    expect: tuple[str, str] | None = None,
    last_version: int | None = None,
    skew: timedelta = DEFAULT_SKEW,
    freshness: bool = True,
    equal_is_new: bool = False,
) -> VerifiedList | None:
    """Apply every acceptance rule that does not need the body; None means same version.

    expect is the (authority, list) the source is configured for; without it the
    authority is found from the signatures' key ids (the CLI's offline verify). With
    freshness False (reloading last-known-good at start), expiry, age and rollback are
    not checked: an old policy is enforced and reported stale rather than dropped. With
    equal_is_new (nothing of the list is enforced, e.g. after a revocation) the last
    accepted version, signed anew, is a new document rather than "unchanged".
    """
    if freshness and trust.expires <= now:
        raise Rejected("trust-expired", f"trust policy version {trust.version} has expired")
    env = _envelope(raw)
    sha, payload_sha = env.sha256, env.payload_sha256
    authority = _signing_authority(env, trust, expect)

    def early(reason: str, message: str, keyids: tuple[str, ...] = ()) -> Rejected:
        return Rejected(
            reason,
            message,
            authority=authority.id,
            list_id=expect[1] if expect else None,
            envelope_sha256=sha,
            payload_sha256=payload_sha,
            keyids=keyids,
        )

    if len(raw) > authority.max_bytes:
        raise early("too-large", f"envelope is {len(raw)} bytes, cap {authority.max_bytes}")
    try:
        keyids = dsse.verify(env, LIST_PAYLOAD_TYPE, authority.public_keys(), authority.threshold)
    except dsse.EnvelopeError as e:
        raise early(e.reason, f"{authority.id}: {e}") from None
    try:
        p = parse_list(env.payload)
    except PayloadError as e:
        raise early("malformed", str(e), keyids) from None

    def reject(reason: str, message: str) -> Rejected:
        return list_rejection(p, sha, payload_sha, keyids, reason, message)

    if p.authority != authority.id:
        raise reject(
            "unknown-authority",
            f"payload names authority {p.authority!r} but is signed by {authority.id!r}",
        )
    if p.list not in authority.lists:
        raise reject(
            "list-not-authorised",
            f"list {p.list!r} is not among {authority.id}'s authorised lists {authority.lists}",
        )
    if expect is not None and p.list != expect[1]:
        raise reject("list-mismatch", f"source is configured for list {expect[1]!r}")
    if p.format not in authority.formats:
        raise reject(
            "format-not-authorised", f"format {p.format!r} is not among {authority.formats}"
        )
    total = p.entry_count + len(p.test_entries)  # self-test entries are entries too
    if total > authority.max_entries:
        raise reject(
            "too-large",
            f"{p.entry_count} entries and {len(p.test_entries)} test entries, "
            f"cap {authority.max_entries}",
        )
    if p.body is not None and len(raw) + p.body.size > authority.max_bytes:
        raise reject(
            "too-large",
            f"envelope and body are {len(raw) + p.body.size} bytes, cap {authority.max_bytes}",
        )
    if not freshness:
        return VerifiedList(p, authority, raw, sha, payload_sha, keyids)
    if p.expires <= now:
        raise reject("expired", f"expired at {p.expires:%Y-%m-%dT%H:%M:%SZ}")
    if p.issued_at > now + skew:
        raise reject("future", f"issued at {p.issued_at:%Y-%m-%dT%H:%M:%SZ}, in the future")
    if now - p.issued_at > timedelta(seconds=authority.max_age_seconds):
        raise reject(
            "too-old",
            f"issued at {p.issued_at:%Y-%m-%dT%H:%M:%SZ}, older than the "
            f"authority's maximum age of {authority.max_age_seconds} s",
        )
    if last_version is not None and p.version < last_version:
        raise reject("rollback", f"version is below the last accepted version {last_version}")
    if last_version is not None and p.version == last_version and not equal_is_new:
        return None
    return VerifiedList(p, authority, raw, sha, payload_sha, keyids)


def list_rejection(
    p: ListPayload,
    envelope_sha256: str,
    payload_sha256: str,
    keyids: tuple[str, ...],
    reason: str,
    message: str,
) -> Rejected:
    """Return the rejection of a signed list version, carrying its evidence."""
    return Rejected(
        reason,
        f"{p.ref} v{p.version}: {message}",
        authority=p.authority,
        list_id=p.list,
        version=p.version,
        envelope_sha256=envelope_sha256,
        payload_sha256=payload_sha256,
        keyids=keyids,
    )


def check_body(verified: VerifiedList, body: bytes) -> None:
    """Check a body file against the digest and size its envelope signs."""
    spec = verified.payload.body
    if spec is None:
        return
    if len(body) != spec.size or hashlib.sha256(body).hexdigest() != spec.sha256:
        raise verified.reject(
            "digest-mismatch", f"body {spec.name} does not match the signed digest"
        )


def _envelope(raw: bytes) -> dsse.Envelope:
    try:
        return dsse.parse(raw)
    except dsse.EnvelopeError as e:
        raise Rejected(e.reason, str(e), envelope_sha256=hashlib.sha256(raw).hexdigest()) from None


def _signing_authority(
    env: dsse.Envelope, trust: TrustPolicy, expect: tuple[str, str] | None
) -> Authority:
    """Pick the authority whose keys must verify env (hints are only hints)."""
    if expect is not None:
        found = trust.authority(expect[0])
        if found is None:
            raise Rejected(
                "unknown-authority",
                f"authority {expect[0]!r} is not in trust policy version {trust.version}",
                envelope_sha256=env.sha256,
                payload_sha256=env.payload_sha256,
            )
        return found
    hints = {keyid for keyid, _ in env.signatures}
    matches = [a for a in trust.authorities if hints & {k.keyid for k in a.public_keys()}]
    if len(matches) != 1:
        raise Rejected(
            "signature" if not matches else "unknown-authority",
            "signed by no key of any authority in the trust policy"
            if not matches
            else "signatures name keys of several authorities",
            envelope_sha256=env.sha256,
            payload_sha256=env.payload_sha256,
        )
    return matches[0]
