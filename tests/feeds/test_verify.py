"""Acceptance rules, one hostile case per rule (after the TUF conformance suite)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from blockd.feeds import dsse
from blockd.feeds.authoring import sign_list, sign_trust
from blockd.feeds.model import LIST_PAYLOAD_TYPE
from blockd.feeds.verify import REASONS, Rejected, check_body, verify_list, verify_trust
from tests.factories import NOW, authority, key, payload, signed_list, signed_trust, trust

TRUST = trust()


def reason(raw: bytes, policy: object = TRUST, **kw: object) -> str:
    with pytest.raises(Rejected) as e:
        verify_list(raw, policy, NOW, **kw)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)
    assert e.value.reason in REASONS
    return e.value.reason


def test_valid_list_is_accepted_with_its_evidence() -> None:
    v = verify_list(signed_list(), TRUST, NOW, expect=("auth", "hosts"))
    assert v is not None
    assert v.payload.version == 1 and v.payload.entries == ["blocked.example"]
    assert v.keyids == (key("auth-1").keyid,)
    assert len(v.envelope_sha256) == 64


def test_signer_is_found_from_key_ids_without_expectation() -> None:
    v = verify_list(signed_list(), TRUST, NOW)
    assert v is not None and v.authority.id == "auth"


def test_threshold_two_of_three_distinct_keys() -> None:
    ks = [key("t1"), key("t2"), key("t3")]
    policy = trust([authority(keys=ks, threshold=2)])
    assert verify_list(signed_list(keys=ks[:2]), policy, NOW) is not None
    assert reason(signed_list(keys=ks[:1]), policy) == "signature"
    assert reason(signed_list(keys=[ks[0], ks[0]]), policy) == "signature"


def test_unknown_key_only() -> None:
    assert reason(signed_list(keys=[key("stranger")])) == "signature"
    assert reason(signed_list(keys=[key("stranger")]), expect=("auth", "hosts")) == "signature"


def test_wrong_payload_type() -> None:
    p, _ = payload()
    raw = dsse.sign("application/json", p.model_dump_json().encode(), [key("auth-1")])
    assert reason(raw, expect=("auth", "hosts")) == "payload-type"


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", signed_list()[:100], b'{"payloadType": "x"}', b"\x00" * 10],
)
def test_malformed_or_truncated_envelope(raw: bytes) -> None:
    assert reason(raw, expect=("auth", "hosts")) == "malformed"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"authority": "auth"}',
        json.dumps(
            {
                "authority": "auth",
                "list": "hosts",
                "version": 1,
                "issued_at": "x",
                "expires": "y",
                "format": "hosts",
                "entry_count": 0,
                "entries": [],
            }
        ).encode(),
        json.dumps(
            {
                "authority": "auth",
                "list": "hosts",
                "version": 1,
                "issued_at": "2026-11-23T00:00:00Z",
                "expires": "2026-11-30T00:00:00Z",
                "format": "hosts",
                "entry_count": 2,
                "entries": ["a.example"],
            }
        ).encode(),
    ],
)
def test_signed_but_malformed_payload(body: bytes) -> None:
    raw = dsse.sign(LIST_PAYLOAD_TYPE, body, [key("auth-1")])
    assert reason(raw, expect=("auth", "hosts")) == "malformed"


def test_authority_not_in_trust_policy() -> None:
    assert reason(signed_list(), expect=("nobody", "hosts")) == "unknown-authority"


def test_payload_naming_another_authority() -> None:
    policy = trust([authority("auth"), authority("other")])
    raw = signed_list(keys=[key("other-1")], authority_id="auth")
    assert reason(raw, policy) == "unknown-authority"
    assert reason(raw, policy, expect=("other", "hosts")) == "unknown-authority"


def test_list_not_authorised() -> None:
    assert reason(signed_list(list_id="secret")) == "list-not-authorised"


def test_list_other_than_configured() -> None:
    assert (
        reason(
            signed_list(list_id="urls", fmt="urls", entries=["http://a.example/"]),
            expect=("auth", "hosts"),
        )
        == "list-mismatch"
    )


def test_format_not_authorised() -> None:
    policy = trust([authority(formats=["hosts"])])
    assert (
        reason(signed_list(list_id="urls", fmt="urls", entries=["http://a.example/x"]), policy)
        == "format-not-authorised"
    )


def test_rollback_and_equal_version() -> None:
    raw = signed_list(version=4)
    assert reason(raw, last_version=5) == "rollback"
    assert verify_list(raw, TRUST, NOW, last_version=4) is None
    assert verify_list(raw, TRUST, NOW, last_version=3) is not None


def test_expired_list_freeze_attack() -> None:
    raw = signed_list(issued_at=NOW - timedelta(days=8), expires=NOW - timedelta(seconds=1))
    assert reason(raw) == "expired"


def test_issued_in_the_future_beyond_skew() -> None:
    assert reason(signed_list(issued_at=NOW + timedelta(minutes=10))) == "future"
    assert verify_list(signed_list(issued_at=NOW + timedelta(minutes=2)), TRUST, NOW)


def test_older_than_the_authoritys_maximum_age() -> None:
    raw = signed_list(issued_at=NOW - timedelta(days=31), expires=NOW + timedelta(days=1))
    assert reason(raw) == "too-old"


def test_freshness_can_be_waived_for_last_known_good() -> None:
    raw = signed_list(issued_at=NOW - timedelta(days=60), expires=NOW - timedelta(days=30))
    assert verify_list(raw, TRUST, NOW, freshness=False) is not None


def test_envelope_over_the_size_cap() -> None:
    policy = trust([authority(max_bytes=2048)])
    raw = signed_list([f"h{i}.example" for i in range(200)])
    assert reason(raw, policy, expect=("auth", "hosts")) == "too-large"


def test_too_many_entries() -> None:
    policy = trust([authority(max_entries=2)])
    assert reason(signed_list(["a.example", "b.example", "c.example"]), policy) == "too-large"


def test_body_beside_digest_mismatch_mix_and_match() -> None:
    p, body = payload(["a.example", "b.example"], body_name="hosts-1.txt")
    assert body is not None
    v = verify_list(sign_list(p, [key("auth-1")]), TRUST, NOW)
    assert v is not None
    check_body(v, body)
    other = payload(["c.example", "d.example"], body_name="hosts-1.txt")[1]
    assert other is not None and len(other) == len(body)
    for bad in (other, body + b"x", body[:-1], b""):
        with pytest.raises(Rejected) as e:
            check_body(v, bad)
        assert e.value.reason == "digest-mismatch"
        assert e.value.version == 1 and e.value.keyids == v.keyids


def test_body_declared_bigger_than_the_cap() -> None:
    policy = trust([authority(max_bytes=4096)])
    p, _ = payload(["a.example"], body_name="hosts-1.txt")
    big = p.model_copy(update={"body": p.body.model_copy(update={"size": 10_000})})  # type: ignore[union-attr]
    assert reason(sign_list(big, [key("auth-1")]), policy) == "too-large"


def test_expired_trust_policy() -> None:
    policy = trust(expires=NOW - timedelta(seconds=1))
    assert reason(signed_list(), policy) == "trust-expired"


def test_rejection_carries_the_evidence() -> None:
    with pytest.raises(Rejected) as e:
        verify_list(signed_list(version=2), TRUST, NOW, last_version=3)
    r = e.value
    assert (r.authority, r.list_id, r.version) == ("auth", "hosts", 2)
    assert r.keyids == (key("auth-1").keyid,) and r.envelope_sha256


# -- trust policy rotation (TUF root rules) -------------------------------------------------

R1, R2, R3 = key("regulator-1"), key("regulator-2"), key("regulator-3")


def test_pinned_trust_must_be_signed_by_its_own_regulator() -> None:
    assert verify_trust(signed_trust(), None, NOW).policy.version == 1
    with pytest.raises(Rejected) as e:
        verify_trust(signed_trust(keys=[R2]), None, NOW)
    assert e.value.reason == "signature"


def test_rotation_needs_current_and_new_regulator_thresholds() -> None:
    current = trust()
    rotated = trust(regulator_keys=[R2], version=2)
    ok = sign_trust(rotated, [R1, R2])
    assert verify_trust(ok, current, NOW).policy.regulator.keys == [R2.public.b64]
    with pytest.raises(Rejected) as e:  # only the new keys: an attacker's own policy
        verify_trust(sign_trust(rotated, [R2]), current, NOW)
    assert e.value.reason == "signature"
    with pytest.raises(Rejected) as e:  # only the old keys: new keys never proved possession
        verify_trust(sign_trust(rotated, [R1]), current, NOW)
    assert e.value.reason == "signature"


def test_trust_update_must_raise_the_version() -> None:
    current = trust(version=3)
    for v in (2, 3):
        with pytest.raises(Rejected) as e:
            verify_trust(sign_trust(trust(version=v), [R1]), current, NOW)
        assert e.value.reason == "rollback"


@pytest.mark.parametrize("version", [5, 7, 2**62])
def test_trust_update_steps_exactly_one_version(version: int) -> None:
    # TUF: N+1 only, so no signed version (say, one that revoked a key) can be skipped.
    with pytest.raises(Rejected) as e:
        verify_trust(sign_trust(trust(version=version), [R1]), trust(version=3), NOW)
    assert e.value.reason == "version-mismatch" and e.value.version == version
    assert verify_trust(sign_trust(trust(version=4), [R1]), trust(version=3), NOW)


def test_expired_trust_update_is_refused() -> None:
    stale = trust(version=2, expires=NOW - timedelta(days=1))
    with pytest.raises(Rejected) as e:
        verify_trust(sign_trust(stale, [R1]), trust(), NOW)
    assert e.value.reason == "expired"


def test_regulator_threshold_two_of_three() -> None:
    current = trust(regulator_keys=[R1, R2, R3], threshold=2)
    nxt = trust(regulator_keys=[R1, R2, R3], threshold=2, version=2)
    assert verify_trust(sign_trust(nxt, [R1, R3]), current, NOW)
    with pytest.raises(Rejected):
        verify_trust(sign_trust(nxt, [R3, R3]), current, NOW)


def test_authority_key_rotation_happens_through_trust() -> None:
    old, new = key("auth-1"), key("auth-2")
    v1 = trust([authority(keys=[old])])
    v2 = trust([authority(keys=[new])], version=2)
    assert verify_list(signed_list(keys=[new]), v2, NOW)
    assert reason(signed_list(keys=[new]), v1) == "signature"
    assert reason(signed_list(keys=[old]), v2) == "signature"
