"""feeds/FORMAT.md says truly which fields are required, which optional, and their defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from blockd.feeds import dsse, model
from blockd.feeds.model import Authority, Body, ListPayload, Regulator, TrustPolicy, parse_list
from tests.factories import signed_list

FORMAT = Path(__file__).resolve().parents[2] / "feeds" / "FORMAT.md"
_ROW = re.compile(r"^\| `([^`]+)` \|(.*)\|$")


def documented(section: str) -> dict[str, str]:
    """Return {field: required cell} of the tables with a `required` column in a section."""
    text = FORMAT.read_text("utf-8")
    body = text.split(f"\n## {section}")[1].split("\n## ")[0]
    rows: dict[str, str] = {}
    column = None
    for line in body.splitlines():
        if line.startswith("| field |"):
            heads = [h.strip() for h in line.strip("|").split("|")]
            column = heads.index("required") if "required" in heads else None
        elif (m := _ROW.match(line)) and column is not None:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[m.group(1)] = cells[column]
    return rows


def fields_of(rows: dict[str, str], prefix: str) -> dict[str, str]:
    """Return the rows directly under prefix (`` for the top, `body.`, `authorities[].`)."""
    return {
        k.removeprefix(prefix): v
        for k, v in rows.items()
        if k.startswith(prefix) and "." not in k.removeprefix(prefix)
    }


def check_model(cls: type[BaseModel], rows: dict[str, str]) -> None:
    assert set(rows) == set(cls.model_fields), cls.__name__
    for name, cell in rows.items():
        info = cls.model_fields[name]
        if cell == "yes":
            assert info.is_required(), f"{cls.__name__}.{name} is optional in the parser"
        elif cell.startswith("one of"):
            assert not info.is_required() and info.default is None, name
        else:
            m = re.fullmatch(r"no \(default `(.*)`\)", cell)
            assert m, f"{name}: required cell {cell!r} is not yes, no (default `…`) or one of"
            assert not info.is_required(), f"{cls.__name__}.{name} is required in the parser"
            default = info.get_default(call_default_factory=True)
            assert json.dumps(default) == m.group(1), name


@pytest.mark.parametrize(
    ("section", "prefix", "cls"),
    [
        ("2. List payload", "", ListPayload),
        ("2. List payload", "body.", Body),
        ("2. List payload", "test_entries[].", model.TestEntry),
        ("2. List payload", "rpz.", model.RpzBinding),
        ("3. Trust policy payload", "", TrustPolicy),
        ("3. Trust policy payload", "regulator.", Regulator),
        ("3. Trust policy payload", "authorities[].", Authority),
    ],
)
def test_payload_tables_match_the_parser(section: str, prefix: str, cls: type[BaseModel]) -> None:
    check_model(cls, fields_of(documented(section), prefix))


def test_alternatives_are_exactly_one_of() -> None:
    env = json.loads(signed_list(["a.example"]))
    payload: dict[str, Any] = json.loads(dsse.parse(json.dumps(env).encode()).payload)
    assert parse_list(json.dumps(payload).encode()).entries == ["a.example"]
    without = {k: v for k, v in payload.items() if k != "entries"}
    with pytest.raises(ValidationError, match="exactly one of entries"):
        ListPayload.model_validate_json(json.dumps(without))
    with pytest.raises(ValidationError, match="exactly one of host or url"):
        model.TestEntry.model_validate({})


def test_envelope_table_matches_the_parser() -> None:
    rows = documented("1. Envelope")
    env = json.loads(signed_list(["a.example"]))
    assert set(fields_of(rows, "")) == set(env)
    assert set(fields_of(rows, "signatures[].")) == set(env["signatures"][0])
    for path, cell in rows.items():
        doc = json.loads(json.dumps(env))
        if path.startswith("signatures[]."):
            del doc["signatures"][0][path.removeprefix("signatures[].")]
        else:
            del doc[path]
        raw = json.dumps(doc).encode()
        if cell == "yes":
            with pytest.raises(dsse.EnvelopeError):
                dsse.parse(raw)
        else:
            dsse.parse(raw)
