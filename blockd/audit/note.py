"""C2SP signed notes (Ed25519) and tlog checkpoints.

A note is text ending in a newline, a blank line, then one or more signature lines
`— <key name> <base64(key ID || signature)>`; see https://c2sp.org/signed-note and
https://c2sp.org/tlog-checkpoint. Keys travel as golang.org/x/mod/sumdb/note strings:
`<name>+<hex key ID>+<base64(0x01 || public key)>` for verifiers and
`PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>` for signers.

Every failure raises NoteError whose `reason` is a stable slug fit for logs and metrics.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16
SIGNATURE_PREFIX = "— "  # em dash U+2014, space
# Exactly 8 hex digits of either case, as strconv.ParseUint(id, 16, 32) with len(id) == 8
# accepts in golang.org/x/mod/sumdb/note; no sign, prefix, underscore or space.
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_SIZE = re.compile(r"0|[1-9][0-9]*")


class NoteError(ValueError):
    """A key, note or checkpoint was refused; `reason` says why in one stable word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _b64decode(text: str) -> bytes:
    """Decode standard padded base64, refusing any text that is not the canonical encoding."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not base64: {text!r}") from None
    if base64.b64encode(raw).decode() != text:
        raise ValueError(f"not canonical base64: {text!r}")
    return raw


def valid_key_name(name: str) -> bool:
    """Tell whether a key name is non-empty with no Unicode spaces, '+' or control characters."""
    return bool(name) and not any(
        c == "+" or c.isspace() or unicodedata.category(c) == "Cc" for c in name
    )


def key_id(name: str, public_key: bytes) -> int:
    """Return the 32-bit key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def ed25519_key(name: str, seed: bytes) -> tuple[Ed25519PrivateKey, Ed25519PublicKey, bytes]:
    """Return the private key, public key and raw public bytes of a named 32-byte seed."""
    if not valid_key_name(name):
        raise NoteError("invalid-key-name", repr(name))
    if len(seed) != 32:
        raise NoteError("malformed-key", f"an Ed25519 seed is 32 bytes, got {len(seed)}")
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key()
    return private, public, _raw_public(public)


def _split_key(text: str, parts: int) -> list[str]:
    fields = text.split("+", parts - 1)
    if len(fields) != parts:
        raise NoteError("malformed-key", "expected <name>+<hex key ID>+<base64 key>")
    return fields


def _parse_key_fields(name: str, hex_id: str, b64: str) -> tuple[int, bytes]:
    """Check name and key ID syntax and return (key ID, 32 key bytes after the algorithm)."""
    if not valid_key_name(name):
        raise NoteError("invalid-key-name", repr(name))
    if not _HEX8.fullmatch(hex_id):
        raise NoteError("malformed-key", f"key ID must be 8 hex digits, got {hex_id!r}")
    try:
        raw = _b64decode(b64)
    except ValueError as e:
        raise NoteError("malformed-key", str(e)) from None
    if not raw or raw[0] != ALG_ED25519:
        raise NoteError("unsupported-algorithm", "only Ed25519 (0x01) keys are accepted")
    if len(raw) != 33:
        raise NoteError("malformed-key", f"an Ed25519 key is 32 bytes, got {len(raw) - 1}")
    return int(hex_id, 16), raw[1:]


@dataclass(frozen=True)
class Verifier:
    """One Ed25519 public key with its name and key ID."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Load a verifier key `<name>+<hex8>+<base64(0x01 || public key)>`."""
        name, hex_id, b64 = _split_key(vkey, 3)
        kid, raw = _parse_key_fields(name, hex_id, b64)
        if key_id(name, raw) != kid:
            raise NoteError("key-id-mismatch", f"{name}+{hex_id} does not match its key")
        return cls(name, kid, Ed25519PublicKey.from_public_bytes(raw))

    @property
    def vkey(self) -> str:
        """Return the verifier key string."""
        raw = bytes([ALG_ED25519]) + _raw_public(self.public_key)
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(raw).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Tell whether signature is this key's Ed25519 signature of message."""
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """One Ed25519 private key with its name, key ID and verifier."""

    name: str
    key_id: int
    private_key: Ed25519PrivateKey
    verifier: Verifier

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        """Build a signer from a 32-byte Ed25519 seed."""
        private, public, raw = ed25519_key(name, seed)
        kid = key_id(name, raw)
        return cls(name, kid, private, Verifier(name, kid, public))

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Load a signer key `PRIVATE+KEY+<name>+<hex8>+<base64(0x01 || seed)>`."""
        private, key, name, hex_id, b64 = _split_key(skey, 5)
        if (private, key) != ("PRIVATE", "KEY"):
            raise NoteError("malformed-key", "a signer key starts with PRIVATE+KEY+")
        kid, seed = _parse_key_fields(name, hex_id, b64)
        signer = cls.from_seed(name, seed)
        if signer.key_id != kid:
            raise NoteError("key-id-mismatch", f"{name}+{hex_id} does not match its key")
        return signer

    @property
    def skey(self) -> str:
        """Return the signer key string; it is a secret."""
        seed = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        raw = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{raw}"

    def sign(self, message: bytes) -> bytes:
        """Return the Ed25519 signature of message."""
        return self.private_key.sign(message)


def generate_key(name: str) -> tuple[str, str]:
    """Generate a new Ed25519 key; return (signer key, verifier key)."""
    signer = Signer.from_seed(name, Ed25519PrivateKey.generate().private_bytes_raw())
    return signer.skey, signer.verifier.vkey


def _check_text(text: str, what: str) -> bytes:
    """Return text as UTF-8, refusing encodings and characters a note may not carry."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("invalid-utf8", f"{what} is not valid Unicode") from None
    if any(c < 0x20 and c != 0x0A for c in data):
        raise NoteError("control-character", f"{what} has a control character other than newline")
    return data


def sign_note(text: str, signer: Signer) -> str:
    """Sign text (which must end in a newline) and return the signed note."""
    data = _check_text(text, "note text")
    if not text.endswith("\n"):
        raise NoteError("text-not-newline-terminated", "note text must end in a newline")
    signature = signer.key_id.to_bytes(4, "big") + signer.sign(data)
    line = f"{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(signature).decode()}\n"
    return f"{text}\n{line}"


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> tuple[str, tuple[str, ...]]:
    """Verify a signed note; return its text and the names of the keys that signed it.

    Signatures from unknown keys are ignored, as the spec requires; a signature from a known
    key that fails to verify rejects the whole note, and so does having no known signature.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("invalid-utf8", "note is not valid UTF-8") from None
    _check_text(note, "note")
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_id), v)
        if _raw_public(other.public_key) != _raw_public(v.public_key):
            raise NoteError("ambiguous-key", f"two verifier keys are named {v.name}+{v.key_id:08x}")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed-note", "no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("malformed-note", "the signature block must end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("too-many-signatures", f"more than {MAX_SIGNATURES} signatures")
    message = text.encode("utf-8")
    signed: list[str] = []
    for line in lines:
        name, signature = _parse_signature_line(line)
        kid = int.from_bytes(signature[:4], "big")
        verifier = known.get((name, kid))
        if verifier is None:
            continue
        if not verifier.verify(message, signature[4:]):
            raise NoteError("bad-signature", f"signature by {name}+{kid:08x} does not verify")
        if name not in signed:
            signed.append(name)
    if not signed:
        raise NoteError("unknown-key", "no signature from a known key")
    return text, tuple(signed)


def _parse_signature_line(line: str) -> tuple[str, bytes]:
    """Return (key name, key ID || signature) from one signature line."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError("malformed-note", f"not a signature line: {line[:40]!r}")
    name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not valid_key_name(name):
        raise NoteError("invalid-key-name", repr(name))
    try:
        signature = _b64decode(b64)
    except ValueError as e:
        raise NoteError("malformed-note", f"signature by {name}: {e}") from None
    if len(signature) < 5:
        raise NoteError("malformed-note", f"signature by {name} is too short")
    return name, signature


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint body: origin, tree size, root hash and optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise ValueError("a checkpoint origin is one non-empty line")
        if not 0 <= self.size < 1 << 64:
            raise ValueError(f"a checkpoint size is a uint64, got {self.size}")
        if len(self.root) != 32:
            raise ValueError(f"a checkpoint root is 32 bytes, got {len(self.root)}")
        if any(not ext or "\n" in ext for ext in self.extensions):
            raise ValueError("checkpoint extensions are non-empty single lines")

    def to_text(self) -> str:
        """Return the note text: origin, size, base64 root, extensions, one per line."""
        root = base64.b64encode(self.root).decode()
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body strictly; raise NoteError('malformed-checkpoint') if bad."""
        if not text.endswith("\n"):
            raise NoteError("malformed-checkpoint", "text must end in a newline")
        try:
            _check_text(text, "checkpoint")
        except NoteError as e:
            raise NoteError("malformed-checkpoint", str(e)) from None
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("malformed-checkpoint", "needs origin, size and root lines")
        origin, size, root, *extensions = lines
        if not all(lines):
            raise NoteError("malformed-checkpoint", "empty line in checkpoint")
        if not _SIZE.fullmatch(size):
            raise NoteError("malformed-checkpoint", f"size must be decimal, got {size!r}")
        try:
            raw_root = _b64decode(root)
        except ValueError as e:
            raise NoteError("malformed-checkpoint", f"root: {e}") from None
        try:
            return cls(origin, int(size), raw_root, tuple(extensions))
        except ValueError as e:
            raise NoteError("malformed-checkpoint", str(e)) from None
