"""DSSE envelopes (secure-systems-lab/dsse v1): pre-authentication encoding, sign, verify.

Verification works on the exact bytes received and hands back the payload bytes that the
signatures cover; callers parse those bytes and never the envelope again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from blockd.feeds import strictjson
from blockd.feeds.keys import PublicKey, SigningKey

MAX_SIGNATURES = 32  # more than any real threshold; bounds verification work on hostile input


class EnvelopeError(ValueError):
    """An envelope is malformed or its signatures do not satisfy the threshold."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def pae(payload_type: str, payload: bytes) -> bytes:
    """Return PAE(type, body); lengths are byte counts in ASCII decimal."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Envelope:
    """A parsed, not yet verified envelope."""

    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, signature)
    sha256: str  # hex digest of the envelope bytes as received

    @property
    def payload_sha256(self) -> str:
        """Return the hex digest of the payload: the signed content's identity."""
        return hashlib.sha256(self.payload).hexdigest()


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeError("malformed", f"envelope {what} must be a base64 string")
    try:
        # DSSE allows standard or URL-safe base64; padding optional.
        text = value.replace("-", "+").replace("_", "/")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("malformed", f"envelope {what} is not valid base64") from None


def parse(raw: bytes) -> Envelope:
    """Parse envelope bytes (strict, bounded JSON), checking shape only."""
    try:
        doc = strictjson.loads(raw)
    except strictjson.JSONError as e:
        raise EnvelopeError("malformed", f"envelope is not JSON blockd reads: {e}") from None
    if not isinstance(doc, Mapping):
        raise EnvelopeError("malformed", "envelope must be a JSON object")
    ptype = doc.get("payloadType")
    if not isinstance(ptype, str) or not ptype:
        raise EnvelopeError("malformed", "envelope has no payloadType string")
    payload = _b64(doc.get("payload"), "payload")
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise EnvelopeError("malformed", "envelope has no signatures list")
    if len(sigs) > MAX_SIGNATURES:
        raise EnvelopeError("malformed", f"envelope has over {MAX_SIGNATURES} signatures")
    parsed: list[tuple[str, bytes]] = []
    for s in sigs:
        if not isinstance(s, Mapping):
            raise EnvelopeError("malformed", "envelope signature must be an object")
        keyid = s.get("keyid", "")
        if not isinstance(keyid, str):
            raise EnvelopeError("malformed", "envelope signature keyid must be a string")
        parsed.append((keyid, _b64(s.get("sig"), "signature")))
    return Envelope(ptype, payload, tuple(parsed), hashlib.sha256(raw).hexdigest())


def verify(
    env: Envelope, payload_type: str, keys: Iterable[PublicKey], threshold: int
) -> tuple[str, ...]:
    """Check type and signatures; return the ids of distinct trusted keys that signed.

    A key counts once however many signatures carry it, and a signature whose keyid hint
    is absent or wrong is tried against every trusted key (the hint is not trusted).
    """
    if env.payload_type != payload_type:
        raise EnvelopeError(
            "payload-type", f"payload type {env.payload_type!r}, expected {payload_type!r}"
        )
    trusted = {k.keyid: k for k in keys}
    message = pae(env.payload_type, env.payload)
    good: set[str] = set()
    for hint, sig in env.signatures:
        if len(sig) != 64:
            continue
        candidates = [trusted[hint]] if hint in trusted else list(trusted.values())
        for key in candidates:
            if key.keyid not in good and key.verify(sig, message):
                good.add(key.keyid)
                break
    if len(good) < threshold:
        raise EnvelopeError(
            "signature",
            f"{len(good)} valid signature(s) from distinct trusted keys, {threshold} required",
        )
    return tuple(sorted(good))


def sign(payload_type: str, payload: bytes, keys: Iterable[SigningKey]) -> bytes:
    """Return envelope bytes signed by every key given."""
    message = pae(payload_type, payload)
    doc = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {"keyid": k.keyid, "sig": base64.b64encode(k.sign(message)).decode()} for k in keys
        ],
    }
    return json.dumps(doc, indent=1).encode() + b"\n"
