"""Ed25519 keys: generate, load, save, and name them by key id."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFileError(ValueError):
    """A key file or key value could not be used."""


def keyid_of(public_raw: bytes) -> str:
    """Return the key id: hex SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(public_raw).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """A verifying key with its id."""

    keyid: str
    raw: bytes

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        """Build from the 32 raw bytes."""
        if len(raw) != 32:
            raise KeyFileError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
        return cls(keyid_of(raw), raw)

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        """Build from base64 of the raw key (the form used inside trust policies)."""
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError as e:
            raise KeyFileError(f"public key is not valid base64: {e}") from None
        return cls.from_raw(raw)

    @property
    def b64(self) -> str:
        """Return base64 of the raw key."""
        return base64.b64encode(self.raw).decode()

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Check an Ed25519 signature; never raise for a bad one."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key with its public half."""

    private: Ed25519PrivateKey
    public: PublicKey

    @classmethod
    def generate(cls) -> SigningKey:
        """Make a fresh random key."""
        return cls.from_private(Ed25519PrivateKey.generate())

    @classmethod
    def from_private(cls, key: Ed25519PrivateKey) -> SigningKey:
        """Wrap a cryptography private key."""
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(key, PublicKey.from_raw(raw))

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Derive from a 32-byte seed (deterministic test and demo keys only)."""
        return cls.from_private(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def keyid(self) -> str:
        """Return the public key id."""
        return self.public.keyid

    def sign(self, message: bytes) -> bytes:
        """Sign message."""
        return self.private.sign(message)

    def private_pem(self) -> bytes:
        """Return the private key as unencrypted PKCS#8 PEM."""
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def save_private(key: SigningKey, path: Path) -> None:
    """Write a private key file readable by its owner only; refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_pem())


def load_private(path: Path) -> SigningKey:
    """Read a PKCS#8 PEM Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key: {e.strerror}") from None
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not a PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return SigningKey.from_private(key)


def public_pem(key: PublicKey) -> bytes:
    """Return a public key as SubjectPublicKeyInfo PEM."""
    return Ed25519PublicKey.from_public_bytes(key.raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public(path: Path) -> PublicKey:
    """Read a public key: PEM, or one line of base64 of the raw 32 bytes."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key: {e.strerror}") from None
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as e:
            raise KeyFileError(f"{path}: not a PEM public key: {e}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: not an Ed25519 key")
        return PublicKey.from_raw(
            key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
    return PublicKey.from_b64(data.decode("ascii", "replace").strip())
