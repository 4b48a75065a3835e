"""The reference definition of the event contract (dsgd.core.contract), alone: no JVM.

Hand-picked records pin each rule; Hypothesis properties check the reference over random and adversarial
records (tests/contract_records.py): it never raises and gives an event or one known reason, a valid
event is a fixed point of its canonical encoding, the layout of the JSON text does not matter, and a
valid record damaged in exactly one way gets that damage's reason.
"""

from __future__ import annotations

import json
import math
import struct
import unicodedata

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from dsgd.core.contract import (
    MAX_ID_CHARS,
    MAX_TS_MS,
    MIN_TS_MS,
    REASONS,
    Event,
    canonical_id,
    parse_event,
    parse_fields,
)
from tests.contract_records import (
    EDGE_CASES,
    FUZZ_EXAMPLES,
    FUZZ_SEED,
    KAFKA_TS_MS,
    RATING_MAX,
    RATING_MIN,
    corpus,
    record_values,
)

FUZZ = settings(max_examples=max(100, FUZZ_EXAMPLES // 10), database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def ref(value: bytes | None, explicit: bool = False, kafka_ts_ms: int | None = KAFKA_TS_MS) -> Event | str:
    return parse_event(value, kafka_ts_ms=kafka_ts_ms, explicit=explicit, rating_min=RATING_MIN,
                       rating_max=RATING_MAX)


def test_issue_21_overflowing_boolean_and_nul_ids_are_rejected():
    """The three records that got through before: 1e400 stored as the quoted string "Infinity", a boolean
    id, an id with a NUL character."""
    assert ref(b'{"user": 1e400, "item": "a"}') == "bad_user"
    assert ref(b'{"user": true, "item": "a"}') == "bad_user"
    assert ref(b'{"user": "u\\u0000x", "item": "a"}') == "bad_user"


@pytest.mark.parametrize(("value", "implicit", "explicit"), EDGE_CASES,
                         ids=[repr(v)[:60] for v, _, _ in EDGE_CASES])
def test_each_rule_on_a_hand_picked_record(value, implicit, explicit):
    assert ref(value) == implicit
    assert ref(value, explicit=True) == (implicit if explicit is None else explicit)


def test_an_absent_ts_takes_the_kafka_timestamp_which_must_be_in_range_too():
    v = b'{"user": "u", "item": "a"}'
    assert ref(v, kafka_ts_ms=123) == Event("u", "a", None, 123)
    assert ref(v, kafka_ts_ms=-1) == "bad_ts"
    assert ref(v, kafka_ts_ms=None) == "bad_ts"


def test_reasons_are_in_checking_order_with_a_description_each():
    assert list(REASONS)[:3] == ["empty_value", "value_too_large", "malformed_json"]
    assert list(REASONS)[-1] == "bad_ts"
    assert all(isinstance(d, str) and len(d) > 20 and "|" not in d for d in REASONS.values())
    # the first reason that applies wins: a bad user and a missing item -> missing_item
    assert ref(b'{"user": true}') == "missing_item"
    assert ref(b'{"user": true, "item": "a", "rating": "x", "ts": "x"}', explicit=True) == "bad_user"


@seed(FUZZ_SEED)
@FUZZ
@given(record_values(), st.booleans())
def test_the_reference_never_raises_and_gives_an_event_or_one_known_reason(value, explicit):
    got = ref(value, explicit)
    if isinstance(got, str):
        assert got in REASONS
        return
    assert isinstance(got, Event)
    for id_ in (got.user, got.item):
        assert isinstance(id_, str) and 1 <= len(id_) <= MAX_ID_CHARS
        assert id_ == id_.strip(), "no leading or trailing whitespace"
        assert not any(unicodedata.category(c) == "Cc" for c in id_), "no control character"
        id_.encode("utf-8")  # no lone surrogate
    assert MIN_TS_MS <= got.ts <= MAX_TS_MS and isinstance(got.ts, int)
    if got.rating is not None:
        assert math.isfinite(got.rating)
        assert struct.unpack("<f", struct.pack("<f", got.rating))[0] == got.rating  # a 32-bit float
    if explicit:
        assert got.rating is not None and RATING_MIN <= got.rating <= RATING_MAX


@seed(FUZZ_SEED)
@FUZZ
@given(record_values(), st.booleans(), st.booleans())
def test_a_valid_event_is_a_fixed_point_of_its_canonical_encoding(value, explicit, ascii_only):
    got = ref(value, explicit)
    if not isinstance(got, Event):
        return
    doc = {"ts": got.ts, "item": got.item, "user": got.user}
    if got.rating is not None:
        doc["rating"] = got.rating
    again = json.dumps(doc, ensure_ascii=ascii_only).encode()
    assert ref(again, explicit) == got


@seed(FUZZ_SEED)
@FUZZ
@given(st.integers(-(2**63), 2**63 - 1))
def test_an_integer_id_is_the_same_id_as_its_decimal_string(n):
    assert ref(json.dumps({"user": n, "item": n}).encode()) == ref(json.dumps({"user": str(n), "item": str(n)}).encode())
    assert ref(json.dumps({"user": n, "item": "a"}).encode()) == Event(str(n), "a", None, KAFKA_TS_MS)


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                          st.text(max_size=8), st.sampled_from(["u", "7", " ", "2024-01-02T03:04:05Z", "\ud800"]))
_docs = st.dictionaries(
    st.sampled_from(["user", "item", "rating", "ts", "User", "extra", ""]),
    st.one_of(_json_scalars, st.lists(_json_scalars, max_size=2)), max_size=5)


@seed(FUZZ_SEED)
@FUZZ
@given(_docs, st.booleans(), st.sampled_from([None, 0, 2]), st.sampled_from([(",", ":"), (", ", ": ")]),
       st.booleans(), st.booleans())
def test_the_layout_of_the_json_text_does_not_change_the_result(doc, ascii_only, indent, separators, sort_keys,
                                                               extra_field):
    """Escaping (ensure_ascii), whitespace, key order and an unknown extra field change nothing."""
    plain = json.dumps(doc).encode("utf-8", "surrogatepass")
    if extra_field:
        doc = {**doc, "zz_unknown": [1, {"nested": None}]}
    other = json.dumps(doc, ensure_ascii=ascii_only, indent=indent, separators=separators,
                       sort_keys=sort_keys).encode("utf-8", "surrogatepass")
    for explicit in (False, True):
        assert ref(other, explicit) == ref(plain, explicit)


_good_ids = st.one_of(st.integers(-(2**63), 2**63 - 1),
                      st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Zs", "Zl", "Zp")),
                              min_size=1, max_size=20))
#: One damage each, with the reason it must give (for the explicit model).
DEFECTS = {
    "user_absent": (lambda d: d.pop("user"), "missing_user"),
    "user_null": (lambda d: d.update(user=None), "missing_user"),
    "user_blank": (lambda d: d.update(user=" \u2003 "), "missing_user"),
    "user_bool": (lambda d: d.update(user=True), "bad_user"),
    "user_float": (lambda d: d.update(user=2.5), "bad_user"),
    "user_huge": (lambda d: d.update(user=2**63), "bad_user"),
    "user_list": (lambda d: d.update(user=["u"]), "bad_user"),
    "user_control": (lambda d: d.update(user=f"{d['user']}\x07"), "bad_user"),
    "user_padded": (lambda d: d.update(user=f" {d['user']}"), "bad_user"),
    "user_long": (lambda d: d.update(user="u" * (MAX_ID_CHARS + 1)), "bad_user"),
    "item_absent": (lambda d: d.pop("item"), "missing_item"),
    "item_object": (lambda d: d.update(item={"id": 1}), "bad_item"),
    "item_trailing_newline": (lambda d: d.update(item=f"{d['item']}\n"), "bad_item"),
    "rating_absent": (lambda d: d.pop("rating"), "missing_rating"),
    "rating_string": (lambda d: d.update(rating=str(d["rating"])), "bad_rating"),
    "rating_overflow": (lambda d: d.update(rating=1e39), "non_finite_rating"),
    "rating_low": (lambda d: d.update(rating=RATING_MIN - 0.5), "rating_out_of_range"),
    "ts_negative": (lambda d: d.update(ts=-1), "bad_ts"),
    "ts_late": (lambda d: d.update(ts=MAX_TS_MS + 1), "bad_ts"),
    "ts_float": (lambda d: d.update(ts=d["ts"] + 0.5), "bad_ts"),
    "ts_no_offset": (lambda d: d.update(ts="2024-01-02T03:04:05"), "bad_ts"),
    "ts_bad_date": (lambda d: d.update(ts="2023-02-29T03:04:05Z"), "bad_ts"),
}
_TEXT_DEFECTS = {
    "bom": (lambda b: b"\xef\xbb\xbf" + b, "malformed_json"),
    "trailing": (lambda b: b + b" x", "malformed_json"),
    "two_objects": (lambda b: b + b"{}", "malformed_json"),
    "truncated": (lambda b: b[:-1], "malformed_json"),
    "invalid_utf8": (lambda b: b[:1] + b"\xc0\x80" + b[1:], "malformed_json"),
    "duplicate_user": (lambda b: b[:-1] + b', "user": "other"}', "malformed_json"),
    "array_root": (lambda b: b"[" + b + b"]", "malformed_json"),
}


@seed(FUZZ_SEED)
@FUZZ
@given(_good_ids, _good_ids, st.floats(RATING_MIN, RATING_MAX), st.integers(MIN_TS_MS, MAX_TS_MS),
       st.sampled_from(sorted(DEFECTS) + sorted(_TEXT_DEFECTS)))
def test_a_valid_record_damaged_in_one_way_gets_that_damages_reason(user, item, rating, ts, defect):
    doc = {"user": user, "item": item, "rating": rating, "ts": ts}
    if isinstance(user, str):
        doc["user"] = user.strip() or "u"
    if isinstance(item, str):
        doc["item"] = item.strip() or "i"
    good = json.dumps(doc).encode()
    assert isinstance(ref(good, explicit=True), Event), good
    if defect in DEFECTS:
        damage, reason = DEFECTS[defect]
        damage(doc)
        value = json.dumps(doc).encode()
    else:
        damage, reason = _TEXT_DEFECTS[defect]
        value = damage(good)
    assert ref(value, explicit=True) == reason, value


_JSON_LEVEL = ("empty_value", "value_too_large", "malformed_json")


@pytest.mark.parametrize("explicit", [False, True])
def test_decoded_fields_get_the_verdict_of_the_record(explicit):
    """parse_fields (events inside a request body, e.g. the server's fold-in) agrees with parse_event on
    every hand-picked and fuzzed record whose value is a JSON object, once decoded by json.loads."""
    checked = 0
    for value in [v for v, _, _ in EDGE_CASES] + corpus(min(FUZZ_EXAMPLES, 1500)):
        want = ref(value, explicit)
        if want in _JSON_LEVEL:
            continue
        doc = json.loads(value)
        got = parse_fields(doc, default_ts_ms=KAFKA_TS_MS, explicit=explicit, rating_min=RATING_MIN,
                           rating_max=RATING_MAX)
        assert got == want, value
        checked += 1
    assert checked > 500


def test_canonical_id_follows_the_id_rules():
    assert [canonical_id(v) for v in (7, -0, "7", "a b", 2**63 - 1)] == ["7", "0", "7", "a b", str(2**63 - 1)]
    assert [canonical_id(v) for v in (2**63, 1.0, True, None, "", " a", "a\x00", "x" * (MAX_ID_CHARS + 1))] == [None] * 8
