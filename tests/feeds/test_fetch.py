"""The list fetcher against a real HTTPS server on loopback and real files."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp.streams
import pytest
import trustme

from blockd import __version__
from blockd.feeds.fetch import (
    FETCH_FAILURES,
    Fetcher,
    FetchError,
    FetchPolicy,
    resolve_beside,
)

if TYPE_CHECKING:
    from tests.feedserver import FeedServer

pytest_plugins = ["tests.feedserver"]

LIST = b'{"payloadType": "application/vnd.blockd.list.v1+json", "payload": "", "signatures": []}'
LAST_MODIFIED = "Tue, 01 Apr 2025 10:00:00 GMT"


@pytest.fixture
def sleeps() -> list[float]:
    """Collect the back-off delays the fetcher asks for."""
    return []


@pytest.fixture
async def fetcher(sleeps: list[float]) -> AsyncIterator[Fetcher]:
    """Yield a Fetcher with seeded jitter whose back-off sleeps are recorded, not slept."""

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    async with Fetcher(rng=random.Random(7), sleep=sleep) as f:
        yield f


def policy(server: FeedServer | None = None, **overrides: Any) -> FetchPolicy:
    """Return a policy generous enough for loopback, trusting server's CA."""
    values: dict[str, Any] = {
        "max_bytes": 1 << 20,
        "deadline": 5.0,
        "attempt_timeout": 2.0,
        "ca_file": server.ca_file if server else None,
    }
    return FetchPolicy(**(values | overrides))


async def test_fetches_list_bytes_and_validators(fetcher: Fetcher, feed_server: FeedServer) -> None:
    route = feed_server.route("/iwf/list.dsse", LIST, etag='"v1"', last_modified=LAST_MODIFIED)

    result = await fetcher.fetch(feed_server.url("/iwf/list.dsse"), policy(feed_server))

    assert result.status == "ok"
    assert result.data == LIST
    assert (result.etag, result.last_modified) == ('"v1"', LAST_MODIFIED)
    assert result.attempts == 1
    assert 0 < result.elapsed < 5
    assert route.request_headers[0]["User-Agent"] == f"blockd/{__version__}"


async def test_etag_match_gives_not_modified(fetcher: Fetcher, feed_server: FeedServer) -> None:
    route = feed_server.route("/list", LIST, etag='"v1"')

    result = await fetcher.fetch(feed_server.url("/list"), policy(feed_server), etag='"v1"')

    assert (result.status, result.data, result.etag) == ("not-modified", None, '"v1"')
    assert route.request_headers[0]["If-None-Match"] == '"v1"'


async def test_last_modified_match_gives_not_modified(
    fetcher: Fetcher, feed_server: FeedServer
) -> None:
    feed_server.route("/list", LIST, last_modified=LAST_MODIFIED)
    url = feed_server.url("/list")

    result = await fetcher.fetch(url, policy(feed_server), last_modified=LAST_MODIFIED)
    older = await fetcher.fetch(
        url, policy(feed_server), last_modified="Mon, 31 Mar 2025 10:00:00 GMT"
    )

    assert (result.status, result.data, result.last_modified) == (
        "not-modified",
        None,
        LAST_MODIFIED,
    )
    assert (older.status, older.data) == ("ok", LIST)


async def test_content_length_over_cap_is_refused_without_retry(
    fetcher: Fetcher, feed_server: FeedServer, sleeps: list[float]
) -> None:
    route = feed_server.route("/big", b"x" * 5000)

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(feed_server.url("/big"), policy(feed_server, max_bytes=4096))

    assert caught.value.reason == "too-large"
    assert (route.requests, sleeps) == (1, [])


async def test_endless_body_is_cut_off_at_the_cap(
    fetcher: Fetcher, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = feed_server.route("/endless", oversize=True)
    received = 0
    read = aiohttp.streams.StreamReader.read

    async def counting_read(self: aiohttp.streams.StreamReader, n: int = -1) -> bytes:
        nonlocal received
        data = await read(self, n)
        received += len(data)
        return data

    monkeypatch.setattr(aiohttp.streams.StreamReader, "read", counting_read)
    cap = 100_000

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(feed_server.url("/endless"), policy(feed_server, max_bytes=cap))

    assert caught.value.reason == "too-large"
    assert cap < received <= cap + 1  # read one byte past the cap, never a buffer more
    await asyncio.wait_for(route.disconnected.wait(), 2)  # the connection was dropped
    assert route.requests == 1


async def test_trickling_server_hits_the_deadline(
    fetcher: Fetcher, feed_server: FeedServer
) -> None:
    route = feed_server.route("/slow", b"x" * 100, trickle=(10, 0.1))  # 1 s in total
    started = time.monotonic()

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(
            feed_server.url("/slow"), policy(feed_server, deadline=0.4, attempt_timeout=0.3)
        )

    assert caught.value.reason == "deadline"
    assert 0.35 < time.monotonic() - started < 0.9
    await asyncio.wait_for(route.disconnected.wait(), 2)


async def test_503_is_retried_with_jittered_backoff(
    fetcher: Fetcher, feed_server: FeedServer, sleeps: list[float]
) -> None:
    route = feed_server.route("/list", LIST, fail_first=2)

    result = await fetcher.fetch(feed_server.url("/list"), policy(feed_server))

    assert (result.status, result.data, result.attempts) == ("ok", LIST, 3)
    assert route.requests == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5  # full jitter: uniform(0, base * 2**0)
    assert 0 <= sleeps[1] <= 1.0  # uniform(0, base * 2**1)


async def test_429_retry_after_is_honoured_within_the_deadline(
    fetcher: Fetcher, feed_server: FeedServer, sleeps: list[float]
) -> None:
    feed_server.route("/list", LIST, fail_first=1, fail_status=429, retry_after="3")

    result = await fetcher.fetch(feed_server.url("/list"), policy(feed_server))

    assert (result.status, result.attempts, sleeps) == ("ok", 2, [3.0])


async def test_retry_after_beyond_the_deadline_fails_at_once(
    fetcher: Fetcher, feed_server: FeedServer, sleeps: list[float]
) -> None:
    route = feed_server.route("/list", LIST, fail_first=1, fail_status=429, retry_after="60")

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(feed_server.url("/list"), policy(feed_server))

    assert caught.value.reason == "http-status"
    assert (route.requests, sleeps) == (1, [])


@pytest.mark.parametrize(("status", "reason"), [(404, "not-found"), (403, "http-status")])
async def test_client_errors_are_not_retried(
    fetcher: Fetcher, feed_server: FeedServer, sleeps: list[float], status: int, reason: str
) -> None:
    route = feed_server.route("/list", status=status)

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(feed_server.url("/list"), policy(feed_server))

    assert caught.value.reason == reason
    assert (route.requests, sleeps) == (1, [])


async def test_error_messages_hide_credentials(fetcher: Fetcher, feed_server: FeedServer) -> None:
    url = feed_server.url("/gone?token=s3cret").replace("https://", "https://iwf:hunter2@")

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(url, policy(feed_server))

    message = str(caught.value)
    assert "/gone" in message
    assert "\n" not in message
    assert "hunter2" not in message
    assert "s3cret" not in message


async def test_server_from_an_untrusted_ca_is_refused(
    fetcher: Fetcher, feed_server: FeedServer, tmp_path: Path, sleeps: list[float]
) -> None:
    route = feed_server.route("/list", LIST)
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))

    for ca_file in (str(other_ca), None):  # None: the system trust store
        with pytest.raises(FetchError) as caught:
            await fetcher.fetch(feed_server.url("/list"), policy(ca_file=ca_file))
        assert caught.value.reason == "tls"

    assert (route.requests, sleeps) == (0, [])


async def test_plain_http_is_refused_unless_allowed(
    fetcher: Fetcher, plain_feed_server: FeedServer
) -> None:
    route = plain_feed_server.route("/list", LIST)

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(plain_feed_server.url("/list"), policy())
    async with Fetcher(allow_http=True) as lax:
        result = await lax.fetch(plain_feed_server.url("/list"), policy())

    assert caught.value.reason == "bad-url"
    assert result.data == LIST
    assert route.requests == 1


async def test_redirects_are_followed_to_https_only(
    fetcher: Fetcher, feed_server: FeedServer
) -> None:
    feed_server.route("/list", LIST)
    feed_server.route("/old", status=301, headers={"Location": "/list"})
    feed_server.route("/loop", status=302, headers={"Location": "/loop"})
    feed_server.route("/down", status=302, headers={"Location": "http://127.0.0.1:1/list"})

    moved = await fetcher.fetch(feed_server.url("/old"), policy(feed_server))
    with pytest.raises(FetchError) as looped:
        await fetcher.fetch(feed_server.url("/loop"), policy(feed_server))
    with pytest.raises(FetchError) as downgraded:
        await fetcher.fetch(feed_server.url("/down"), policy(feed_server))

    assert moved.data == LIST
    assert looped.value.reason == "http-status"
    assert downgraded.value.reason == "bad-url"


async def test_refused_connection_is_retried_then_reported(
    fetcher: Fetcher, sleeps: list[float]
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago refuses connections
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()

    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(f"https://127.0.0.1:{port}/list", policy(deadline=2.0))

    assert caught.value.reason == "connect"
    assert "4 attempts" in str(caught.value)
    assert len(sleeps) == 3
    assert time.monotonic() - started < 2.0


async def test_file_source(fetcher: Fetcher, tmp_path: Path) -> None:
    drop = tmp_path / "list.dsse"
    drop.write_bytes(LIST)

    first = await fetcher.fetch(drop.as_uri(), policy())
    again = await fetcher.fetch(drop.as_uri(), policy(), etag=first.etag)

    assert (first.status, first.data, first.attempts) == ("ok", LIST, 1)
    stat = drop.stat()
    assert first.etag == f'"{stat.st_size}-{stat.st_mtime_ns}"'
    assert (again.status, again.data, again.etag) == ("not-modified", None, first.etag)


async def test_file_source_changed_since_etag_is_read_again(
    fetcher: Fetcher, tmp_path: Path
) -> None:
    drop = tmp_path / "list.dsse"
    drop.write_bytes(LIST)
    first = await fetcher.fetch(drop.as_uri(), policy())
    drop.write_bytes(LIST + b" ")
    os.utime(drop, ns=(1, 1))

    second = await fetcher.fetch(drop.as_uri(), policy(), etag=first.etag)

    assert (second.status, second.data) == ("ok", LIST + b" ")


async def test_file_source_failures(fetcher: Fetcher, tmp_path: Path) -> None:
    big = tmp_path / "big.dsse"
    big.write_bytes(b"x" * 5000)

    with pytest.raises(FetchError) as missing:
        await fetcher.fetch((tmp_path / "absent.dsse").as_uri(), policy())
    with pytest.raises(FetchError) as too_large:
        await fetcher.fetch(big.as_uri(), policy(max_bytes=4096))
    with pytest.raises(FetchError) as directory:
        await fetcher.fetch(tmp_path.as_uri(), policy())

    assert missing.value.reason == "not-found"
    assert too_large.value.reason == "too-large"
    assert directory.value.reason == "io"


@pytest.mark.parametrize(
    "url",
    [
        "file:relative/list.dsse",
        "file:/abs/list.dsse",
        "file://host/abs/list.dsse",
        "file://localhost/abs/list.dsse",
        "file:///abs/list.dsse?x=1",
        "ftp://127.0.0.1/list.dsse",
        "https:///list.dsse",
        "list.dsse",
    ],
)
async def test_unsupported_urls_are_refused(fetcher: Fetcher, url: str) -> None:
    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(url, policy())

    assert caught.value.reason == "bad-url"


@pytest.mark.parametrize(
    ("envelope", "body"),
    [
        ("https://feeds.example/iwf/list.dsse", "https://feeds.example/iwf/body.txt"),
        ("https://feeds.example/iwf/list.dsse?key=1#x", "https://feeds.example/iwf/body.txt"),
        ("https://feeds.example", "https://feeds.example/body.txt"),
        ("file:///srv/drop/list.dsse", "file:///srv/drop/body.txt"),
    ],
)
def test_resolve_beside(envelope: str, body: str) -> None:
    assert resolve_beside(envelope, "body.txt") == body


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../etc/passwd",
        "a/b.txt",
        "a\\b.txt",
        "a..b",
        "https://evil.example/body",
        "file:body",
        "%2e%2e",
        "body.txt?x",
        "body\n.txt",
        ".hidden",
    ],
)
def test_resolve_beside_refuses_hostile_names(name: str) -> None:
    with pytest.raises(FetchError) as caught:
        resolve_beside("https://feeds.example/iwf/list.dsse", name)

    assert caught.value.reason == "bad-url"


def test_failure_reasons_are_the_documented_slugs() -> None:
    assert set(FETCH_FAILURES) == {
        "too-large",
        "deadline",
        "http-status",
        "tls",
        "connect",
        "not-found",
        "bad-url",
        "io",
    }
