"""An independent verifier written from docs/AUDIT-BUNDLE.md, run against blockd's bundles.

`spec_verify` below uses only the standard library and `cryptography`, and nothing of
blockd.audit: if the document and the code disagree, a bundle blockd exports fails here (or
a tampered one passes). The bundles themselves are made by blockd, from real logs on disk.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from blockd.cli import main
from tests.audit.spec_bundles import make_bundles

# -- the verifier, section by section of the document ------------------------------------------


class Refused(Exception):
    """The bundle fails verification."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise Refused("duplicate key")
    return dict(pairs)


def _constant(name: str) -> None:
    raise Refused(f"{name} is not allowed")


def _integer(value: Any) -> int:  # §2
    if type(value) is not int or not 0 <= value < 2**63:
        raise Refused(f"not an integer in range: {value!r}")
    return value


def _b64(text: Any) -> bytes:  # §2: standard alphabet, padded
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text):
        raise Refused("not standard base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise Refused("not base64") from None


def _hash(text: Any) -> bytes:
    raw = _b64(text)
    if len(raw) != 32:
        raise Refused("a hash is 32 bytes")
    return raw


def _hashes(value: Any) -> list[bytes]:
    if not isinstance(value, list):
        raise Refused("not a list of hashes")
    return [_hash(v) for v in value]


def _canonical(value: Any) -> str:  # §4
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if type(value) is int:
        if abs(value) > 2**53 - 1:
            raise Refused("integer too large")
        return str(value)
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch in "\b\t\n\f\r":
                out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
            elif ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return "".join(out) + '"'
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(_canonical(k) + ":" + _canonical(value[k]) for k in keys) + "}"
    raise Refused(f"not allowed in an entry: {value!r}")


def _entry_bytes(text: Any) -> bytes:
    if not isinstance(text, str):
        raise Refused("entry is not text")
    try:
        data = text.encode("utf-8")
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_float=_constant, parse_constant=_constant
        )
    except (UnicodeEncodeError, ValueError):
        raise Refused("entry is not JSON") from None
    if not isinstance(value, dict) or _canonical(value).encode("utf-8") != data:
        raise Refused("entry is not the canonical JSON of an object")
    return data


def _vkey(vkey: str) -> tuple[str, int, Ed25519PublicKey]:  # §5.1
    name, _, rest = vkey.partition("+")
    hex_id, _, key64 = rest.partition("+")
    if not name or "+" in name or any(c.isspace() or ord(c) < 0x20 for c in name):
        raise Refused("bad key name")
    if not re.fullmatch(r"[0-9a-fA-F]{8}", hex_id):
        raise Refused("bad key ID")
    raw = _b64(key64)
    if len(raw) != 33 or raw[0] != 1 or base64.b64encode(raw).decode() != key64:
        raise Refused("not a canonical Ed25519 key")
    kid = int.from_bytes(hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4], "big")
    if kid != int(hex_id, 16):
        raise Refused("key ID does not match")
    return name, kid, Ed25519PublicKey.from_public_bytes(raw[1:])


def _open(note: Any, key: tuple[str, int, Ed25519PublicKey]) -> str:  # §5.2
    if not isinstance(note, str) or any(ord(c) < 0x20 and c != "\n" for c in note):
        raise Refused("not a note")
    split = note.rfind("\n\n")
    if split < 0:
        raise Refused("no signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n") or block.count("\n") > 100:
        raise Refused("bad signature block")
    name, kid, public = key
    signed = False
    for line in block[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise Refused("not a signature line")
        signer, _, b64 = line[2:].partition(" ")
        sig = _b64(b64)
        if len(sig) < 5:
            raise Refused("short signature")
        if signer != name or int.from_bytes(sig[:4], "big") != kid:
            continue  # another key's signature (a witness's, say)
        try:
            public.verify(sig[4:], text.encode("utf-8"))
        except InvalidSignature:
            raise Refused("bad signature") from None
        signed = True
    if not signed:
        raise Refused("not signed by the operator")
    return text


def _checkpoint(text: str) -> tuple[str, int, bytes, list[str]]:  # §5.3
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines) or not re.fullmatch(r"0|[1-9][0-9]*", lines[1]):
        raise Refused("malformed checkpoint")
    size = int(lines[1])
    if size >= 2**64:
        raise Refused("size too large")
    return lines[0], size, _hash(lines[2]), lines[3:]


def HL(d: bytes) -> bytes:  # §6 names it so
    return hashlib.sha256(b"\x00" + d).digest()


def HN(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY = hashlib.sha256(b"").digest()


def _consistent(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> bool:  # §6.1
    if m > n:
        return False
    if m == 0:
        return not proof and r1 == EMPTY
    if m == n:
        return not proof and r1 == r2
    if not proof:
        return False
    if m & (m - 1) == 0:
        proof = [r1, *proof]
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = HN(c, fr), HN(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = HN(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == r1 and sr == r2


def _range(
    begin: int, n: int, h: list[bytes], left: list[bytes], right: list[bytes], r: bytes
) -> bool:
    """Check a range proof as §6.2 says, steps 1 to 5."""
    end = begin + len(h)
    if end > n or len(left) != bin(begin).count("1"):
        return False
    if end == 0:
        return (n == 0 and not right and r == EMPTY) or (n > 0 and right == [r])
    stack = list(left)
    for i, leaf in enumerate(h, start=begin):
        stack.append(leaf)
        j = 0
        while i >> j & 1:
            b, a = stack.pop(), stack.pop()
            stack.append(HN(a, b))
            j += 1
    level = (end & -end).bit_length() - 1
    fn, sn = (end >> level) - 1, (n - 1) >> level
    cur, t = stack.pop(), 0
    while sn > 0:
        if fn & 1:
            cur = HN(stack.pop(), cur)
        elif fn < sn:
            if t == len(right):
                return False
            cur, t = HN(cur, right[t]), t + 1
        fn, sn = fn >> 1, sn >> 1
    return t == len(right) and not stack and cur == r


def spec_verify(
    text: str, vkey: str, previous: str | None = None, *, allow_gap: bool = False
) -> list[dict[str, Any]]:
    """Verify a bundle as docs/AUDIT-BUNDLE.md §7 says; return its entries or raise Refused."""
    try:  # step 1
        b = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant)
    except (ValueError, RecursionError):
        raise Refused("not JSON") from None
    if not isinstance(b, dict) or b.get("format") != "blockd-audit-bundle/1":
        raise Refused("not a bundle")
    try:
        origin, notes, consistency = b["origin"], b["checkpoints"], b["consistency"]
        begin, end, entries = _integer(b["begin"]), _integer(b["end"]), b["entries"]
        _hashes(b["leaf_hints"])
        left, right = _hashes(b["range_proof"]["left"]), _hashes(b["range_proof"]["right"])
    except (KeyError, TypeError):
        raise Refused("missing field") from None
    if not isinstance(origin, str) or not isinstance(entries, list):
        raise Refused("wrong type")
    if not isinstance(notes, list) or not notes or not isinstance(consistency, list):
        raise Refused("wrong type")
    key = _vkey(vkey)
    cps = []  # step 3
    for n in notes:
        cp = _checkpoint(_open(n, key))
        if cp[0] != origin:
            raise Refused("checkpoint of another log")
        cps.append(cp)
    if len(consistency) != len(cps) - 1:  # step 4
        raise Refused("wrong number of consistency proofs")
    for i in range(len(cps) - 1):
        (_, m, r1, _), (_, n, r2, _) = cps[i], cps[i + 1]
        if not _consistent(m, n, r1, r2, _hashes(consistency[i])):
            raise Refused("the log was rewritten")
    _, size, root, _ = cps[-1]
    seen = 0
    if previous is not None:  # step 5
        p_origin, p_size, p_root, _ = _checkpoint(_open(previous, key))
        if p_origin != origin or p_size > size:
            raise Refused("previous checkpoint of another log, or the log shrank")
        same = [cp for cp in cps if cp[1] == p_size]
        if same:
            if same[0][2] != p_root:
                raise Refused("fork")
        else:
            extra = b.get("previous")
            size_given = extra.get("size") if isinstance(extra, dict) else None
            if type(size_given) is not int or size_given != p_size:  # §2: true and 1.0 are not 1
                raise Refused("no proof from the previous checkpoint")
            assert isinstance(extra, dict)
            if not _consistent(p_size, size, p_root, root, _hashes(extra.get("proof"))):
                raise Refused("fork")
        seen = p_size
    if not begin <= end <= size or len(entries) != end - begin:  # step 6
        raise Refused("wrong range")
    datas = [_entry_bytes(e) for e in entries]  # step 7
    if not _range(begin, size, [HL(d) for d in datas], left, right, root):  # step 8
        raise Refused("entries do not hash to the signed root")
    if begin > seen and not allow_gap:  # step 9
        raise Refused(f"entries {seen} to {begin - 1} not shown")
    return [json.loads(d) for d in datas]


# -- bundles blockd exports from real logs ----------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Bundles blockd exported from one real log (made in another module: see its doc)."""
    return make_bundles(tmp_path_factory.mktemp("spec"))


def test_every_bundle_blockd_exports_verifies_by_the_document(exported: dict[str, Any]) -> None:
    vkey, size = exported["vkey"], exported["size"]
    whole = spec_verify(exported["whole"], vkey)
    assert [e["n"] for e in whole] == list(range(size))
    assert [e["n"] for e in spec_verify(exported["part"], vkey, allow_gap=True)] == list(
        range(3, 17)
    )
    assert [e["n"] for e in spec_verify(exported["one"], vkey, allow_gap=True)] == [16]
    assert spec_verify(exported["empty"], vkey) == []
    assert spec_verify(exported["at-end"], vkey, allow_gap=True) == []
    cp = exported["checkpoints"]
    assert len(spec_verify(exported["from-previous"], vkey, cp[2])) == size - 4  # size 4
    for previous in cp:
        spec_verify(exported["whole"], vkey, previous)


def test_the_key_id_in_any_case_and_blockd_agree(exported: dict[str, Any]) -> None:
    name, hex_id, key64 = exported["vkey"].split("+", 2)
    upper = f"{name}+{hex_id.upper()}+{key64}"
    assert spec_verify(exported["whole"], upper)
    assert main(["audit", "verify", "/dev/null", "--key", upper]) == 1  # parses, then fails


def _tampered(exported: dict[str, Any]) -> dict[str, str]:
    whole = json.loads(exported["whole"])
    cases: dict[str, Any] = {}

    def case(name: str, change: Any) -> None:
        b = copy.deepcopy(whole)
        change(b)
        cases[name] = json.dumps(b)

    def flip_entry(b: dict[str, Any]) -> None:
        b["entries"][5] = b["entries"][5].replace('"n":5', '"n":6')

    def swap(b: dict[str, Any]) -> None:
        b["entries"][3], b["entries"][4] = b["entries"][4], b["entries"][3]

    def not_canonical(b: dict[str, Any]) -> None:
        b["entries"][2] = json.dumps(json.loads(b["entries"][2]), indent=1)

    def upper_escape(b: dict[str, Any]) -> None:
        b["entries"][2] = b["entries"][2].replace("\\u001f", "\\u001F")

    def url_safe(b: dict[str, Any]) -> None:
        for proof in (b["range_proof"]["left"], b["range_proof"]["right"], *b["consistency"]):
            proof[:] = [h.replace("+", "-").replace("/", "_") for h in proof]

    def drop_last(b: dict[str, Any]) -> None:
        b["entries"].pop()
        b["leaf_hints"].pop()

    def root(b: dict[str, Any]) -> None:
        lines = b["checkpoints"][-1].split("\n")
        lines[2] = base64.b64encode(b"\x00" * 32).decode()
        b["checkpoints"][-1] = "\n".join(lines)

    def consistency(b: dict[str, Any]) -> None:
        b["consistency"][3][0] = base64.b64encode(b"\x00" * 32).decode()

    def short_left(b: dict[str, Any]) -> None:
        b["begin"] = 1
        b["entries"].pop(0)
        b["leaf_hints"].pop(0)

    def long_right(b: dict[str, Any]) -> None:
        b["range_proof"]["right"].append(base64.b64encode(b"\x00" * 32).decode())

    def origin(b: dict[str, Any]) -> None:
        b["origin"] = "isp.example/blockd/other"

    def begin_after_end(b: dict[str, Any]) -> None:
        b["begin"], b["end"] = 5, 4

    for name, change in [
        ("flipped entry", flip_entry),
        ("swapped entries", swap),
        ("non-canonical entry", not_canonical),
        ("uppercase escape", upper_escape),
        ("entry removed", drop_last),
        ("root changed", root),
        ("consistency proof changed", consistency),
        ("range proof left too short", short_left),
        ("range proof right too long", long_right),
        ("origin changed", origin),
        ("begin after end", begin_after_end),
        ("url-safe base64", url_safe),
    ]:
        case(name, change)
    text = exported["whole"]
    cases["duplicate key"] = text.replace('\n "end":', '\n "end": 0,\n "end":', 1)
    cases["truncated"] = text[: len(text) - 40]
    cases["huge begin"] = text.replace('"begin": 0', '"begin": 9223372036854775808', 1)
    return cases


@pytest.mark.parametrize(
    "name",
    [
        "flipped entry",
        "swapped entries",
        "non-canonical entry",
        "uppercase escape",
        "entry removed",
        "root changed",
        "consistency proof changed",
        "range proof left too short",
        "range proof right too long",
        "origin changed",
        "begin after end",
        "duplicate key",
        "truncated",
        "huge begin",
        "url-safe base64",
    ],
)
def test_a_tampered_bundle_fails_by_the_document_and_by_blockd(
    exported: dict[str, Any], name: str, tmp_path: Path
) -> None:
    text = _tampered(exported)[name]
    assert text != exported["whole"], name
    with pytest.raises(Refused):
        spec_verify(text, exported["vkey"])
    path = tmp_path / "b.json"
    path.write_text(text)
    assert main(["audit", "verify", str(path), "--key", exported["vkey"]]) == 1


def test_a_gap_fails_by_the_document_and_by_blockd(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    previous = exported["checkpoints"][1]  # size 2
    with pytest.raises(Refused, match="entries 2 to 2 not shown"):
        spec_verify(exported["part"], exported["vkey"], previous)  # begins at 3
    (tmp_path / "b.json").write_text(exported["part"])
    (tmp_path / "seen.txt").write_text(previous)
    args = ["audit", "verify", str(tmp_path / "b.json"), "--key", exported["vkey"]]
    assert main([*args, "--previous", str(tmp_path / "seen.txt")]) == 1
    assert main([*args, "--previous", str(tmp_path / "seen.txt"), "--allow-gap"]) == 0
