"""Fetch signed list envelopes and body files from https:// sources and file:// drops.

The fetcher only moves bytes: it bounds their size and the time spent getting them (endless-data
and slow-retrieval protection) and leaves signature verification to the caller. Every failure is
a `FetchError` whose `reason` is a stable, low-cardinality slug for metric labels.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import re
import ssl
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, get_args
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
from yarl import URL

from blockd import __version__

FetchFailure = Literal[
    "too-large", "deadline", "http-status", "tls", "connect", "not-found", "bad-url", "io"
]
FETCH_FAILURES: tuple[FetchFailure, ...] = get_args(FetchFailure)
_Outcome = tuple[Literal["ok", "not-modified"], bytes | None, str | None, str | None]

MAX_REDIRECTS = 3
USER_AGENT = f"blockd/{__version__}"
_CHUNK = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_BESIDE_NAME = re.compile(r"[A-Za-z0-9_+~-][A-Za-z0-9._+~-]{0,254}")


class FetchError(Exception):
    """A retrieval failed; `reason` is one of `FETCH_FAILURES`."""

    def __init__(self, reason: FetchFailure, message: str) -> None:
        super().__init__(message)
        self.reason: FetchFailure = reason


@dataclass(frozen=True)
class FetchResult:
    """The bytes retrieved, or word that the cached copy is still current."""

    status: Literal["ok", "not-modified"]
    data: bytes | None  # None when not-modified
    etag: str | None
    last_modified: str | None
    attempts: int
    elapsed: float  # seconds, retries and back-off included


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one retrieval."""

    max_bytes: int
    deadline: float  # seconds for everything: every attempt, redirect and back-off sleep
    attempt_timeout: float  # seconds to connect and receive headers; also the longest body stall
    retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    ca_file: str | None = None  # None: the system trust store; else only this PEM bundle

    def __post_init__(self) -> None:
        """Reject limits that cannot work."""
        if self.max_bytes < 0 or self.retries < 0:
            raise ValueError("max_bytes and retries must not be negative")
        if self.deadline <= 0 or self.attempt_timeout <= 0:
            raise ValueError("deadline and attempt_timeout must be positive")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must not be negative")


class _Retry(Exception):
    """A transient failure of one attempt; the caller may try again."""

    def __init__(self, error: FetchError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def redact(url: str) -> str:
    """Return url fit for logs and errors: no userinfo, no query values, one printable line."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        query = "<redacted>" if parts.query else ""
        shown = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        shown = "<unparseable URL>"
    shown = "".join(c if c.isprintable() else "?" for c in shown)
    return shown if len(shown) <= 200 else shown[:197] + "..."


def resolve_beside(envelope_url: str, name: str) -> str:
    """Return the URL of body file `name` delivered in the same directory as the envelope."""
    if not _BESIDE_NAME.fullmatch(name) or ".." in name:
        shown = "".join(c if c.isprintable() else "?" for c in name[:80])
        raise FetchError(
            "bad-url",
            f"body file name {shown!r} is not a plain file name "
            "(letters, digits, '.', '_', '-', '+', '~'; no '..', no leading '.')",
        )
    try:
        parts = urlsplit(envelope_url)
    except ValueError:
        raise FetchError("bad-url", f"cannot parse envelope URL {redact(envelope_url)}") from None
    if parts.scheme not in ("https", "http", "file"):
        raise FetchError("bad-url", f"envelope URL {redact(envelope_url)} is not https or file")
    directory = parts.path[: parts.path.rfind("/") + 1] or "/"
    # The query and fragment belong to the envelope request, not to the body file.
    return urlunsplit((parts.scheme, parts.netloc, directory + name, "", ""))


def _retry_after(value: str | None) -> float | None:
    """Parse Retry-After (delay-seconds or HTTP-date) into seconds from now."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(exc: BaseException) -> str:
    """Return the underlying cause of a client error as one short line."""
    cause: BaseException = exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
    text = getattr(cause, "verify_message", None) or getattr(cause, "strerror", None) or str(cause)
    text = " ".join(str(text).split()) or type(cause).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class Fetcher:
    """Retrieve list envelopes and body files; owns one HTTP client session."""

    def __init__(
        self,
        *,
        allow_http: bool = False,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Refuse plain http:// unless allow_http; rng and sleep drive retry back-off."""
        self._allow_http = allow_http
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[tuple[str | None, int, int], ssl.SSLContext] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session and its connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def fetch(
        self,
        url: str,
        policy: FetchPolicy,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> FetchResult:
        """Retrieve url within policy; conditional on etag / last_modified when given."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        attempts = [0]
        shown = redact(url)
        try:
            async with asyncio.timeout(policy.deadline):
                if url.partition(":")[0].lower() == "file":
                    attempts[0] = 1
                    status, data, tag, modified = await _read_file(url, policy.max_bytes, etag)
                else:
                    status, data, tag, modified = await self._fetch_http(
                        url, policy, etag, last_modified, attempts, start + policy.deadline
                    )
        except TimeoutError:
            raise FetchError(
                "deadline",
                f"fetching {shown} did not finish within the {policy.deadline:g}s deadline "
                f"(attempt {attempts[0]})",
            ) from None
        return FetchResult(status, data, tag, modified, attempts[0], loop.time() - start)

    async def _fetch_http(
        self,
        url: str,
        policy: FetchPolicy,
        etag: str | None,
        last_modified: str | None,
        attempts: list[int],
        deadline_at: float,
    ) -> _Outcome:
        """Run attempts with exponential back-off and full jitter between them."""
        target = self._check_url(url)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if etag is not None:
            headers["If-None-Match"] = etag
        if last_modified is not None:
            headers["If-Modified-Since"] = last_modified
        loop = asyncio.get_running_loop()
        while True:
            attempts[0] += 1
            try:
                status, data, tag, modified = await self._attempt(target, policy, headers)
            except _Retry as failure:
                error, cause = failure.error, failure.__cause__
                if attempts[0] > policy.retries:
                    tries = "1 attempt" if attempts[0] == 1 else f"{attempts[0]} attempts"
                    raise FetchError(error.reason, f"{error} (gave up after {tries})") from cause
                ceiling = min(policy.backoff_max, policy.backoff_base * 2 ** (attempts[0] - 1))
                delay = self._rng.uniform(0.0, ceiling)
                if failure.retry_after is not None:
                    delay = max(delay, failure.retry_after)
                if delay >= deadline_at - loop.time():
                    raise FetchError(
                        error.reason,
                        f"{error} (attempt {attempts[0]}; a retry after {delay:.1f}s "
                        "would pass the deadline)",
                    ) from cause
                await self._sleep(delay)
                continue
            if status == "not-modified":
                tag = tag if tag is not None else etag
                modified = modified if modified is not None else last_modified
            return status, data, tag, modified

    def _check_url(self, url: str) -> URL:
        """Parse an http(s) URL, refusing plain http unless allowed."""
        try:
            parsed = URL(url)
        except (TypeError, ValueError):
            raise FetchError("bad-url", f"cannot parse URL {redact(url)}") from None
        if parsed.scheme == "http" and not self._allow_http:
            raise FetchError("bad-url", f"refusing plain http:// for {redact(url)}; use https://")
        if parsed.scheme not in ("https", "http") or not parsed.host:
            raise FetchError(
                "bad-url", f"unsupported URL {redact(url)}; use https://host/... or file:///path"
            )
        return parsed.with_fragment(None)

    def _ssl_context(self, ca_file: str | None) -> ssl.SSLContext:
        """Return a verifying TLS context for ca_file (None: system store); reload on change."""
        try:
            st = os.stat(ca_file) if ca_file is not None else None
            key = (ca_file, st.st_mtime_ns if st else 0, st.st_size if st else 0)
            if key not in self._ssl:
                context = ssl.create_default_context(cafile=ca_file)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                self._ssl = {k: v for k, v in self._ssl.items() if k[0] != ca_file}
                self._ssl[key] = context
            return self._ssl[key]
        except (OSError, ssl.SSLError) as e:
            raise FetchError("tls", f"cannot load CA bundle {ca_file}: {_describe(e)}") from e

    def _client(self) -> aiohttp.ClientSession:
        """Return the session, creating it on first use (inside the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),  # asyncio timeouts bound every step
                auto_decompress=False,  # a compressed body could expand past max_bytes
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def _attempt(self, url: URL, policy: FetchPolicy, headers: dict[str, str]) -> _Outcome:
        """Make one request, following at most MAX_REDIRECTS https redirects."""
        context = self._ssl_context(policy.ca_file)
        session = self._client()
        for _ in range(MAX_REDIRECTS + 1):
            shown = redact(str(url))
            try:
                async with asyncio.timeout(policy.attempt_timeout):
                    response = await session.get(
                        url, headers=headers, ssl=context, allow_redirects=False
                    )
            except TimeoutError:
                error = FetchError(
                    "deadline", f"no response from {shown} within {policy.attempt_timeout:g}s"
                )
                raise _Retry(error) from None
            except (aiohttp.ClientSSLError, ssl.SSLError) as e:
                raise FetchError("tls", f"TLS failure fetching {shown}: {_describe(e)}") from e
            except aiohttp.InvalidURL as e:
                raise FetchError("bad-url", f"invalid URL {shown}") from e
            except aiohttp.ClientError as e:
                raise _Retry(FetchError("connect", f"cannot fetch {shown}: {_describe(e)}")) from e
            try:
                if response.status in _REDIRECT_STATUSES:
                    url = self._redirect_target(url, response)
                    response.close()
                    continue
                result = await self._read_response(response, policy, shown, headers)
            except BaseException:
                response.close()  # drop the connection: an unread body must not be reused
                raise
            response.release()
            return result
        raise FetchError("http-status", f"more than {MAX_REDIRECTS} redirects fetching {shown}")

    def _redirect_target(self, url: URL, response: aiohttp.ClientResponse) -> URL:
        """Return where a redirect points, refusing anything but https (or http to http)."""
        location = response.headers.get("Location")
        shown = redact(str(url))
        if not location:
            raise FetchError("http-status", f"HTTP {response.status} without Location from {shown}")
        try:
            target = url.join(URL(location)).with_fragment(None)
        except (TypeError, ValueError):
            raise FetchError("bad-url", f"unparseable redirect from {shown}") from None
        allowed = ("https", "http") if url.scheme == "http" and self._allow_http else ("https",)
        if target.scheme not in allowed or not target.host:
            raise FetchError(
                "bad-url", f"refusing redirect from {shown} to {redact(str(target))} (not https)"
            )
        return target

    async def _read_response(
        self,
        response: aiohttp.ClientResponse,
        policy: FetchPolicy,
        shown: str,
        headers: dict[str, str],
    ) -> _Outcome:
        """Turn a final response into a result, reading at most max_bytes of body."""
        tag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        status = response.status
        if status == 304 and ("If-None-Match" in headers or "If-Modified-Since" in headers):
            return "not-modified", None, tag, modified
        if status in (404, 410):
            raise FetchError("not-found", f"HTTP {status} fetching {shown}")
        if status == 429 or 500 <= status <= 599:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise _Retry(FetchError("http-status", f"HTTP {status} fetching {shown}"), retry_after)
        if status != 200:
            raise FetchError("http-status", f"HTTP {status} fetching {shown}")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise FetchError("http-status", f"unrequested Content-Encoding {encoding} from {shown}")
        too_large = FetchError("too-large", f"{shown} is larger than {policy.max_bytes} bytes")
        if response.content_length is not None and response.content_length > policy.max_bytes:
            raise too_large
        body = bytearray()
        while True:
            want = min(_CHUNK, policy.max_bytes - len(body)) or 1  # 1: probe for excess bytes
            try:
                async with asyncio.timeout(policy.attempt_timeout):
                    chunk = await response.content.read(want)
            except TimeoutError:
                error = FetchError(
                    "deadline", f"{shown} stalled for {policy.attempt_timeout:g}s mid-body"
                )
                raise _Retry(error) from None
            except aiohttp.ClientError as e:
                raise _Retry(FetchError("connect", f"reading {shown}: {_describe(e)}")) from e
            if not chunk:
                return "ok", bytes(body), tag, modified
            if len(body) + len(chunk) > policy.max_bytes:
                raise too_large
            body += chunk


def _file_path(url: str) -> str:
    """Return the local path of a file:///abs/path URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if (
        parts is None
        or url[:8].lower() != "file:///"
        or parts.netloc
        or parts.query
        or parts.fragment
    ):
        raise FetchError("bad-url", f"unsupported file URL {redact(url)}; use file:///abs/path")
    path = unquote(parts.path)
    if "\x00" in path:
        raise FetchError("bad-url", f"file URL {redact(url)} contains a NUL byte")
    return path


async def _read_file(url: str, max_bytes: int, etag: str | None) -> _Outcome:
    """Read a file:// source in a worker thread so the event loop keeps serving."""
    path = _file_path(url)
    return await asyncio.to_thread(_read_file_blocking, path, url, max_bytes, etag)


def _read_file_blocking(path: str, url: str, max_bytes: int, etag: str | None) -> _Outcome:
    """Read path capped at max_bytes; etag is the cheap token '"<size>-<mtime_ns>"'."""
    shown = redact(url)
    try:
        # O_NONBLOCK: opening a FIFO dropped in place of a list must not hang the worker.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FetchError("not-found", f"{shown} does not exist") from None
    except OSError as e:
        raise FetchError("io", f"cannot open {shown}: {e.strerror}") from e
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise FetchError("io", f"{shown} is not a regular file")
        tag = f'"{before.st_size}-{before.st_mtime_ns}"'
        modified = email.utils.formatdate(before.st_mtime, usegmt=True)
        if etag is not None and etag == tag:
            return "not-modified", None, tag, modified
        too_large = FetchError("too-large", f"{shown} is larger than {max_bytes} bytes")
        if before.st_size > max_bytes:
            raise too_large
        body = bytearray()
        while chunk := os.read(fd, min(_CHUNK, max_bytes - len(body)) or 1):
            if len(body) + len(chunk) > max_bytes:
                raise too_large  # the file grew after fstat
            body += chunk
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise FetchError("io", f"{shown} changed while being read")
        return "ok", bytes(body), tag, modified
    except OSError as e:
        raise FetchError("io", f"cannot read {shown}: {e.strerror}") from e
    finally:
        os.close(fd)
