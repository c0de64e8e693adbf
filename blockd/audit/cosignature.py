"""C2SP tlog-cosignature (Ed25519, `cosignature/v1`): witness keys, signing, checking.

A cosignature is a signed-note signature line on a checkpoint,
`— <witness name> base64(key ID || timestamp || Ed25519 signature)`, where the key ID is
SHA-256(name || 0x0A || 0x04 || public key)[:4], the timestamp is a big-endian uint64 of
POSIX seconds (at most 2^63 - 1), and the signature covers
`cosignature/v1\\ntime <timestamp>\\n` followed by the checkpoint's note body. See
https://c2sp.org/tlog-cosignature and https://c2sp.org/signed-note.

Keys travel as vkeys `<name>+<hex key ID>+<base64(0x04 || public key)>` and as signer keys
`PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || seed)>`, the same shape as the log's keys
with the cosignature type byte. Pure functions: no clock, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from blockd.audit.note import (
    SIGNATURE_PREFIX,
    NoteError,
    _b64decode,
    ed25519_key,
    valid_key_name,
)

SIG_TYPE = 0x04  # timestamped Ed25519 witness cosignatures (signed-note's type registry)
HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = (1 << 63) - 1
_LENGTH = 4 + 8 + 64  # key ID, timestamp, Ed25519 signature


def cosigner_key_id(name: str, public_key: bytes) -> int:
    """Return the key ID: SHA-256(name || 0x0A || 0x04 || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([SIG_TYPE]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def signed_message(body: str, timestamp: int) -> bytes:
    """Return what a cosignature signs: the header, the time line, the checkpoint body."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"a cosignature timestamp is 0..2^63-1, got {timestamp}")
    if not body.endswith("\n"):
        raise ValueError("a checkpoint body ends in a newline")
    return f"{HEADER}time {timestamp}\n{body}".encode()


def _parse_key(text: str, private: bool) -> tuple[str, int, bytes]:
    """Return (name, key ID, 32 key bytes) from a cosigner vkey or signer key."""
    parts = text.split("+", 4 if private else 2)
    if private:
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("malformed-key", "a witness key is PRIVATE+KEY+<name>+<id>+<key>")
        parts = parts[2:]
    if len(parts) != 3:
        raise NoteError("malformed-key", "expected <name>+<hex key ID>+<base64 key>")
    name, hex_id, b64 = parts
    if not valid_key_name(name):
        raise NoteError("invalid-key-name", repr(name))
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise NoteError("malformed-key", f"key ID must be 8 lowercase hex digits, got {hex_id!r}")
    try:
        raw = _b64decode(b64)
    except ValueError as e:
        raise NoteError("malformed-key", str(e)) from None
    if not raw or raw[0] != SIG_TYPE:
        raise NoteError(
            "unsupported-algorithm", "a witness key has type 0x04 (Ed25519 cosignature)"
        )
    if len(raw) != 33:
        raise NoteError("malformed-key", f"an Ed25519 key is 32 bytes, got {len(raw) - 1}")
    return name, int(hex_id, 16), raw[1:]


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's public key: checks its cosignatures on checkpoints."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey = field(compare=False)

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Load `<name>+<hex8>+<base64(0x04 || public key)>`."""
        name, kid, raw = _parse_key(vkey.strip(), private=False)
        if cosigner_key_id(name, raw) != kid:
            raise NoteError("key-id-mismatch", f"{name}+{kid:08x} does not match its key")
        return cls(name, kid, Ed25519PublicKey.from_public_bytes(raw))

    @property
    def vkey(self) -> str:
        """Return the vkey string."""
        raw = base64.b64encode(bytes([SIG_TYPE]) + _raw(self.public_key)).decode()
        return f"{self.name}+{self.key_id:08x}+{raw}"

    def timestamp(self, line: str, body: str) -> int | None:
        """Return the timestamp of line if it is this witness's valid cosignature of body."""
        parsed = parse_line(line)
        if parsed is None or parsed[0] != self.name:
            return None
        signature = parsed[1]
        if len(signature) != _LENGTH or int.from_bytes(signature[:4], "big") != self.key_id:
            return None
        timestamp = int.from_bytes(signature[4:12], "big")
        try:
            self.public_key.verify(signature[12:], signed_message(body, timestamp))
        except (InvalidSignature, ValueError):
            return None
        return timestamp

    def is_mine(self, line: str) -> bool:
        """Tell whether line carries this witness's name and key ID (valid or not)."""
        parsed = parse_line(line)
        return (
            parsed is not None
            and parsed[0] == self.name
            and len(parsed[1]) >= 4
            and int.from_bytes(parsed[1][:4], "big") == self.key_id
        )


@dataclass(frozen=True)
class Cosigner:
    """A witness's private key: cosigns checkpoints."""

    name: str
    key_id: int
    private_key: Ed25519PrivateKey = field(compare=False)
    verifier: CosignatureVerifier

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Cosigner:
        """Build a cosigner from a name and a 32-byte Ed25519 seed."""
        private, public, raw = ed25519_key(name, seed)
        kid = cosigner_key_id(name, raw)
        return cls(name, kid, private, CosignatureVerifier(name, kid, public))

    @classmethod
    def from_skey(cls, skey: str) -> Cosigner:
        """Load `PRIVATE+KEY+<name>+<hex8>+<base64(0x04 || seed)>`."""
        name, kid, seed = _parse_key(skey.strip(), private=True)
        cosigner = cls.from_seed(name, seed)
        if cosigner.key_id != kid:
            raise NoteError("key-id-mismatch", f"{name}+{kid:08x} does not match its key")
        return cosigner

    @property
    def skey(self) -> str:
        """Return the signer key string; it is a secret."""
        raw = base64.b64encode(bytes([SIG_TYPE]) + self.private_key.private_bytes_raw()).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{raw}"

    def cosign(self, body: str, timestamp: int) -> str:
        """Return the cosignature line (ending in a newline) of a checkpoint body at timestamp."""
        signature = self.private_key.sign(signed_message(body, timestamp))
        blob = self.key_id.to_bytes(4, "big") + timestamp.to_bytes(8, "big") + signature
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


def generate(name: str) -> Cosigner:
    """Generate a new witness key."""
    return Cosigner.from_seed(name, Ed25519PrivateKey.generate().private_bytes_raw())


def parse_line(line: str) -> tuple[str, bytes] | None:
    """Return (key name, decoded signature) of a note signature line, or None if malformed."""
    line = line.removesuffix("\n")
    if not line.startswith(SIGNATURE_PREFIX):
        return None
    name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not valid_key_name(name):
        return None
    try:
        return name, _b64decode(b64)
    except ValueError:
        return None


def split_lines(text: str) -> list[str]:
    """Split a witness's answer into signature lines (each ending in a newline)."""
    return [line + "\n" for line in text.split("\n") if line]


@dataclass(frozen=True)
class Quorum:
    """Which witnesses cosigned a checkpoint body: valid (with time), invalid, missing."""

    valid: tuple[tuple[str, int], ...]
    invalid: tuple[str, ...]
    missing: tuple[str, ...]
    threshold: int

    @property
    def ok(self) -> bool:
        """Tell whether enough distinct witnesses cosigned."""
        return len(self.valid) >= self.threshold

    def describe(self) -> str:
        """Say in one line what was found."""
        parts = [f"{len(self.valid)} of {self.threshold} required witness cosignatures valid"]
        if self.missing:
            parts.append(f"missing from {', '.join(self.missing)}")
        if self.invalid:
            parts.append(f"invalid from {', '.join(self.invalid)}")
        return "; ".join(parts)


def quorum(
    body: str,
    lines: Iterable[str],
    witnesses: Sequence[CosignatureVerifier],
    threshold: int | None = None,
) -> Quorum:
    """Check the cosignatures of a checkpoint body against the witness keys one trusts.

    Lines from unknown keys are ignored; a witness counts once however many valid lines it
    has. threshold defaults to every witness given.
    """
    lines = list(lines)
    valid: list[tuple[str, int]] = []
    invalid: list[str] = []
    missing: list[str] = []
    # One witness given twice is still one witness: it must not count twice to a threshold.
    distinct = list({(w.name, w.key_id, w.vkey): w for w in witnesses}.values())
    for w in distinct:
        times = [t for t in (w.timestamp(line, body) for line in lines) if t is not None]
        label = f"{w.name}+{w.key_id:08x}"
        if times:
            valid.append((label, max(times)))
        elif any(w.is_mine(line) for line in lines):
            invalid.append(label)
        else:
            missing.append(label)
    need = len(distinct) if threshold is None else threshold
    return Quorum(tuple(valid), tuple(invalid), tuple(missing), need)
