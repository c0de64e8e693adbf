"""Hostile documents: bounded parsing, one meaning per document, strict types.

A hostile list server, trust mirror or compromised authority controls every byte here;
each case must end as a `Rejected` with a stable reason, never another exception.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from blockd.feeds import dsse, strictjson
from blockd.feeds.model import LIST_PAYLOAD_TYPE, TRUST_PAYLOAD_TYPE, dump
from blockd.feeds.verify import Rejected, verify_list, verify_trust
from tests.factories import NOW, key, payload, signed_list, trust

TRUST = trust()
DEEP = 100_000


def rejection(call: Any, *args: Any, **kw: Any) -> Rejected:
    with pytest.raises(Rejected) as e:
        call(*args, **kw)
    return e.value


def list_doc(**over: Any) -> dict[str, Any]:
    p, _ = payload()
    doc: dict[str, Any] = json.loads(dump(p))
    doc.update(over)
    return doc


def signed_payload(
    text: bytes, payload_type: str = LIST_PAYLOAD_TYPE, signer: str = "auth-1"
) -> bytes:
    """Sign arbitrary payload bytes with a trusted key (a compromised authority)."""
    return dsse.sign(payload_type, text, [key(signer)])


# -- strictjson on its own ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"[" * DEEP + b"]" * DEEP, "nested"),
        (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "nested"),
        (b"[" * DEEP, "nested"),  # unterminated as well as deep
        (b"[" * (strictjson.MAX_DEPTH + 1) + b"]" * (strictjson.MAX_DEPTH + 1), "nested"),
        (b"1" * 5000, "digits"),
        (b'{"v": -' + b"9" * 21 + b"}", "digits"),
        (b'{"v": 1, "v": 2}', "more than once"),
        (b'{"a": {"k": 1, "k": 1}}', "more than once"),
        (b"NaN", "not a JSON number"),
        (b"[Infinity]", "not a JSON number"),
        (b"[1e99999]", "out of range"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'"\\ud800"', "surrogate"),
        (b'{"\\udc00x": 1}', "surrogate"),
        (b"", "Expecting value"),
        (b"{", "Expecting"),
    ],
)
def test_strictjson_refuses_with_a_reason(raw: bytes, why: str) -> None:
    with pytest.raises(strictjson.JSONError, match=why):
        strictjson.loads(raw)


def test_strictjson_reads_what_blockd_writes() -> None:
    assert strictjson.loads(b'{"a": [1, -2, 2.5, "\\ud83d\\ude00", null, true]}') == {
        "a": [1, -2, 2.5, "\U0001f600", None, True]
    }
    depth = strictjson.MAX_DEPTH
    assert strictjson.loads(b"[" * depth + b"]" * depth) is not None


# -- envelopes and payloads, before and after the signature check -------------------------


def good_envelope() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(signed_list())
    return doc


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"payloadType": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"signatures": [' + b'{"k":' * DEEP + b"1" + b"}" * DEEP + b"]}",
        b'{"payloadType": "x", "n": ' + b"7" * 5000 + b"}",
        # two payloads: a parser keeping the first would verify other content
        json.dumps(good_envelope())[:-1].encode() + b', "payload": "e30="}',
        # a signature object with its keyid twice
        json.dumps(good_envelope()).replace('"keyid"', '"keyid": "x", "keyid"', 1).encode(),
        b'{"payloadType": NaN}',
        b"[]",
    ],
)
@pytest.mark.parametrize("kind", ["list", "trust"])
def test_hostile_envelope_is_malformed(raw: bytes, kind: str) -> None:
    if kind == "list":
        e = rejection(verify_list, raw, TRUST, NOW, expect=("auth", "hosts"))
    else:
        e = rejection(verify_trust, raw, TRUST, NOW)
    assert e.reason == "malformed"


@pytest.mark.parametrize(
    "text",
    [
        b"[" * DEEP + b"]" * DEEP,
        json.dumps(list_doc())[:-1].encode() + b', "entries": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        json.dumps(list_doc()).replace('"version": 1', '"version": ' + "1" * 5000).encode(),
        json.dumps(list_doc())[:-1].encode() + b', "version": 2}',  # duplicate key
        json.dumps(list_doc(version="2")).encode(),
        json.dumps(list_doc(version=2.0)).encode(),
        json.dumps(list_doc(version=True)).encode(),
        json.dumps(list_doc(entry_count=1.0)).encode(),
        json.dumps(list_doc(entry_count="1")).encode(),
        json.dumps(list_doc(list=5)).encode(),
        json.dumps(list_doc(entries=["blocked.example", 7], entry_count=2)).encode(),
        json.dumps(list_doc(issued_at=1795478400)).encode(),
        json.dumps(list_doc(issued_at="yesterday")).encode(),
        json.dumps(list_doc(test_entries=[{"host": "a.example"}]))
        .replace('"host": "a.example"', '"host": "a.example", "host": "b.example"')
        .encode(),
        b'{"version": Infinity}',
    ],
)
def test_hostile_signed_list_payload_is_malformed(text: bytes) -> None:
    # Signed by the authority's real key: the check that fails is the parse, after it.
    e = rejection(verify_list, signed_payload(text), TRUST, NOW, expect=("auth", "hosts"))
    assert e.reason == "malformed"
    assert e.keyids == (key("auth-1").keyid,)


def test_duplicate_key_in_a_signed_payload_is_named() -> None:
    text = json.dumps(list_doc())[:-1].encode() + b', "version": 2}'
    e = rejection(verify_list, signed_payload(text), TRUST, NOW, expect=("auth", "hosts"))
    assert "'version' appears more than once" in str(e)


def trust_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(dump(trust(version=2)))
    doc.update(over)
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        trust_doc(version="2"),
        trust_doc(version=2.0),
        trust_doc(regulator={**trust_doc()["regulator"], "threshold": "1"}),
        trust_doc(authorities=[{**trust_doc()["authorities"][0], "max_entries": 10.0}]),
        trust_doc(authorities=[{**trust_doc()["authorities"][0], "threshold": True}]),
    ],
)
def test_trust_update_with_wrong_types_is_malformed(doc: dict[str, Any]) -> None:
    raw = signed_payload(json.dumps(doc).encode(), TRUST_PAYLOAD_TYPE, "regulator-1")
    assert rejection(verify_trust, raw, TRUST, NOW).reason == "malformed"


def test_trust_update_with_duplicate_authority_field_is_malformed() -> None:
    text = json.dumps(trust_doc()).replace('"id": "auth"', '"id": "auth", "id": "other"').encode()
    raw = signed_payload(text, TRUST_PAYLOAD_TYPE, "regulator-1")
    assert rejection(verify_trust, raw, TRUST, NOW).reason == "malformed"


# -- the identity of signed content --------------------------------------------------------


def test_envelopes_of_one_payload_share_its_digest() -> None:
    doc = good_envelope()
    variants = [
        json.dumps(doc).encode(),
        json.dumps({**doc, "extra": "ignored by DSSE"}).encode(),
        json.dumps(doc, indent=4).encode(),
        # the same payload in URL-safe, unpadded base64
        json.dumps(
            {
                **doc,
                "payload": base64.urlsafe_b64encode(base64.b64decode(doc["payload"]))
                .decode()
                .rstrip("="),
            }
        ).encode(),
    ]
    verified = [verify_list(v, TRUST, NOW, expect=("auth", "hosts")) for v in variants]
    envelopes = {v.envelope_sha256 for v in verified if v is not None}
    payloads = {v.payload_sha256 for v in verified if v is not None}
    assert len(envelopes) == len(variants) and len(payloads) == 1
    # a rejection names the same content by the same digest
    rejected = rejection(verify_list, variants[1], TRUST, NOW, expect=("auth", "urls"))
    assert rejected.reason == "list-mismatch" and {rejected.payload_sha256} == payloads
