"""Hostile corpus for the trust layer: every case is an attacker.

The attackers are a hostile list server (controls every byte of an envelope), a hostile
trust mirror (serves whatever it likes as `<n>.trust.dsse`), and a compromised or
over-reaching authority (holds real signing keys, so its payloads pass the signature check
and must be stopped by what comes after it). Each case states what must hold: the exact
`Rejected.reason`, that nothing new is blocked, and that the previous version stays in force.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import itertools
import json
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from blockd.config import Config
from blockd.events import (
    EventBus,
    FeedAccepted,
    FeedRejected,
    GuardIntervention,
    TrustAccepted,
    TrustRejected,
)
from blockd.feeds import dsse, model
from blockd.feeds.authoring import hashed_entry, list_payload, sign_list, sign_trust
from blockd.feeds.fetch import Fetcher, FetchError, FetchPolicy, FetchResult
from blockd.feeds.model import LIST_PAYLOAD_TYPE, TRUST_PAYLOAD_TYPE, Format, TrustPolicy, dump
from blockd.feeds.sync import FeedSync
from blockd.feeds.verify import Rejected, verify_list, verify_trust
from blockd.policy import entries as entry_rules
from blockd.policy.snapshot import PolicySnapshot
from tests.factories import (
    NOW,
    Recorder,
    authority,
    config,
    key,
    payload,
    signed_list,
    signed_trust,
    trust,
)

if TYPE_CHECKING:
    from tests.feedserver import FeedServer

TRUST = trust()
A, B = key("auth-1"), key("auth-2")  # the authority's key, and the one that replaces it
R1, R2 = key("regulator-1"), key("regulator-2")
DEEP = 100_000
HUGE = b"9" * 5000  # a 5,000-digit integer
EXPECT = ("auth", "hosts")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- building hostile JSON ------------------------------------------------------------------

_HOLE = "@@hostile@@"


def splice(doc: Any, path: Sequence[str | int], raw: bytes) -> bytes:
    """Return doc as JSON with the value at path replaced by raw bytes (any text at all)."""
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = _HOLE
    return json.dumps(doc).encode().replace(json.dumps(_HOLE).encode(), raw, 1)


def duplicate(doc: Any, path: Sequence[str | int], raw: bytes) -> bytes:
    """Return doc with the key at path given twice: its own value first, then raw."""
    node = doc
    for step in path:
        node = node[step]
    again = json.dumps(node).encode() + b", " + json.dumps(path[-1]).encode() + b": " + raw
    return splice(doc, path, again)


def extra_key(doc: Any, obj: Sequence[str | int], raw_key: bytes) -> bytes:
    """Return doc with one more member in the object at obj, named by raw key text."""
    return splice(doc, [*obj, "zz-extra"], b"0, " + raw_key + b": 0")


def deep_array(n: int = DEEP) -> bytes:
    return b"[" * n + b"]" * n


def deep_object(n: int = DEEP) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


ENVELOPE: dict[str, Any] = json.loads(signed_list())
LIST_DOC: dict[str, Any] = json.loads(dump(payload()[0]))
TRUST2_DOC: dict[str, Any] = json.loads(dump(trust(version=2)))
PROBE_DOC: dict[str, Any] = {**LIST_DOC, "test_entries": [{"host": "probe.example"}]}


def signed_payload(text: bytes, payload_type: str = LIST_PAYLOAD_TYPE) -> bytes:
    """Sign any payload bytes with the real keys (a compromised authority or regulator)."""
    signer = R1 if payload_type == TRUST_PAYLOAD_TYPE else A
    return dsse.sign(payload_type, text, [signer])


def refused_list(raw: bytes, policy: TrustPolicy = TRUST, **kw: Any) -> Rejected:
    with pytest.raises(Rejected) as e:
        verify_list(raw, policy, NOW, **kw)
    return e.value


def refused_trust(raw: bytes, current: TrustPolicy | None) -> Rejected:
    with pytest.raises(Rejected) as e:
        verify_trust(raw, current, NOW)
    return e.value


def one_line(e: Rejected) -> None:
    """The message goes to logs and the audit trail: one line, not the attacker's megabyte."""
    assert "\n" not in str(e) and len(str(e)) < 2000


# -- running FeedSync -------------------------------------------------------------------------

_mtimes = itertools.count(1)


def drop(path: Path, data: bytes) -> None:
    """Publish data at a file:// source with a fresh mtime (so its ETag always changes)."""
    path.write_bytes(data)
    ns = 1_700_000_000_000_000_000 + next(_mtimes) * 1_000_000_000
    os.utime(path, ns=(ns, ns))


def file_list(tmp: Path, list_id: str = "hosts", **kw: Any) -> dict[str, Any]:
    return {"authority": "auth", "list": list_id, "source": f"file://{tmp / list_id}.dsse", **kw}


def start(
    tmp: Path,
    lists: list[dict[str, Any]],
    *,
    pinned: TrustPolicy | None = None,
    updates: str | None = None,
    fetcher: Fetcher | None = None,
    **guards: Any,
) -> tuple[FeedSync, Recorder]:
    """Load a FeedSync on a pinned trust policy (v1 by default), with updates if given."""
    if not (tmp / "trust.dsse").exists():
        (tmp / "trust.dsse").write_bytes(signed_trust(pinned))
    cfg = config(tmp, lists, **guards)
    if updates is not None:
        doc = cfg.model_dump()
        doc["trust"] = {**doc["trust"], "updates": updates}
        cfg = Config.model_validate(doc)
    bus = EventBus()
    rec = Recorder(bus)
    feeds = FeedSync(cfg, bus, fetcher=fetcher, clock=lambda: NOW)
    feeds.load()
    return feeds, rec


async def enforce(
    tmp: Path, envelope: bytes, list_id: str = "hosts", **guards: Any
) -> tuple[PolicySnapshot, Recorder]:
    """Accept one list envelope from a file:// source; return the snapshot in force."""
    drop(tmp / f"{list_id}.dsse", envelope)
    feeds, rec = start(tmp, [file_list(tmp, list_id)], **guards)
    assert await feeds.sync_list(feeds.config.lists[0]) == "accepted", rec.of(FeedRejected)
    return feeds.snapshot, rec


def hashed(lines: Sequence[str], version: int = 1) -> bytes:
    return signed_list(lines, list_id="hashed", fmt="sha256", version=version)


class ServedFetcher(Fetcher):
    """A feed server by name (no network): https:// URLs from a dict, file:// as usual."""

    def __init__(self, served: dict[str, bytes]) -> None:
        super().__init__()
        self.served = served

    async def fetch(
        self,
        url: str,
        policy: FetchPolicy,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> FetchResult:
        if url.startswith("file:"):
            return await super().fetch(url, policy, etag=etag, last_modified=last_modified)
        if url not in self.served:
            raise FetchError("not-found", f"{url} is not served")
        return FetchResult("ok", self.served[url], None, None, 1, 0.0)


# == 1. bounded parsing: hostile envelopes (a hostile list server or trust mirror) ===========


def _sig(field: str, raw: bytes) -> bytes:
    return splice(ENVELOPE, ["signatures", 0, field], raw)


HOSTILE_ENVELOPES = {
    "deep-array": deep_array(),
    "deep-object": deep_object(),
    "deep-unterminated": b"[" * DEEP,
    "deep-in-payload-field": splice(ENVELOPE, ["payload"], deep_array()),
    "deep-object-in-payload-field": splice(ENVELOPE, ["payload"], deep_object()),
    "deep-in-signature": _sig("sig", deep_array()),
    "deep-object-in-signature": _sig("keyid", deep_object()),
    "deep-in-ignored-field": splice(ENVELOPE, ["x"], deep_array()),
    "huge-int": splice(ENVELOPE, ["x"], HUGE),
    "huge-negative-int": splice(ENVELOPE, ["x"], b"-" + HUGE),
    "huge-int-in-signature": _sig("keyid", HUGE),
    "nan": splice(ENVELOPE, ["x"], b"NaN"),
    "infinity": splice(ENVELOPE, ["x"], b"-Infinity"),
    "float-overflow": splice(ENVELOPE, ["x"], b"1e99999"),
    "invalid-utf8": splice(ENVELOPE, ["payloadType"], b'"\xff\xfe"'),
    "overlong-utf8": splice(ENVELOPE, ["payloadType"], b'"\xc0\xaf"'),
    "utf8-encoded-surrogate": splice(ENVELOPE, ["payloadType"], b'"\xed\xa0\x80"'),
    "lone-surrogate-key": extra_key(ENVELOPE, [], b'"\\ud800"'),
    "lone-surrogate-key-in-signature": extra_key(ENVELOPE, ["signatures", 0], b'"\\udc00k"'),
    "lone-surrogate-payload-type": splice(ENVELOPE, ["payloadType"], b'"\\udfff"'),
    "top-level-array": b"[]",
    "wrapped-in-array": b"[" + signed_list() + b"]",
    "empty": b"",
    "whitespace": b" \n\t ",
    # duplicate keys: two parsers (co-signer, auditor, blockd) must never read two documents
    "duplicate-payload": duplicate(ENVELOPE, ["payload"], b'"e30="'),
    "duplicate-payload-type": duplicate(ENVELOPE, ["payloadType"], b'"application/json"'),
    "duplicate-signatures": duplicate(ENVELOPE, ["signatures"], b"[]"),
    "duplicate-keyid-in-signature": duplicate(ENVELOPE, ["signatures", 0, "keyid"], b'"y"'),
    "duplicate-sig-in-signature": duplicate(ENVELOPE, ["signatures", 0, "sig"], b'"AAAA"'),
}


@pytest.mark.parametrize("raw", HOSTILE_ENVELOPES.values(), ids=HOSTILE_ENVELOPES.keys())
def test_hostile_envelope_is_malformed_for_lists_and_trust(raw: bytes) -> None:
    # Whatever the server sends, the answer is a clean "malformed", and since no envelope
    # could be read there is no payload to name.
    for e in (
        refused_list(raw, expect=EXPECT),
        refused_list(raw),  # offline verify: no configured authority
        refused_trust(raw, TRUST),  # a trust mirror's update
        refused_trust(raw, None),  # the pinned file itself
    ):
        assert e.reason == "malformed"
        assert e.payload_sha256 is None
        assert e.envelope_sha256 == sha(raw)
        one_line(e)


# == 1-3. bounded, one-meaning, strictly typed signed list payloads (compromised authority) ==


HOSTILE_LIST_PAYLOADS = {
    "deep-array": deep_array(),
    "deep-object": deep_object(),
    "deep-in-entries": splice(LIST_DOC, ["entries"], deep_array()),
    "deep-in-test-entries": splice(LIST_DOC, ["test_entries"], deep_object()),
    "deep-under-recursion-limit": splice(LIST_DOC, ["entries"], deep_array(900)),
    "huge-version": splice(LIST_DOC, ["version"], HUGE),
    "huge-negative-version": splice(LIST_DOC, ["version"], b"-" + HUGE),
    "huge-entry-count": splice(LIST_DOC, ["entry_count"], HUGE),
    "nan-entry-count": splice(LIST_DOC, ["entry_count"], b"NaN"),
    "infinity-version": splice(LIST_DOC, ["version"], b"Infinity"),
    "overflowing-entry-count": splice(LIST_DOC, ["entry_count"], b"1e99999"),
    "invalid-utf8": splice(LIST_DOC, ["authority"], b'"a\xffb"'),
    "utf8-encoded-surrogate": splice(LIST_DOC, ["entries", 0], b'"\xed\xa0\x80.example"'),
    "lone-surrogate-key": extra_key(LIST_DOC, [], b'"\\ud800"'),
    "lone-surrogate-entry": splice(LIST_DOC, ["entries", 0], b'"\\udfff.example"'),
    "top-level-array": b"[" + dump(payload()[0]) + b"]",
    "empty": b"",
    "null": b"null",
    # duplicate keys: a co-signer that keeps the first duplicate signed other content
    "duplicate-version": duplicate(LIST_DOC, ["version"], b"2"),
    "duplicate-entries": duplicate(LIST_DOC, ["entries"], b'["victim.example"]'),
    "duplicate-format": duplicate(LIST_DOC, ["format"], b'"urls"'),
    "duplicate-in-test-entry": duplicate(PROBE_DOC, ["test_entries", 0, "host"], b'"v.example"'),
    # wrong types: a number is a number, a string a string
    "version-string": splice(LIST_DOC, ["version"], b'"2"'),
    "version-float": splice(LIST_DOC, ["version"], b"2.0"),
    "version-bool": splice(LIST_DOC, ["version"], b"true"),
    "entry-count-float": splice(LIST_DOC, ["entry_count"], b"1.0"),
    "entry-count-string": splice(LIST_DOC, ["entry_count"], b'"1"'),
    "list-number": splice(LIST_DOC, ["list"], b"5"),
    "authority-number": splice(LIST_DOC, ["authority"], b"5"),
    "entry-number": splice(LIST_DOC, ["entries", 0], b"7"),
    "entries-string": splice(LIST_DOC, ["entries"], b'"blocked.example"'),
    "issued-at-number": splice(LIST_DOC, ["issued_at"], b"1795431600"),
    "test-host-number": splice(PROBE_DOC, ["test_entries", 0, "host"], b"5"),
}


@pytest.mark.parametrize("text", HOSTILE_LIST_PAYLOADS.values(), ids=HOSTILE_LIST_PAYLOADS.keys())
def test_hostile_signed_list_payload_is_malformed(text: bytes) -> None:
    # The signature is good (the authority's real key); what must fail is the parse after it.
    raw = signed_payload(text)
    for e in (refused_list(raw, expect=EXPECT), refused_list(raw)):
        assert e.reason == "malformed"
        assert e.keyids == (A.keyid,)
        assert e.payload_sha256 == sha(text) and e.envelope_sha256 == sha(raw)
        one_line(e)


@pytest.mark.parametrize(
    "stamps",
    [
        ("2026-11-23T11:00:00Z", "2026-11-30T00:00:00Z"),
        ("2026-11-23T11:00:00+00:00", "2026-11-30T00:00:00+00:00"),
        ("2026-11-23T12:00:00+01:00", "2026-11-30T00:00:00.250Z"),
    ],
)
def test_rfc3339_string_timestamps_are_still_accepted(stamps: tuple[str, str]) -> None:
    # Control for the strictness above: times in JSON are strings, and they must keep working.
    doc = {**LIST_DOC, "issued_at": stamps[0], "expires": stamps[1]}
    v = verify_list(signed_payload(json.dumps(doc).encode()), TRUST, NOW, expect=EXPECT)
    assert v is not None and v.payload.issued_at == NOW - timedelta(hours=1)


# == 1-3. hostile trust policy payloads (hostile mirror, compromised regulator key) ==========

_AUTH0: list[str | int] = ["authorities", 0]

HOSTILE_TRUST_PAYLOADS = {
    "deep-array": deep_array(),
    "deep-in-authorities": splice(TRUST2_DOC, ["authorities"], deep_array()),
    "deep-in-authority": splice(TRUST2_DOC, [*_AUTH0, "lists"], deep_object()),
    "huge-version": splice(TRUST2_DOC, ["version"], HUGE),
    "huge-max-entries": splice(TRUST2_DOC, [*_AUTH0, "max_entries"], HUGE),
    "nan-threshold": splice(TRUST2_DOC, ["regulator", "threshold"], b"NaN"),
    "invalid-utf8": splice(TRUST2_DOC, [*_AUTH0, "name"], b'"\xff"'),
    "lone-surrogate-key": extra_key(TRUST2_DOC, _AUTH0, b'"\\ud800id"'),
    "top-level-array": b"[" + dump(trust(version=2)) + b"]",
    "empty": b"",
    "duplicate-version": duplicate(TRUST2_DOC, ["version"], b"3"),
    # one parser sees the authority's keys, another sees a key the attacker holds
    "duplicate-authority-keys": duplicate(
        TRUST2_DOC, [*_AUTH0, "keys"], json.dumps([B.public.b64]).encode()
    ),
    "duplicate-authority-id": duplicate(TRUST2_DOC, [*_AUTH0, "id"], b'"other"'),
    "duplicate-regulator-threshold": duplicate(TRUST2_DOC, ["regulator", "threshold"], b"1"),
    "version-string": splice(TRUST2_DOC, ["version"], b'"2"'),
    "version-float": splice(TRUST2_DOC, ["version"], b"2.0"),
    "version-bool": splice(TRUST2_DOC, ["version"], b"true"),
    "regulator-threshold-string": splice(TRUST2_DOC, ["regulator", "threshold"], b'"1"'),
    "authority-threshold-string": splice(TRUST2_DOC, [*_AUTH0, "threshold"], b'"1"'),
    "max-entries-float": splice(TRUST2_DOC, [*_AUTH0, "max_entries"], b"10.0"),
    "max-bytes-bool": splice(TRUST2_DOC, [*_AUTH0, "max_bytes"], b"true"),
    "authority-id-number": splice(TRUST2_DOC, [*_AUTH0, "id"], b"5"),
    "lists-string": splice(TRUST2_DOC, [*_AUTH0, "lists"], b'"hosts"'),
}


@pytest.mark.parametrize("text", HOSTILE_TRUST_PAYLOADS.values(), ids=HOSTILE_TRUST_PAYLOADS.keys())
def test_hostile_signed_trust_payload_is_malformed(text: bytes) -> None:
    raw = signed_payload(text, TRUST_PAYLOAD_TYPE)
    for current in (TRUST, None):
        e = refused_trust(raw, current)
        assert e.reason == "malformed"
        assert e.payload_sha256 == sha(text) and e.envelope_sha256 == sha(raw)
        one_line(e)


def test_trust_update_with_string_timestamps_is_accepted() -> None:
    doc = {**TRUST2_DOC, "issued_at": "2026-11-22T12:00:00Z", "expires": "2027-11-23T12:00:00Z"}
    v = verify_trust(signed_payload(json.dumps(doc).encode(), TRUST_PAYLOAD_TYPE), TRUST, NOW)
    assert v.policy.version == 2


# == 4. trust updates step exactly one version (hostile mirror skipping a revocation) ========


@pytest.mark.parametrize("version", [5, 9, 2**62])
def test_properly_double_signed_skip_is_refused(version: int) -> None:
    # The skipped versions might be the ones that revoked a key; signatures are all good.
    current = trust(version=3)
    skip = sign_trust(trust(regulator_keys=[R2], version=version), [R1, R2])
    e = refused_trust(skip, current)
    assert e.reason == "version-mismatch" and e.version == version
    assert e.payload_sha256 is not None
    step = sign_trust(trust(regulator_keys=[R2], version=4), [R1, R2])
    assert verify_trust(step, current, NOW).policy.version == 4


@pytest.mark.parametrize("version", [1, 2, 3])
def test_replayed_or_equal_trust_version_is_rollback(version: int) -> None:
    e = refused_trust(sign_trust(trust(version=version), [R1]), trust(version=3))
    assert e.reason == "rollback" and e.version == version


async def test_mirror_serving_a_skip_as_the_next_version_changes_nothing(tmp_path: Path) -> None:
    # The mirror answers 2.trust.dsse with version 7, which moves the authority to key B.
    updates = tmp_path / "updates"
    updates.mkdir()
    v7 = trust([authority(keys=[B])], version=7)
    (updates / "2.trust.dsse").write_bytes(sign_trust(v7, [R1]))
    drop(tmp_path / "hosts.dsse", signed_list(["by-b.example"], keys=[B]))
    feeds, rec = start(tmp_path, [file_list(tmp_path)], updates=f"file://{updates}")
    await feeds.sync_all()
    assert await feeds.sync_list(feeds.config.lists[0]) == "rejected"
    assert feeds.trust is not None and feeds.trust.version == 1
    assert rec.of(TrustAccepted) == []
    assert {t.reason for t in rec.of(TrustRejected)} == {"version-mismatch"}
    assert feeds.snapshot.host_verdict("by-b.example") is None
    again, _ = start(tmp_path, [file_list(tmp_path)], updates=f"file://{updates}")
    assert again.trust is not None and again.trust.version == 1


@pytest.mark.parametrize(
    "text",
    [deep_array(), duplicate(TRUST2_DOC, ["version"], b"3"), splice(TRUST2_DOC, ["version"], HUGE)],
    ids=["deep", "duplicate-version", "huge-version"],
)
async def test_mirror_serving_hostile_json_is_a_clean_trust_rejection(
    tmp_path: Path, text: bytes
) -> None:
    updates = tmp_path / "updates"
    updates.mkdir()
    (updates / "2.trust.dsse").write_bytes(signed_payload(text, TRUST_PAYLOAD_TYPE))
    drop(tmp_path / "hosts.dsse", signed_list(["kept.example"]))
    feeds, rec = start(tmp_path, [file_list(tmp_path)], updates=f"file://{updates}")
    await feeds.sync_all()  # must not raise
    assert feeds.trust is not None and feeds.trust.version == 1
    rejected = rec.of(TrustRejected)
    assert rejected and {(r.reason, r.payload_sha256) for r in rejected} == {
        ("malformed", sha(text))
    }
    assert feeds.snapshot.host_verdict("kept.example") is not None


# -- a hostile list server against a running FeedSync over real HTTPS -----------------------

_V2 = json.loads(dump(payload(["evil.example"], version=2)[0]))
_V2_TWO_MEANINGS = duplicate(_V2, ["entries"], b'["victim.example"]')

HOSTILE_SERVED = {
    "deep-envelope": (deep_array(), None),
    "huge-int-envelope": (splice(ENVELOPE, ["x"], HUGE), None),
    "duplicate-payload": (
        duplicate(json.loads(signed_list(["evil.example"], version=2)), ["payload"], b'"e30="'),
        None,
    ),
    "signed-deep-payload": (signed_payload(deep_object()), sha(deep_object())),
    "signed-duplicate-entries": (signed_payload(_V2_TWO_MEANINGS), sha(_V2_TWO_MEANINGS)),
}


@pytest.mark.parametrize(("served", "payload_sha"), HOSTILE_SERVED.values(), ids=HOSTILE_SERVED)
async def test_hostile_list_server_keeps_the_previous_version(
    tmp_path: Path, feed_server: FeedServer, served: bytes, payload_sha: str | None
) -> None:
    route = feed_server.route("/auth/hosts.dsse", signed_list(["kept.example"]))
    lists = [
        {
            "authority": "auth",
            "list": "hosts",
            "source": feed_server.url("/auth/hosts.dsse"),
            "ca_file": feed_server.ca_file,
            "deadline": 5,
        }
    ]
    feeds, rec = start(tmp_path, lists)
    cfg = feeds.config.lists[0]
    try:
        assert await feeds.sync_list(cfg) == "accepted"
        route.content = served
        assert await feeds.sync_list(cfg) == "rejected"
        [r] = rec.of(FeedRejected)
        assert (r.reason, r.payload_sha256, r.envelope_sha256) == (
            "malformed",
            payload_sha,
            sha(served),
        )
        assert feeds.snapshot.versions == {"auth/hosts": 1}
        assert feeds.snapshot.host_verdict("kept.example") is not None
        for name in ("evil.example", "victim.example"):
            assert feeds.snapshot.host_verdict(name) is None
    finally:
        await feeds.close()


# == 5. self-test entries obey every rule entries obey (over-reaching authority) =============


def probe_list(
    entries: Sequence[str],
    tests: Sequence[dict[str, str]],
    *,
    list_id: str = "hosts",
    fmt: Format = "hosts",
) -> bytes:
    p, _ = list_payload(
        "auth",
        list_id,
        1,
        fmt,
        entries,
        issued_at=NOW - timedelta(hours=1),
        expires=NOW + timedelta(days=7),
        test_entries=[model.TestEntry.model_validate(t) for t in tests],
    )
    return sign_list(p, [A])


async def test_url_probe_in_a_hosts_list_blocks_nothing(tmp_path: Path) -> None:
    # A "hosts" authority smuggles URL-level blocking in through its self-test probes.
    raw = probe_list(["blocked.example"], [{"url": "http://probe.example/page.html"}])
    snap, rec = await enforce(tmp_path, raw)
    assert snap.url_verdict("http://probe.example/page.html") is None
    assert snap.host_verdict("probe.example") is None
    assert snap.host_verdict("blocked.example") is not None
    [acc] = rec.of(FeedAccepted)
    assert (acc.entries, acc.rejected_entries) == (1, {"test-format": 1})
    assert snap.probes() == []


async def test_host_probe_in_a_urls_list_blocks_nothing(tmp_path: Path) -> None:
    # A "urls" authority smuggles a whole-host block in through a self-test probe.
    raw = probe_list(
        ["http://part.example/listed.html"], [{"host": "probe.example"}], list_id="urls", fmt="urls"
    )
    snap, rec = await enforce(tmp_path, raw, "urls")
    assert snap.host_verdict("probe.example") is None
    assert snap.host_verdict("www.probe.example") is None
    assert snap.url_verdict("http://probe.example/") is None
    assert snap.url_verdict("http://part.example/listed.html") is not None
    [acc] = rec.of(FeedAccepted)
    assert (acc.entries, acc.rejected_entries) == (1, {"test-format": 1})


@pytest.mark.parametrize(
    ("fmt", "entry", "probe", "victim"),
    [
        ("hosts", "blocked.example", {"host": "co.uk"}, "http://shop.co.uk/"),
        ("hosts", "blocked.example", {"host": "github.io"}, "http://user.github.io/"),
        ("hosts", "blocked.example", {"host": "uk"}, "http://shop.co.uk/"),
        ("urls", "http://blocked.example/x", {"url": "http://co.uk/x"}, "http://co.uk/x"),
    ],
    ids=["co.uk", "github.io", "bare-tld", "url-on-suffix"],
)
async def test_public_suffix_probe_is_not_enforced(
    tmp_path: Path, fmt: Format, entry: str, probe: dict[str, str], victim: str
) -> None:
    snap, rec = await enforce(
        tmp_path, probe_list([entry], [probe], list_id=fmt, fmt=fmt), list_id=fmt
    )
    assert snap.url_verdict(victim) is None
    assert snap.probes() == []
    [acc] = rec.of(FeedAccepted)
    assert acc.entries == 1 and acc.rejected_entries == {"test-public-suffix": 1}


@pytest.mark.parametrize(
    ("never_block", "probe", "protected"),
    [
        ("*.safe.example", "probe.safe.example", "probe.safe.example"),
        ("www.safe.example", "safe.example", "www.safe.example"),  # a parent of the name
        ("bank.example", "bank.example", "bank.example"),
    ],
)
async def test_never_block_probe_is_not_enforced(
    tmp_path: Path, never_block: str, probe: str, protected: str
) -> None:
    raw = probe_list(["blocked.example"], [{"host": probe}])
    snap, _ = await enforce(tmp_path, raw, never_block=[never_block])
    assert snap.host_verdict(protected) is None
    assert snap.host_verdict(probe) is None
    assert snap.host_verdict("blocked.example") is not None
    # The probe stays expected, so the self-test names the probe the operator's guard undid.
    assert probe in snap.probes()


async def test_valid_probe_is_enforced_like_an_entry(tmp_path: Path) -> None:
    # Control: a probe within the rules blocks, and the self-test knows of it.
    snap, _ = await enforce(tmp_path, probe_list(["blocked.example"], [{"host": "probe.example"}]))
    assert snap.host_verdict("probe.example") is not None
    assert snap.probes() == ["probe.example"]


@pytest.mark.parametrize(("entries", "probes", "ok"), [(2, 2, False), (3, 1, False), (2, 1, True)])
def test_probes_count_against_max_entries(entries: int, probes: int, ok: bool) -> None:
    # Test entries are entries: they cannot be used to get past the authority's cap.
    policy = trust([authority(max_entries=3)])
    raw = probe_list(
        [f"h{i}.example" for i in range(entries)],
        [{"host": f"p{i}.example"} for i in range(probes)],
    )
    if ok:
        assert verify_list(raw, policy, NOW, expect=EXPECT) is not None
    else:
        e = refused_list(raw, policy, expect=EXPECT)
        assert e.reason == "too-large" and e.version == 1


# == 6. hashed lists cannot hide what plaintext lists may not say ============================

_CONTROL = hashed_entry("host", "blocked.example")


@pytest.mark.parametrize(
    ("line", "victims"),
    [
        (
            hashed_entry("host", "co.uk"),
            ["http://site.co.uk/", "http://co.uk/", "http://a.b.co.uk/"],
        ),
        (hashed_entry("host", "github.io"), ["http://user.github.io/x"]),
        (hashed_entry("host", "uk"), ["http://site.co.uk/"]),
        (hashed_entry("host", "s3.amazonaws.com"), ["http://bucket.s3.amazonaws.com/"]),
        (hashed_entry("url", "github.io/"), ["http://user.github.io/x", "http://github.io/"]),
        (hashed_entry("url", "co.uk/"), ["http://site.co.uk/a.html"]),
        (hashed_entry("route", "co.uk"), ["http://site.co.uk/"]),
        (hashed_entry("route", "github.io"), ["http://user.github.io/"]),
    ],
    ids=[
        "host-co.uk",
        "host-github.io",
        "host-bare-tld",
        "host-private-suffix",
        "url-github.io",
        "url-co.uk",
        "route-co.uk",
        "route-github.io",
    ],
)
async def test_hash_of_a_public_suffix_blocks_and_routes_nothing(
    tmp_path: Path, line: str, victims: list[str]
) -> None:
    # A compiled check cannot see the name behind a hash; the lookup must refuse it.
    snap, _ = await enforce(tmp_path, hashed([line, _CONTROL]), "hashed")
    for url in victims:
        host = url.split("/")[2]
        assert snap.host_verdict(host) is None, host
        assert snap.url_verdict(url) is None, url
    assert snap.host_verdict("blocked.example") is not None


async def test_hash_of_a_registrable_name_under_a_suffix_still_blocks(tmp_path: Path) -> None:
    # Control: the suffix rule must not stop ordinary hashed entries below a suffix.
    lines = [
        hashed_entry("host", "site.co.uk"),
        hashed_entry("url", "blog.github.io/p.html"),
        hashed_entry("route", "blog.github.io"),  # FORMAT.md: url: hashes match on routed hosts
    ]
    snap, _ = await enforce(tmp_path, hashed(lines), "hashed")
    assert snap.host_verdict("www.site.co.uk") is not None
    assert snap.url_verdict("http://blog.github.io/p.html") is not None
    assert snap.url_verdict("http://other.github.io/p.html") is None


@pytest.mark.parametrize(
    ("never_block", "line", "victims"),
    [
        (
            "*.safe.example",
            hashed_entry("host", "deep.sub.safe.example"),
            ["deep.sub.safe.example"],
        ),
        ("*.safe.example", hashed_entry("host", "x.safe.example"), ["a.x.safe.example"]),
        (
            "*.safe.example",
            hashed_entry("route", "deep.sub.safe.example"),
            ["deep.sub.safe.example"],
        ),
        ("safe.example", hashed_entry("host", "safe.example"), ["safe.example"]),
        ("www.safe.example", hashed_entry("host", "safe.example"), ["www.safe.example"]),
        ("www.safe.example", hashed_entry("route", "safe.example"), ["www.safe.example"]),
    ],
    ids=[
        "host-deep-in-subtree",
        "host-subdomain-in-subtree",
        "route-deep-in-subtree",
        "host-exact-name",
        "host-parent-of-name",
        "route-parent-of-name",
    ],
)
async def test_hash_touching_a_never_block_name_is_not_enforced(
    tmp_path: Path, never_block: str, line: str, victims: list[str]
) -> None:
    snap, _ = await enforce(tmp_path, hashed([line, _CONTROL]), "hashed", never_block=[never_block])
    for host in victims:
        assert snap.host_verdict(host) is None, host
        assert snap.url_verdict(f"http://{host}/x.html") is None, host
    assert snap.host_verdict("blocked.example") is not None


async def test_url_hash_inside_a_never_block_subtree_is_not_enforced(tmp_path: Path) -> None:
    # Plaintext URL entries on protected hosts are dropped; a hashed one must not get through.
    line = hashed_entry("url", "deep.sub.safe.example/x.html")
    snap, _ = await enforce(
        tmp_path, hashed([line, _CONTROL]), "hashed", never_block=["*.safe.example"]
    )
    assert snap.url_verdict("http://deep.sub.safe.example/x.html") is None
    assert snap.host_verdict("blocked.example") is not None


@pytest.mark.parametrize("name", ["co.uk", "github.io", "s3.amazonaws.com", "uk"])
def test_plaintext_public_suffix_is_refused_at_compile_time(name: str) -> None:
    with pytest.raises(ValueError, match=r"^public-suffix$"):
        entry_rules.host_key(name)
    assert entry_rules.build("hosts", [name]).rejected == {"public-suffix": 1}


# == 7. entries never reach across a public-suffix boundary; feed hosts are never blocked ====

_BUCKET = "bucket.s3.amazonaws.com"


@pytest.mark.parametrize(
    ("list_id", "line"),
    [("hosts", "amazonaws.com"), ("hashed", hashed_entry("host", "amazonaws.com"))],
    ids=["plaintext", "hashed"],
)
async def test_host_entry_on_a_parent_of_a_suffix_stops_at_the_suffix(
    tmp_path: Path, list_id: str, line: str
) -> None:
    fmt: Format = "sha256" if list_id == "hashed" else "hosts"
    snap, _ = await enforce(tmp_path, signed_list([line], list_id=list_id, fmt=fmt), list_id)
    assert snap.host_verdict("amazonaws.com") is not None
    assert snap.host_verdict("www.amazonaws.com") is not None
    for host in (_BUCKET, "x.bucket.s3.amazonaws.com", "s3.amazonaws.com"):
        assert snap.host_verdict(host) is None, host
        assert snap.url_verdict(f"http://{host}/x.html") is None, host


@pytest.mark.parametrize(
    ("list_id", "lines"),
    [
        ("urls", ["http://amazonaws.com/x.html"]),
        (
            "hashed",
            [hashed_entry("url", "amazonaws.com/x.html"), hashed_entry("route", "amazonaws.com")],
        ),
    ],
    ids=["plaintext", "hashed"],
)
async def test_url_entry_on_a_parent_of_a_suffix_stops_at_the_suffix(
    tmp_path: Path, list_id: str, lines: list[str]
) -> None:
    fmt: Format = "sha256" if list_id == "hashed" else "urls"
    snap, _ = await enforce(tmp_path, signed_list(lines, list_id=list_id, fmt=fmt), list_id)
    assert snap.url_verdict("http://amazonaws.com/x.html") is not None
    assert snap.url_verdict(f"http://{_BUCKET}/x.html") is None
    assert snap.host_verdict(_BUCKET) is None  # not even routed to the proxy


FEED = "https://feeds.authority.example/auth/hosts.dsse"
MIRROR = "https://mirror.authority.example/auth/urls.dsse"
TRUST_UPDATES = "https://trust.regulator.example/blockd/"


@pytest.mark.parametrize(
    ("fmt", "line", "protected"),
    [
        ("hosts", "feeds.authority.example", "feeds.authority.example"),
        ("hosts", "authority.example", "feeds.authority.example"),  # a parent of the feed host
        ("hosts", "mirror.authority.example", "mirror.authority.example"),  # another list's
        ("hosts", "trust.regulator.example", "trust.regulator.example"),
        ("sha256", hashed_entry("host", "feeds.authority.example"), "feeds.authority.example"),
        ("sha256", hashed_entry("host", "trust.regulator.example"), "trust.regulator.example"),
    ],
    ids=[
        "own-feed-host",
        "parent-of-feed-host",
        "other-list-source-host",
        "trust-updates-host",
        "hashed-own-feed-host",
        "hashed-trust-updates-host",
    ],
)
async def test_a_list_cannot_cut_blockd_off_its_own_feeds(
    tmp_path: Path, fmt: Format, line: str, protected: str
) -> None:
    # Blocking the feed host would freeze the current lists: no fix or revocation gets in.
    list_id = "hashed" if fmt == "sha256" else "hosts"
    control = hashed_entry("host", "blocked.example") if fmt == "sha256" else "blocked.example"
    served = {FEED: signed_list([line, control], list_id=list_id, fmt=fmt)}
    lists = [
        {"authority": "auth", "list": list_id, "source": FEED},
        {"authority": "auth", "list": "urls", "source": MIRROR},
    ]
    feeds, rec = start(tmp_path, lists, updates=TRUST_UPDATES, fetcher=ServedFetcher(served))
    assert await feeds.sync_list(feeds.config.lists[0]) == "accepted", rec.of(FeedRejected)
    assert feeds.snapshot.host_verdict(protected) is None
    assert feeds.snapshot.host_verdict("blocked.example") is not None


# == 8. the change quarantine counts every kind of entry ======================================


async def test_flood_of_route_hashes_is_quarantined(tmp_path: Path) -> None:
    # v2 keeps every host hash and adds 3,000 routes: everything to the proxy, unreviewed.
    hosts = [hashed_entry("host", f"h{i}.example") for i in range(100)]
    routes = [hashed_entry("route", f"r{i}.example") for i in range(3000)]
    drop(tmp_path / "hashed.dsse", hashed(hosts))
    feeds, rec = start(tmp_path, [file_list(tmp_path, "hashed")])
    cfg = feeds.config.lists[0]
    assert await feeds.sync_list(cfg) == "accepted"
    drop(tmp_path / "hashed.dsse", hashed(hosts + routes, version=2))
    assert await feeds.sync_list(cfg) == "quarantined"
    [q] = [g for g in rec.of(GuardIntervention) if g.kind == "quarantine"]
    assert (q.version, q.count) == (2, 3000)
    assert feeds.snapshot.versions == {"auth/hashed": 1}
    assert feeds.snapshot.host_verdict("r7.example") is None
    assert feeds.snapshot.host_verdict("h7.example") is not None
    assert [a.entries for a in rec.of(FeedAccepted)] == [100]


async def test_accepted_entries_count_host_url_and_route_hashes(tmp_path: Path) -> None:
    lines = [
        *(hashed_entry("host", f"h{i}.example") for i in range(2)),
        *(hashed_entry("url", f"u{i}.example/x") for i in range(3)),
        *(hashed_entry("route", f"r{i}.example") for i in range(4)),
    ]
    _, rec = await enforce(tmp_path, hashed(lines), "hashed")
    [acc] = rec.of(FeedAccepted)
    assert acc.entries == 9 and acc.rejected_entries == {}


# == 9. audit identity: the signed payload, not the wrapping ==================================


def _variants() -> tuple[bytes, list[bytes]]:
    """Return a signed payload and envelopes of it differing only outside the signature."""
    p, _ = payload(["blocked.example"])
    text = dump(p)
    doc = json.loads(sign_list(p, [A]))
    return text, [
        json.dumps(doc).encode(),
        json.dumps({**doc, "x-mirror": "added by a mirror"}).encode(),
        json.dumps(doc, indent=7).encode() + b"\n\n",
    ]


def test_payload_digest_is_the_same_across_envelopes() -> None:
    text, envelopes = _variants()
    verified = [verify_list(raw, TRUST, NOW, expect=EXPECT) for raw in envelopes]
    assert [v.envelope_sha256 if v else None for v in verified] == [sha(r) for r in envelopes]
    assert {v.payload_sha256 if v else None for v in verified} == {sha(text)}
    refused = [refused_list(raw, expect=("auth", "urls")) for raw in envelopes]
    assert {(e.reason, e.payload_sha256) for e in refused} == {("list-mismatch", sha(text))}
    assert len({e.envelope_sha256 for e in refused}) == len(envelopes)


def test_events_have_a_payload_digest_field() -> None:
    for kind in (FeedAccepted, FeedRejected):
        fields = {f.name: f for f in dataclasses.fields(kind)}
        assert "payload_sha256" in fields, kind


async def test_feed_events_carry_the_payload_digest(tmp_path: Path) -> None:
    text, envelopes = _variants()
    accepted, rejected = [], []
    for i, raw in enumerate(envelopes):
        tmp = tmp_path / f"a{i}"
        tmp.mkdir()
        _, rec = await enforce(tmp, raw)
        accepted += rec.of(FeedAccepted)
        # the same envelope at a source configured for another list
        tmp = tmp_path / f"r{i}"
        tmp.mkdir()
        drop(tmp / "urls.dsse", raw)
        feeds, rec = start(tmp, [file_list(tmp, "urls")])
        assert await feeds.sync_list(feeds.config.lists[0]) == "rejected"
        rejected += rec.of(FeedRejected)
    for events in (accepted, rejected):
        assert [e.envelope_sha256 for e in events] == [sha(r) for r in envelopes]
        assert {e.payload_sha256 for e in events} == {sha(text)}
    assert {e.reason for e in rejected} == {"list-mismatch"}


async def test_unreadable_envelope_event_has_no_payload_digest(tmp_path: Path) -> None:
    drop(tmp_path / "hosts.dsse", deep_array())
    feeds, rec = start(tmp_path, [file_list(tmp_path)])
    assert await feeds.sync_list(feeds.config.lists[0]) == "rejected"
    [r] = rec.of(FeedRejected)
    assert (r.reason, r.payload_sha256, r.envelope_sha256) == (
        "malformed",
        None,
        sha(deep_array()),
    )


# == 10. a revoked key stops being enforced in a running daemon ===============================


def feed_revoked() -> Any:
    """Return blockd.events.FeedRevoked (looked up at run time: it may not exist yet)."""
    return importlib.import_module("blockd.events").FeedRevoked


async def _enforced_by_a(tmp: Path) -> tuple[FeedSync, Recorder, Path]:
    """Start on trust v1 (authority keys [A]) with A's list v1 enforced; return updates dir."""
    updates = tmp / "updates"
    updates.mkdir()
    drop(tmp / "hosts.dsse", signed_list(["revoked.example"], keys=[A]))
    feeds, rec = start(
        tmp, [file_list(tmp)], pinned=trust([authority(keys=[A])]), updates=f"file://{updates}"
    )
    assert await feeds.sync_list(feeds.config.lists[0]) == "accepted"
    assert feeds.snapshot.host_verdict("revoked.example") is not None
    return feeds, rec, updates


async def _cycle(feeds: FeedSync, how: str) -> None:
    if how == "sync_list":
        await feeds.sync_list(feeds.config.lists[0])  # every sync refreshes trust first
    else:
        await feeds.sync_all()


@pytest.mark.parametrize("how", ["sync_list", "sync_all"])
async def test_revoked_key_stops_enforcement_then_resigned_list_is_accepted(
    tmp_path: Path, how: str
) -> None:
    feeds, rec, updates = await _enforced_by_a(tmp_path)
    # The regulator finds key A compromised and publishes trust v2 with [B] only.
    (updates / "2.trust.dsse").write_bytes(
        sign_trust(trust([authority(keys=[B])], version=2), [R1])
    )
    await _cycle(feeds, how)
    assert feeds.trust is not None and feeds.trust.version == 2
    assert feeds.snapshot.host_verdict("revoked.example") is None
    assert "auth/hosts" not in feeds.snapshot.versions
    [ev] = rec.of(feed_revoked())
    assert (ev.authority, ev.list, ev.version) == ("auth", "hosts", 1)
    assert isinstance(ev.reason, str) and ev.reason
    assert isinstance(ev.detail, str) and ev.detail
    # The authority re-signs the same version with B: accepted at the next sync.
    drop(tmp_path / "hosts.dsse", signed_list(["revoked.example"], keys=[B]))
    assert await feeds.sync_list(feeds.config.lists[0]) == "accepted"
    assert feeds.snapshot.versions == {"auth/hosts": 1}
    assert feeds.snapshot.host_verdict("revoked.example") is not None
    assert rec.of(FeedAccepted)[-1].keyids == (B.keyid,)


async def test_revoked_list_stays_revoked_across_a_restart(tmp_path: Path) -> None:
    feeds, _, updates = await _enforced_by_a(tmp_path)
    (updates / "2.trust.dsse").write_bytes(
        sign_trust(trust([authority(keys=[B])], version=2), [R1])
    )
    await feeds.sync_all()
    again, _ = start(tmp_path, [file_list(tmp_path)], updates=f"file://{updates}")
    assert again.trust is not None and again.trust.version == 2
    assert again.snapshot.host_verdict("revoked.example") is None
    assert again.snapshot.versions == {}


async def test_authority_dropped_from_trust_stops_enforcement(tmp_path: Path) -> None:
    # The regulator withdraws the authority altogether (another one remains).
    feeds, rec, updates = await _enforced_by_a(tmp_path)
    v2 = trust([authority("other")], version=2)
    (updates / "2.trust.dsse").write_bytes(sign_trust(v2, [R1]))
    await feeds.sync_list(feeds.config.lists[0])
    assert feeds.trust is not None and feeds.trust.version == 2
    assert feeds.snapshot.host_verdict("revoked.example") is None
    [ev] = rec.of(feed_revoked())
    assert (ev.authority, ev.list, ev.version) == ("auth", "hosts", 1)
