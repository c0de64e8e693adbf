"""TSIG (RFC 8945, hmac-sha256) for the messages blockd writes as wire bytes itself."""

from __future__ import annotations

import struct
import time

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from blockd.config import TsigKey

FUDGE = 300


def dns_key(key: TsigKey) -> dns.tsig.Key:
    """Return dnspython's form of a configured key."""
    return dns.tsig.Key(key.name + ".", key.secret, dns.tsig.HMAC_SHA256)


class Signer:
    """Sign the messages of one response in order; later ones chain on earlier MACs."""

    def __init__(self, key: dns.tsig.Key, request_mac: bytes, original_id: int) -> None:
        """Answer a request signed with key, whose MAC was request_mac."""
        self.key = key
        self.request_mac = request_mac
        self.original_id = original_id
        self._ctx: dns.tsig.HMACTSig | dns.tsig.GSSTSig | None = None
        self._owner = key.name.to_wire()
        assert self._owner is not None

    def sign(self, wire: bytes) -> bytes:
        """Return wire with its TSIG record appended (ARCOUNT raised by one)."""
        template = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            self.key.algorithm,
            0,
            FUDGE,
            b"",
            self.original_id,
            0,
            b"",
        )
        rdata, self._ctx = dns.tsig.sign(  # type: ignore[no-untyped-call]
            wire, self.key, template, int(time.time()), self.request_mac, self._ctx, True
        )
        rd = rdata.to_wire()
        assert rd is not None and self._owner is not None
        (arcount,) = struct.unpack_from("!H", wire, 10)
        head = wire[:10] + struct.pack("!H", arcount + 1)
        tail = self._owner + struct.pack(
            "!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rd)
        )
        return bytes(head + wire[12:] + tail + rd)


def keyring(key: dns.tsig.Key | None) -> dict[dns.name.Name, dns.tsig.Key] | None:
    """Return the keyring that verifies requests (None: signed requests fail)."""
    return None if key is None else {key.name: key}
