"""Legally required access records: off by default, pseudonymous, encrypted, shredded on time.

Some laws require an ISP to keep traffic data about attempts to reach blocked material for a
minimum time. Only when an operator turns this on does blockd keep, for each blocked
answer, a record outside the Merkle log: the time, the verdict, and a keyed pseudonym of the
client (HMAC-SHA-256 with a key of that period), never the address itself. Each period has
its own random keys, in its own file; records are sealed with AES-256-GCM under that period's
key. When a period passes its retention, blockd destroys the period's keys (crypto-shredding:
the sealed records become unreadable noise) and deletes its data, and the audit log records
the purge. Nothing is ever destroyed before the configured minimum retention.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blockd.audit.private import private_dir
from blockd.files import atomic_write
from blockd.policy.verdict import Verdict

DAY = 86400.0


class RecordsError(Exception):
    """Records cannot be read (the period was shredded) or an action is not allowed."""


@dataclass(frozen=True)
class Purge:
    """One period destroyed."""

    period: int  # index: start time = period * period_seconds
    start: float
    end: float
    records: int


class RecordKeeper:
    """Keep pseudonymous, encrypted, period-keyed records of blocked accesses."""

    def __init__(
        self,
        directory: Path,
        *,
        period: float = DAY,
        keep_min: float = 180 * DAY,
        keep_max: float = 190 * DAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keep records in directory; each period lasts `period` seconds."""
        if keep_max < keep_min:
            raise ValueError("the retention ceiling is below its floor")
        self.dir = directory
        self.period = period
        self.keep_min = keep_min
        self.keep_max = keep_max
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: list[tuple[int, bytes]] = []
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        for sub in (directory, directory / "keys", directory / "data"):
            private_dir(sub)

    def _index(self, ts: float) -> int:
        return int(ts // self.period)

    def _key(self, index: int, *, create: bool) -> tuple[bytes, bytes]:
        """Return (pseudonym key, sealing key) of a period."""
        cached = self._keys.get(index)
        if cached is not None:
            return cached
        path = self.dir / "keys" / f"{index}.key"
        if not path.exists():
            if not create:
                raise RecordsError(f"period {index}: its keys were destroyed or never existed")
            atomic_write(path, os.urandom(64), mode=0o600)
        raw = path.read_bytes()
        if len(raw) != 64:
            raise RecordsError(f"period {index}: key file is damaged")
        keys = (raw[:32], raw[32:])
        self._keys = {k: v for k, v in self._keys.items() if k >= index - 1}
        self._keys[index] = keys
        return keys

    def note(self, client: str, verdict: Verdict, transport: str) -> None:
        """Queue a record of a blocked access (cheap: the sealing happens in flush)."""
        now = self.clock()
        index = self._index(now)
        pseudonym_key, _ = self._key(index, create=True)
        pseudonym = hmac.new(pseudonym_key, client.encode(), hashlib.sha256).hexdigest()
        record = {
            "time": int(now),
            "client": pseudonym,
            "authority": verdict.authority,
            "list": verdict.list,
            "version": verdict.version,
            "action": verdict.action,
            "reference": verdict.entry_ref,
            "transport": transport,
        }
        with self._lock:
            self._pending.append((index, json.dumps(record, sort_keys=True).encode()))

    def flush(self) -> int:
        """Seal and append queued records to their period's file; return how many."""
        with self._lock:
            pending, self._pending = self._pending, []
        by_period: dict[int, list[bytes]] = {}
        for index, plain in pending:
            by_period.setdefault(index, []).append(plain)
        for index, plains in by_period.items():
            _, seal_key = self._key(index, create=True)
            aead = AESGCM(seal_key)
            out = bytearray()
            for plain in plains:
                nonce = os.urandom(12)
                sealed = nonce + aead.encrypt(nonce, plain, str(index).encode())
                out += len(sealed).to_bytes(4, "big") + sealed
            path = self.dir / "data" / f"{index}.rec"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, bytes(out))
                os.fsync(fd)
            finally:
                os.close(fd)
        return len(pending)

    def read(self, index: int) -> list[dict[str, object]]:
        """Return a period's records (for a lawful disclosure); RecordsError once shredded."""
        _, seal_key = self._key(index, create=False)
        aead = AESGCM(seal_key)
        path = self.dir / "data" / f"{index}.rec"
        data = path.read_bytes() if path.exists() else b""
        out, pos = [], 0
        while pos < len(data):
            size = int.from_bytes(data[pos : pos + 4], "big")
            sealed = data[pos + 4 : pos + 4 + size]
            pos += 4 + size
            out.append(json.loads(aead.decrypt(sealed[:12], sealed[12:], str(index).encode())))
        return out

    def periods(self) -> list[int]:
        """Return the periods that still have keys."""
        return sorted(int(p.stem) for p in (self.dir / "keys").glob("*.key"))

    def due(self, now: float | None = None) -> list[int]:
        """Return the periods whose retention ceiling has passed."""
        now = self.clock() if now is None else now
        return [i for i in self.periods() if (i + 1) * self.period + self.keep_max <= now]

    def purge(self, index: int, now: float | None = None) -> Purge:
        """Destroy a period's keys, then its data; refuse before the retention floor."""
        now = self.clock() if now is None else now
        end = (index + 1) * self.period
        if end + self.keep_min > now:
            raise RecordsError(
                f"period {index} is within its minimum retention until "
                f"{time.strftime('%Y-%m-%d', time.gmtime(end + self.keep_min))}"
            )
        data = self.dir / "data" / f"{index}.rec"
        count = _count(data)
        key = self.dir / "keys" / f"{index}.key"
        if key.exists():
            with key.open("r+b") as f:  # overwrite, then unlink: the key is gone from the file
                f.write(b"\0" * 64)
                f.flush()
                os.fsync(f.fileno())
            key.unlink()
        self._keys.pop(index, None)
        data.unlink(missing_ok=True)
        return Purge(index, index * self.period, end, count)


def _count(path: Path) -> int:
    if not path.exists():
        return 0
    data, pos, n = path.read_bytes(), 0, 0
    while pos + 4 <= len(data):
        pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
        n += 1
    return n
