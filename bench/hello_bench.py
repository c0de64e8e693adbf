"""Measure the CPU a ClientHello trickled in 1-byte records and 1-byte reads costs the front.

    make bench-hello   (or: python bench/hello_bench.py)

Feeds the hello as the HTTPS front receives it (one byte per read) to a HelloReader, and, for
comparison, re-parses everything received so far on every read (what the front did before
HelloReader). Prints CPU seconds per hello and the ratio.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import struct
import time

from blockd.http import sni


def trickled_hello(pad: int = 1300) -> bytes:
    """Return a real ClientHello padded to about `pad` bytes, in 1-byte records."""
    context = ssl.create_default_context()
    outgoing = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="www.example.com")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    flight = outgoing.read()
    message = bytearray(flight[5:])
    padding = struct.pack("!HH", 0x3A3A, pad) + b"\x00" * pad  # a GREASE extension (RFC 8701)
    message += padding
    body = len(message) - 4
    message[1:4] = body.to_bytes(3, "big")
    ext_at = _extensions_offset(bytes(message))
    old = int.from_bytes(message[ext_at : ext_at + 2], "big")
    message[ext_at : ext_at + 2] = (old + len(padding)).to_bytes(2, "big")
    return b"".join(struct.pack("!BHH", 22, 0x0301, 1) + bytes([b]) for b in message)


def _extensions_offset(message: bytes) -> int:
    """Return where the extensions length sits in a handshake message."""
    pos = 4 + 2 + 32
    pos += 1 + message[pos]
    pos += 2 + int.from_bytes(message[pos : pos + 2], "big")
    return pos + 1 + message[pos]


def incremental(data: bytes) -> sni.ClientHello | None:
    """Feed one HelloReader a byte per read."""
    reader = sni.HelloReader()
    for i in range(len(data)):
        hello = reader.feed(data[i : i + 1])
        if hello is not None:
            return hello
    return None


def reparse(data: bytes) -> sni.ClientHello | None:
    """Re-parse all received bytes on every read (the old front)."""
    for end, _ in enumerate(itertools.repeat(None, len(data)), start=1):
        hello = sni.parse_client_hello(data[:end])
        if hello is not None:
            return hello
    return None


def cpu(fn: object, data: bytes) -> float:
    """Return the CPU seconds `fn(data)` takes."""
    start = time.process_time()
    assert callable(fn)
    assert fn(data) is not None
    return time.process_time() - start


def main() -> None:
    """Print the comparison."""
    data = trickled_hello()
    new, old = cpu(incremental, data), cpu(reparse, data)
    print(f"hello of {len(data)} bytes in 1-byte records, read 1 byte at a time")
    print(f"incremental HelloReader: {new:.3f} s CPU")
    print(f"re-parse on every read:  {old:.3f} s CPU  ({old / new:.0f}x)")


if __name__ == "__main__":
    main()
