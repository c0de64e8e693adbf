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
from typing import Any

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
        self._names = (ctypes.c_char * (_NAME * size))()
        self.view = memoryview(self._recv_buf)
        recv_base = ctypes.addressof(ctypes.c_char.from_buffer(self._recv_buf))
        self._send_base = ctypes.addressof(ctypes.c_char.from_buffer(self._send_buf))
        names = ctypes.addressof(self._names)
        self._recv_iov = (_Iovec * size)()
        self._send_iov = (_Iovec * size)()
        self._recv = (_Mmsghdr * size)()
        self._send = (_Mmsghdr * size)()
        iov_size = ctypes.sizeof(_Iovec)
        for i in range(size):
            self._recv_iov[i].iov_base = recv_base + i * SLOT
            self._recv_iov[i].iov_len = SLOT
            self._send_iov[i].iov_base = self._send_base + i * SLOT
            hdr = self._recv[i].msg_hdr
            hdr.msg_name = names + i * _NAME
            hdr.msg_namelen = _NAME  # the kernel sets the family's size, which then stays
            hdr.msg_iov = ctypes.addressof(self._recv_iov) + i * iov_size
            hdr.msg_iovlen = 1
            out = self._send[i].msg_hdr
            out.msg_iov = ctypes.addressof(self._send_iov) + i * iov_size
            out.msg_iovlen = 1
        self._names_addr = names
        self._recv_addr = ctypes.addressof(self._recv)
        self._send_addr = ctypes.addressof(self._send)
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
        m = self._recv[i]
        if m.msg_hdr.msg_flags & MSG_TRUNC:
            return None
        start = i * SLOT
        return bytes(self.view[start : start + m.msg_len])

    def client(self, i: int) -> str:
        """Return the source address of datagram i as text."""
        at = self._names_addr + i * _NAME
        if self.family == socket.AF_INET6:
            raw = ctypes.string_at(at + 8, 16)
        else:
            raw = ctypes.string_at(at + 4, 4)
        text = self._clients.get(raw)
        if text is None:
            if len(self._clients) >= 4096:
                self._clients.clear()
            text = socket.inet_ntop(self.family, raw)
            self._clients[raw] = text
        return text

    def address(self, i: int) -> tuple[str | int, ...]:
        """Return the source address of datagram i as a socket-module address tuple."""
        raw = ctypes.string_at(self._names_addr + i * _NAME, 28)
        port = int.from_bytes(raw[2:4], "big")
        if self.family == socket.AF_INET6:
            return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, 0, 0)
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)

    def reply(self, i: int, data: bytes) -> bool:
        """Queue data as the answer to datagram i; False when it does not fit a slot."""
        k = self._pending
        if len(data) > SLOT:
            return False
        start = k * SLOT
        self._send_buf[start : start + len(data)] = data
        self._send_iov[k].iov_len = len(data)
        out = self._send[k].msg_hdr
        out.msg_name = self._names_addr + i * _NAME
        out.msg_namelen = self._recv[i].msg_hdr.msg_namelen
        self._pending = k + 1
        return True

    def flush(self) -> int:
        """Send the queued replies; return how many the kernel did not take."""
        total, sent = self._pending, 0
        self._pending = 0
        while sent < total:
            at = self._send_addr + sent * ctypes.sizeof(_Mmsghdr)
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
