"""DSSE envelopes: PAE, parsing of hostile bytes, threshold counting."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockd.feeds import dsse
from tests.factories import key

TYPE = "application/vnd.blockd.list.v1+json"


def test_pae_matches_the_dsse_specification_example() -> None:
    assert (
        dsse.pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert dsse.pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_signed_envelope_verifies_and_names_its_signer() -> None:
    k = key("a")
    env = dsse.parse(dsse.sign(TYPE, b"{}", [k]))
    assert dsse.verify(env, TYPE, [k.public], 1) == (k.keyid,)
    assert env.payload == b"{}"


def test_a_key_counts_once_however_often_it_signs() -> None:
    k, other = key("a"), key("b")
    raw = json.loads(dsse.sign(TYPE, b"{}", [k]))
    raw["signatures"] = raw["signatures"] * 3
    env = dsse.parse(json.dumps(raw).encode())
    with pytest.raises(dsse.EnvelopeError, match="1 valid signature") as e:
        dsse.verify(env, TYPE, [k.public, other.public], 2)
    assert e.value.reason == "signature"


def test_threshold_met_by_distinct_keys() -> None:
    a, b, c = key("a"), key("b"), key("c")
    env = dsse.parse(dsse.sign(TYPE, b"{}", [a, c]))
    assert set(dsse.verify(env, TYPE, [a.public, b.public, c.public], 2)) == {a.keyid, c.keyid}


def test_keyid_hint_is_not_trusted() -> None:
    a, b = key("a"), key("b")
    raw = json.loads(dsse.sign(TYPE, b"{}", [a]))
    raw["signatures"][0]["keyid"] = ""  # no hint: every trusted key is tried
    assert dsse.verify(dsse.parse(json.dumps(raw).encode()), TYPE, [b.public, a.public], 1)
    raw["signatures"][0]["keyid"] = b.keyid  # a lying hint does not make b's signature
    with pytest.raises(dsse.EnvelopeError):
        dsse.verify(dsse.parse(json.dumps(raw).encode()), TYPE, [b.public], 1)


def test_signature_by_unknown_key_only_is_rejected() -> None:
    env = dsse.parse(dsse.sign(TYPE, b"{}", [key("stranger")]))
    with pytest.raises(dsse.EnvelopeError) as e:
        dsse.verify(env, TYPE, [key("a").public], 1)
    assert e.value.reason == "signature"


def test_tampered_payload_fails() -> None:
    k = key("a")
    raw = json.loads(dsse.sign(TYPE, b'{"version":1}', [k]))
    raw["payload"] = base64.b64encode(b'{"version":2}').decode()
    with pytest.raises(dsse.EnvelopeError):
        dsse.verify(dsse.parse(json.dumps(raw).encode()), TYPE, [k.public], 1)


def test_wrong_payload_type_is_rejected_before_signatures() -> None:
    k = key("a")
    env = dsse.parse(dsse.sign("application/json", b"{}", [k]))
    with pytest.raises(dsse.EnvelopeError) as e:
        dsse.verify(env, TYPE, [k.public], 1)
    assert e.value.reason == "payload-type"


def test_signature_over_another_type_does_not_transfer() -> None:
    k = key("a")
    raw = json.loads(dsse.sign("application/json", b"{}", [k]))
    raw["payloadType"] = TYPE
    with pytest.raises(dsse.EnvelopeError) as e:
        dsse.verify(dsse.parse(json.dumps(raw).encode()), TYPE, [k.public], 1)
    assert e.value.reason == "signature"


GOOD = dsse.sign(TYPE, b"{}", [key("a")])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        GOOD[: len(GOOD) // 2],
        b"[]",
        b'"x"',
        b'{"payloadType": 1, "payload": "", "signatures": []}',
        b'{"payloadType": "t", "payload": "***", "signatures": [{"sig": "AA=="}]}',
        b'{"payloadType": "t", "payload": "e30=", "signatures": []}',
        b'{"payloadType": "t", "payload": "e30=", "signatures": {}}',
        b'{"payloadType": "t", "payload": "e30=", "signatures": ["x"]}',
        b'{"payloadType": "t", "payload": "e30=", "signatures": [{"sig": 5}]}',
        b'{"payloadType": "t", "payload": "e30=", "signatures": [{"sig": "%%%"}]}',
        b'{"payloadType": "t", "payload": "e30=", "signatures": [{"keyid": 1, "sig": "AA=="}]}',
        b'{"payloadType": "t", "payload": "e30=", "signatures": ['
        + b'{"sig": "AA=="},' * 40
        + b'{"sig": "AA=="}]}',
        b"\xff\xfe{}",
    ],
)
def test_malformed_envelopes_raise_one_clear_error(raw: bytes) -> None:
    with pytest.raises(dsse.EnvelopeError) as e:
        dsse.parse(raw)
    assert e.value.reason == "malformed"
    assert "\n" not in str(e.value)


def test_urlsafe_unpadded_base64_is_accepted() -> None:
    k = key("a")
    raw = json.loads(GOOD)
    raw["signatures"][0]["sig"] = (
        raw["signatures"][0]["sig"].replace("+", "-").replace("/", "_").rstrip("=")
    )
    assert dsse.verify(dsse.parse(json.dumps(raw).encode()), TYPE, [k.public], 1)


@given(st.binary(max_size=600))
def test_parse_never_raises_anything_else(raw: bytes) -> None:
    with contextlib.suppress(dsse.EnvelopeError):
        dsse.parse(raw)


@given(st.integers(0, len(GOOD) - 1), st.integers(1, 255))
def test_any_flipped_byte_is_caught(pos: int, delta: int) -> None:
    k = key("a")
    mutated = bytearray(GOOD)
    mutated[pos] = (mutated[pos] + delta) % 256
    try:
        env = dsse.parse(bytes(mutated))
        verified = dsse.verify(env, TYPE, [k.public], 1)
    except dsse.EnvelopeError:
        return
    # A flip can land in insignificant JSON whitespace or in the keyid hint; the signed
    # bytes must then be exactly the original ones.
    assert verified == (k.keyid,)
    assert env.payload == b"{}" and env.payload_type == TYPE
