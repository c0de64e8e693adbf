"""Batched UDP I/O with recvmmsg(2)/sendmmsg(2) through ctypes (Linux only).

Python's socket module reads and writes one datagram per system call; at DNS rates the
calls, not the answers, are most of the cost. A Batch reads up to `size` datagrams in one
recvmmsg and sends the replies in one sendmmsg, each reply addressed with the raw sockaddr
its query came from (no conversion to and from Python tuples on the way back).
`available()` says whether the platform has both calls; otherwise the server keeps the
portable one-datagram path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import sys
from typing import Any, Literal

SLOT = 4096  # bytes per datagram read; a longer query is flagged truncated and dropped
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


_NAME = 128  # sizeof(struct sockaddr_storage)


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    recv.restype = ctypes.c_int
    send.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    send.restype = ctypes.c_int
    return libc


_LIBC = _libc()


def available() -> bool:
    """Return whether recvmmsg and sendmmsg can be used here."""
    return _LIBC is not None


_PTR: Literal["I", "Q"] = "Q" if ctypes.sizeof(ctypes.c_void_p) == 8 else "I"
_SIZE_T: Literal["I", "Q"] = "Q" if ctypes.sizeof(ctypes.c_size_t) == 8 else "I"
_HDR = ctypes.sizeof(_Mmsghdr)
# Word indexes of the fields the hot path touches, read and written through memoryviews
# (much cheaper than ctypes attribute access).
_LEN4 = _Mmsghdr.msg_len.offset // 4
_FLAGS4 = _Msghdr.msg_flags.offset // 4
_NAMELEN4 = _Msghdr.msg_namelen.offset // 4
_NAMEP = _Msghdr.msg_name.offset // ctypes.sizeof(ctypes.c_void_p)


class Batch:
    """Buffers for reading and answering up to `size` datagrams per system call."""

    def __init__(self, sock: socket.socket, size: int = 64) -> None:
        """Prepare buffers for sock (a bound, non-blocking UDP socket)."""
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        self.fd = sock.fileno()
        self.size = size
        self.family = sock.family
        self._recv_buf = bytearray(size * SLOT)
        self._send_buf = bytearray(size * SLOT)
        self._names_buf = bytearray(size * _NAME)
        self._recv_mem = bytearray(size * _HDR)
        self._send_mem = bytearray(size * _HDR)
        self._iov_mem = bytearray(2 * size * ctypes.sizeof(_Iovec))
        recv_hdrs = (_Mmsghdr * size).from_buffer(self._recv_mem)
        send_hdrs = (_Mmsghdr * size).from_buffer(self._send_mem)
        iovs = (_Iovec * (2 * size)).from_buffer(self._iov_mem)  # receive slots, then send
        recv_base = _address(self._recv_buf)
        send_base = _address(self._send_buf)
        self._names_base = _address(self._names_buf)
        iov_base = _address(self._iov_mem)
        iov_size = ctypes.sizeof(_Iovec)
        for i in range(size):
            iovs[i].iov_base = recv_base + i * SLOT
            iovs[i].iov_len = SLOT
            iovs[size + i].iov_base = send_base + i * SLOT
            hdr = recv_hdrs[i].msg_hdr
            hdr.msg_name = self._names_base + i * _NAME
            hdr.msg_namelen = _NAME  # the kernel sets the family's size, which then stays
            hdr.msg_iov = iov_base + i * iov_size
            hdr.msg_iovlen = 1
            out = send_hdrs[i].msg_hdr
            out.msg_iov = iov_base + (size + i) * iov_size
            out.msg_iovlen = 1
        del recv_hdrs, send_hdrs, iovs  # views onto the buffers above, no longer needed
        self._recv_addr = _address(self._recv_mem)
        self._send_addr = _address(self._send_mem)
        self.view = memoryview(self._recv_buf)
        self._names = memoryview(self._names_buf)
        self._recv32 = memoryview(self._recv_mem).cast("I")
        self._send32 = memoryview(self._send_mem).cast("I")
        self._send_ptr = memoryview(self._send_mem).cast(_PTR)
        self._iov_len = memoryview(self._iov_mem).cast(_SIZE_T)
        self._words = _HDR // 4
        self._ptrs = _HDR // ctypes.sizeof(ctypes.c_void_p)
        v6 = self.family == socket.AF_INET6
        self._addr_at, self._addr_len = (8, 16) if v6 else (4, 4)
        self._clients: dict[bytes, str] = {}
        self._pending = 0  # replies queued for the next flush

    def receive(self) -> int:
        """Read up to `size` datagrams; return how many (0 when none is waiting)."""
        n = _LIBC.recvmmsg(self.fd, self._recv_addr, self.size, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            if err in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                return 0  # an ICMP error queued on the socket; it is consumed by the call
            raise OSError(err, "recvmmsg failed")
        return int(n)

    def datagram(self, i: int) -> bytes | None:
        """Return datagram i of the last receive (None when it was longer than a slot)."""
        base = i * self._words
        if self._recv32[base + _FLAGS4] & MSG_TRUNC:
            return None
        start = i * SLOT
        return bytes(self.view[start : start + self._recv32[base + _LEN4]])

    def received(self, n: int) -> list[tuple[bytes | None, str]]:
        """Return (datagram, or None when longer than a slot; client) for the last n read."""
        # Hot path: one call per batch instead of two per datagram.
        r32, view, words = self._recv32, self.view, self._words
        names, addr_at, addr_len, clients = (
            self._names,
            self._addr_at,
            self._addr_len,
            self._clients,
        )
        out: list[tuple[bytes | None, str]] = []
        for i in range(n):
            base, start = i * words, i * SLOT
            if r32[base + _FLAGS4] & MSG_TRUNC:
                data = None
            else:
                data = bytes(view[start : start + r32[base + _LEN4]])
            at = i * _NAME + addr_at
            raw = bytes(names[at : at + addr_len])
            text = clients.get(raw)
            if text is None:
                text = self.client(i)
            out.append((data, text))
        return out

    def client(self, i: int) -> str:
        """Return the source address of datagram i as text."""
        at = i * _NAME + self._addr_at
        raw = bytes(self._names[at : at + self._addr_len])
        text = self._clients.get(raw)
        if text is None:
            if len(self._clients) >= 4096:
                self._clients.clear()
            text = socket.inet_ntop(self.family, raw)
            self._clients[raw] = text
        return text

    def address(self, i: int) -> tuple[str | int, ...]:
        """Return the source address of datagram i as a socket-module address tuple."""
        at = i * _NAME
        port = int.from_bytes(self._names[at + 2 : at + 4], "big")
        if self.family == socket.AF_INET6:
            return (self.client(i), port, 0, 0)
        return (self.client(i), port)

    def reply(self, i: int, data: bytes) -> bool:
        """Queue data as the answer to datagram i; False when it does not fit a slot."""
        n = len(data)
        if n > SLOT:
            return False
        k = self._pending
        start = k * SLOT
        self._send_buf[start : start + n] = data
        self._iov_len[2 * (self.size + k) + 1] = n
        self._send_ptr[k * self._ptrs + _NAMEP] = self._names_base + i * _NAME
        self._send32[k * self._words + _NAMELEN4] = self._recv32[i * self._words + _NAMELEN4]
        self._pending = k + 1
        return True

    def flush(self) -> int:
        """Send the queued replies; return how many the kernel did not take."""
        total, sent = self._pending, 0
        self._pending = 0
        while sent < total:
            at = self._send_addr + sent * _HDR
            n = _LIBC.sendmmsg(self.fd, at, total - sent, MSG_DONTWAIT)
            if n <= 0:
                err = ctypes.get_errno()
                if n < 0 and err == errno.EINTR:
                    continue
                if n < 0 and err not in (errno.EAGAIN, errno.ENOBUFS):
                    sent += 1  # this destination failed (e.g. unreachable): skip it
                    continue
                return total - sent
            sent += n
        return 0


def _address(buf: bytearray) -> int:
    """Return the address of a bytearray's storage (it must never be resized)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))
