"""Canonical JSON against the RFC 8785 (JCS) examples that use no fractions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockd.audit import canonical as canonical_module
from blockd.audit.canonical import MAX_SAFE_INTEGER, JSONValue, canonical, parse_canonical

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "jcs_vectors.json").read_text()
)


def expected_bytes(case: dict[str, str]) -> bytes:
    if "output_hex" in case:
        return bytes.fromhex(case["output_hex"])
    return case["output"].encode("utf-8")


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_jcs_vectors(case: dict[str, str]) -> None:
    value = json.loads(case["input"])
    want = expected_bytes(case)
    assert canonical(value) == want
    assert parse_canonical(want) == value
    if case["input"].encode() != want:
        with pytest.raises(ValueError, match="not in canonical form"):
            parse_canonical(case["input"].encode())


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+10000 is D800 DC00 in UTF-16, so it sorts before U+E000 (and after U+D7FF).
    obj = {"\ue000": 1, "\U00010000": 2, "\ud7ff": 3, "a": 4, "": 5}
    assert canonical(obj) == '{"":5,"a":4,"\ud7ff":3,"\U00010000":2,"\ue000":1}'.encode()


SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}


@pytest.mark.parametrize("code", range(0x20))
def test_control_characters_are_escaped_as_jcs_requires(code: int) -> None:
    escape = SHORT_ESCAPES.get(code, f"\\u{code:04x}")
    assert canonical(chr(code)) == f'"{escape}"'.encode()


def test_only_the_required_characters_are_escaped() -> None:
    assert canonical('"\\/') == b'"\\"\\\\/"'
    assert canonical("\x7f\u2028é€😀") == '"\x7f\u2028é€😀"'.encode()


def test_scalars_arrays_and_nesting() -> None:
    value: dict[str, object] = {"b": [None, True, False, 0, -1], "a": ("t", {"z": {}, "y": []})}
    assert canonical(value) == b'{"a":["t",{"y":[],"z":{}}],"b":[null,true,false,0,-1]}'
    assert canonical(MAX_SAFE_INTEGER) == b"9007199254740991"
    assert canonical(-MAX_SAFE_INTEGER) == b"-9007199254740991"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.0, "floats are not allowed"),
        (float("nan"), "floats are not allowed"),
        (float("inf"), "floats are not allowed"),
        (MAX_SAFE_INTEGER + 1, "outside"),
        (-MAX_SAFE_INTEGER - 1, "outside"),
        ({1: "x"}, "keys must be strings, got int"),
        ({True: "x"}, "keys must be strings, got bool"),
        ({None: "x"}, "keys must be strings, got NoneType"),
        (b"bytes", "cannot encode bytes"),
        ({"a", "b"}, "cannot encode set"),
        ("lone \ud800", "valid Unicode"),
        ({"lone \udc00": 1}, "valid Unicode"),
        ([[1.5]], "floats are not allowed"),
    ],
)
def test_values_outside_the_subset_are_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        canonical(value)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}',
        b'{"b":1,"a":2}',
        b'{"a":1,"a":1}',
        b"1.0",
        b"1e2",
        b"-0",
        b"NaN",
        b"-Infinity",
        b"9007199254740992",
        b'"\\u00e9"',
        b'"\\/"',
        b'"\\u001F"',
        b'"\\u000a"',
        b'"\\ud800"',
        b'"caf\xc3"',
        b'\xef\xbb\xbf"bom"',
        b"[1]\n",
        b" [1]",
        b"",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_parse_refuses_anything_not_exactly_canonical(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every refusal is a ValueError
        parse_canonical(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=25,
)


@given(json_values)
def test_round_trip(value: JSONValue) -> None:
    data = canonical(value)
    assert parse_canonical(data) == value
    assert canonical(json.loads(data)) == data


bmp_text = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]))
bmp_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | bmp_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(bmp_text, children),
    max_leaves=20,
)


@given(bmp_values)
def test_matches_json_dumps_where_code_point_order_is_utf16_order(value: JSONValue) -> None:
    oracle = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert canonical(value) == oracle.encode()


@given(json_values)
def test_any_other_formatting_is_refused(value: JSONValue) -> None:
    pretty = json.dumps(value, indent=1, ensure_ascii=True).encode()
    if pretty == canonical(value):
        return
    with pytest.raises(ValueError):  # noqa: PT011
        parse_canonical(pretty)


@given(st.binary())
def test_parse_accepts_only_fixed_points(data: bytes) -> None:
    try:
        value = parse_canonical(data)
    except ValueError:
        return
    assert canonical(value) == data


@given(json_values)
def test_the_fast_path_agrees_with_the_reference_encoder(value: JSONValue) -> None:
    out: list[str] = []
    canonical_module._encode(value, out)
    try:
        reference = "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate: refused either way
    assert canonical(value) == reference


class _Text(str):
    pass


class _Object(dict[str, object]):
    pass


def test_subclasses_and_non_ascii_go_through_the_reference_encoder() -> None:
    # The fast encoder sees only exact built-in types; what it would treat otherwise, or
    # sort differently (non-ASCII keys), is encoded by the reference encoder.
    value = _Object(b=_Text("x"), a=[_Text("é")])
    assert canonical(value) == '{"a":["é"],"b":"x"}'.encode()
    assert canonical({"é": 1, "z": {"\U00010000": 2, "\ue000": 3}}) == (
        '{"z":{"\U00010000":2,"\ue000":3},"é":1}'.encode()
    )
    assert canonical({"a": "é"}) == '{"a":"é"}'.encode()


def test_nan_and_infinity_never_become_null() -> None:
    # orjson writes NaN as null; the reference encoder refuses it, at any depth.
    for value in ({"a": float("nan")}, [[float("inf")]], {"a": {"b": [1, float("-inf")]}}):
        with pytest.raises(ValueError, match="floats are not allowed"):
            canonical(value)
