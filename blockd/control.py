"""The control channel: how operator commands reach the running daemon.

The daemon serves its operator API (blockd.admin) on a Unix socket as well as on its admin
listener. The socket is mode 0600: whoever may open it (root, blockd's own user) may operate
blockd, and needs no token. `blockd sync`, `approve`, `rollback`, `reload`, `selftest`,
`status` and `check` call the daemon through it, so what they change takes effect at once
and what they print is what the daemon enforces. With no daemon listening they act on the
state directory and say so. `--admin URL --token-file F` reaches a daemon's admin API over
TCP instead.

This module is both ends' plumbing: binding the socket safely, and a small HTTP client.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MAX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class ControlError(Exception):
    """The daemon could not be reached, or refused the call; the message says which."""


class NoDaemon(ControlError):
    """No daemon listens on the control socket (absent, or left by one that stopped)."""


class Listener:
    """The daemon's end: a listening Unix socket at a path, mode 0600."""

    def __init__(self, path: Path) -> None:
        """Bind and listen at path, refusing to displace a live daemon's socket.

        A socket file left by a daemon that died is replaced. The socket is bound under a
        temporary name, restricted, then renamed into place, so it is never reachable with
        looser permissions, and a client never meets a half-made file.
        """
        if len(os.fsencode(path)) > MAX_PATH - 12:
            raise OSError(
                f"control socket {path}: the path is too long for a Unix socket "
                f"(at most {MAX_PATH - 12} bytes); set admin.control_socket to a shorter one"
            )
        if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.lstat().st_mode)):
            raise OSError(f"control socket {path}: exists and is not a socket; remove it")
        if path.exists():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.settimeout(1.0)
                    probe.connect(str(path))
            except OSError:
                path.unlink(missing_ok=True)  # left behind by a daemon that is gone
            else:
                raise OSError(
                    f"control socket {path}: another blockd is running with this state "
                    "directory; stop it first"
                )
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(temporary))
            os.chmod(temporary, 0o600)
            sock.listen(64)
            os.replace(temporary, path)
            made = path.lstat()
        except BaseException:
            sock.close()
            temporary.unlink(missing_ok=True)
            raise
        sock.setblocking(False)
        self.sock = sock
        self.path = path
        self._identity = (made.st_dev, made.st_ino)

    def close(self) -> None:
        """Remove the socket file if it is still ours, and close the socket."""
        with contextlib.suppress(OSError):
            now = self.path.lstat()
            if (now.st_dev, now.st_ino) == self._identity:
                self.path.unlink()
        self.sock.close()


def peer_uid(sock: socket.socket | None) -> int | None:
    """Return the user id of the process at the other end of a Unix socket (Linux)."""
    if sock is None or sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    import struct

    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", creds)[1])


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    """Calls the daemon's operator API over the control socket or the admin listener."""

    def __init__(
        self,
        *,
        socket_path: Path | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 600.0,
    ) -> None:
        """Reach the daemon at socket_path, or at url with a bearer token."""
        if (socket_path is None) == (url is None):
            raise ValueError("give a control socket or an admin URL")
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise ControlError(f"--admin must be an http:// or https:// URL, not {url!r}")
        self.socket_path = socket_path
        self.url = url.rstrip("/") if url else None
        self.token = token
        self.timeout = timeout

    @property
    def where(self) -> str:
        """Say where the daemon is reached, for messages."""
        return f"control socket {self.socket_path}" if self.socket_path else f"{self.url}"

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return _UnixConnection(self.socket_path, self.timeout)
        assert self.url is not None
        parts = urlsplit(self.url)
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        return kind(parts.netloc, timeout=self.timeout)

    def call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        """Call the operator API; return its JSON answer or raise ControlError saying why."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        prefix = urlsplit(self.url).path if self.url else ""
        data = json.dumps(body).encode() if body is not None else None
        connection = self._connection()
        try:
            connection.request(method, prefix + path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            if self.socket_path is not None:
                raise NoDaemon(f"no daemon is running (nothing listens on {self.where})") from e
            raise ControlError(f"cannot reach the daemon at {self.where}: {_reason(e)}") from e
        except PermissionError as e:
            raise ControlError(
                f"cannot reach the daemon at {self.where}: permission denied "
                "(run as root or as blockd's user)"
            ) from e
        except (OSError, http.client.HTTPException) as e:
            raise ControlError(f"cannot reach the daemon at {self.where}: {_reason(e)}") from e
        finally:
            connection.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ControlError(
                f"the daemon at {self.where} answered HTTP {response.status} without JSON"
            )
        if response.status >= 400:
            detail = answer.get("detail", raw.decode("utf-8", "replace")[:200])
            raise ControlError(f"the daemon refused: {detail} (HTTP {response.status})")
        return answer


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return os.strerror(e.errno).lower() if e.errno in errno.errorcode else str(e)
    return str(e) or type(e).__name__
