"""TLS for DNS over TLS and DNS over HTTPS: the server context, and the demo's certificate."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DOT_ALPN = ["dot"]
DOH_ALPN = ["h2", "http/1.1"]


def server_context(certificate: Path, private_key: Path, alpn: list[str]) -> ssl.SSLContext:
    """Return a server context: TLS 1.2 or later (1.3 preferred), the given ALPN protocols.

    Call `reload` on it to take a renewed certificate: connections open stay as they are,
    new handshakes use the new one.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(alpn)
    context.load_cert_chain(certificate, private_key)
    return context


def reload(context: ssl.SSLContext, certificate: Path, private_key: Path) -> None:
    """Load a renewed certificate into context (ssl.SSLError or OSError: the old one stays)."""
    context.load_cert_chain(certificate, private_key)


def demo_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """Return the demo's self-signed certificate and key for name and loopback, made once.

    Marked DEMO in its subject; never for production (nobody's client trusts it).
    """
    cert, key = directory / "demo-cert.pem", directory / "demo-key.pem"
    if cert.exists() and key.exists():
        return cert, key
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (blockd DEMO)")])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [
        x509.DNSName(name),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(private, hashes.SHA256())
    )
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key
