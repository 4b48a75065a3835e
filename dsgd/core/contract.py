"""The event contract: the normative definition of what a Kafka record must hold to be an event.

:func:`parse_event` is the reference. It maps one record value (raw bytes) to either a valid
:class:`Event` (canonical ids, rating, time) or exactly one reason out of :data:`REASONS`: the first
that applies, in the order listed. Everything else follows it: the Spark parser
(``streaming/events.py``) must give the same answer on every record (property tests check this over
random and adversarial records), ``dsgd produce`` validates its records with it before sending, and
the README's contract table says what it does. Plain Python, no Spark.

In short, a value is one JSON object (RFC 8259, UTF-8) with

- ``user``, ``item``: a string, or an integer in the signed 64-bit range written without fraction or
  exponent (taken by its text: ``7`` and ``"7"`` are the same id; ``-0`` is ``"0"``); 1..512
  characters, no control character, no leading or trailing whitespace. Never normalised: ``"é"``
  composed and decomposed are two ids.
- ``rating``: a JSON number that fits a 32-bit float; required by explicit models and within
  their bounds; optional otherwise (checked, then kept).
- ``ts``: an integer of epoch milliseconds, or an RFC 3339 time with an offset; within
  1970-01-01..2200-01-01. Absent (or null): the Kafka record timestamp.
- keys are case-sensitive (``"User"`` is an unknown field); unknown fields are ignored.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

MAX_VALUE_BYTES = 1 << 20
MAX_ID_CHARS = 512
MIN_TS_MS = 0
MAX_TS_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z
MIN_INT_ID, MAX_INT_ID = -(1 << 63), (1 << 63) - 1
#: JSON limits (those of the Jackson parser Spark uses; nesting counts the top-level object as 1).
MAX_DEPTH = 64
MAX_NUMBER_DIGITS = 1000
MAX_KEY_UTF16_UNITS = 50_000

#: Characters an id may not hold (Unicode category Cc), and may not start or end with (White_Space).
CONTROL_CHARS = "".join(map(chr, (*range(0x20), *range(0x7F, 0xA0))))
WHITESPACE_CHARS = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + \
    "\u2028\u2029\u202f\u205f\u3000"
#: An RFC 3339 date-time (offset required, no leap second); groups: y m d H M S fraction sign oh om.
RFC3339 = (r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])"
           r"(?:\.([0-9]+))?(?:[Zz]|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))")

#: Reasons, in the order they are checked: a rejected record gets the first that applies.
REASONS: dict[str, str] = {
    "empty_value": "the record has no value (null or 0 bytes)",
    "value_too_large": f"the value is larger than {MAX_VALUE_BYTES} bytes",
    "malformed_json": (
        "the value is not one JSON object (RFC 8259, UTF-8): invalid UTF-8, a BOM, not JSON (NaN, "
        "Infinity, comments, single quotes, trailing content), not an object, a duplicate key, an "
        f"escaped lone surrogate, nesting deeper than {MAX_DEPTH}, a number of more than "
        f"{MAX_NUMBER_DIGITS} digits or a key longer than {MAX_KEY_UTF16_UNITS} UTF-16 units"),
    "missing_user": "no user id: absent, null, or a string that is empty or only whitespace",
    "missing_item": "no item id: absent, null, or a string that is empty or only whitespace",
    "bad_user": (
        "the user id is neither a string nor an integer in the signed 64-bit range (e.g. true, 1.5, "
        f"1.0, 1e3, an object), or it is longer than {MAX_ID_CHARS} characters, holds a control "
        "character (U+0000-U+001F, U+007F-U+009F) or starts or ends with whitespace"),
    "bad_item": (
        "the item id is neither a string nor an integer in the signed 64-bit range (e.g. true, 1.5, "
        f"1.0, 1e3, an object), or it is longer than {MAX_ID_CHARS} characters, holds a control "
        "character (U+0000-U+001F, U+007F-U+009F) or starts or ends with whitespace"),
    "missing_rating": "an explicit model needs a rating (absent or null)",
    "bad_rating": "the rating is not a JSON number (e.g. the string \"4.5\", true, an array)",
    "non_finite_rating": "the rating does not fit a 32-bit float (beyond ±3.4028235e38, e.g. 1e39, 1e400)",
    "rating_out_of_range": "an explicit model's rating is outside [model.rating_min, model.rating_max]",
    "bad_ts": (
        "ts is neither an integer of epoch milliseconds nor an RFC 3339 time with an offset "
        "(2024-01-02T03:04:05.678+01:00; digits past milliseconds are dropped), or it is outside "
        "1970-01-01T00:00:00Z..2200-01-01T00:00:00Z (also the Kafka timestamp that stands in for "
        "an absent ts)"),
}


@dataclass(frozen=True)
class Event:
    """A valid event: canonical ids, the rating as stored (a 32-bit float) or None, epoch ms."""

    user: str
    item: str
    rating: float | None
    ts: int


def parse_event(value: bytes | None, *, kafka_ts_ms: int | None, explicit: bool, rating_min: float,
                rating_max: float) -> Event | str:
    """One record value -> the valid :class:`Event`, or the reason (a key of :data:`REASONS`).

    ``kafka_ts_ms`` is the record's Kafka timestamp, used when ``ts`` is absent. Never raises.

    >>> parse_event(b'{"user": 7, "item": "a", "ts": 1700000000000}', kafka_ts_ms=0, explicit=False,
    ...             rating_min=0, rating_max=5)
    Event(user='7', item='a', rating=None, ts=1700000000000)
    >>> parse_event(b'{"user": true, "item": "a"}', kafka_ts_ms=0, explicit=False, rating_min=0, rating_max=5)
    'bad_user'
    """
    if not value:
        return "empty_value"
    if len(value) > MAX_VALUE_BYTES:
        return "value_too_large"
    doc = _json_object(value)
    if doc is None:
        return "malformed_json"
    return _event_of(doc, kafka_ts_ms=kafka_ts_ms, explicit=explicit, rating_min=rating_min, rating_max=rating_max)


#: The field each reason of a decoded object is about (the others are about the whole value).
REASON_FIELDS = {"missing_user": "user", "bad_user": "user", "missing_item": "item", "bad_item": "item",
                 "missing_rating": "rating", "bad_rating": "rating", "non_finite_rating": "rating",
                 "rating_out_of_range": "rating", "bad_ts": "ts"}


def parse_fields(fields: dict[str, object], *, default_ts_ms: int | None, explicit: bool, rating_min: float,
                 rating_max: float) -> Event | str:
    """An already decoded JSON object (``json.loads`` values: str, int, float, bool, None, list, dict) ->
    the valid :class:`Event`, or the reason, by the same rules as :func:`parse_event` after its JSON
    checks: the contract for events that arrive inside another document (the server's fold-in
    requests). Numbers are taken by their Python value: an ``int`` is an integer, a ``float`` is not
    (``1.0`` and ``1e3`` are bad ids, as in a record). ``default_ts_ms`` stands in for an absent ``ts``.

    >>> parse_fields({"user": "u", "item": 7, "rating": 1e39}, default_ts_ms=0, explicit=False,
    ...              rating_min=0, rating_max=5)
    'non_finite_rating'
    """
    doc = {k: _as_token(v) for k, v in fields.items()}
    return _event_of(doc, kafka_ts_ms=default_ts_ms, explicit=explicit, rating_min=rating_min,
                     rating_max=rating_max)


def canonical_id(v: object) -> str | None:
    """The canonical text of a user or item id given as a decoded JSON value, None if it is no valid id.

    >>> canonical_id(7), canonical_id(" a"), canonical_id(1.0)
    ('7', None, None)
    """
    got = _id(_as_token(v))
    return got if isinstance(got, str) else None


def _as_token(v: object) -> object:
    """A Python JSON value as the decoder of :func:`parse_event` yields it (numbers as :class:`_Number`)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return v
    return _Number(str(v), True) if isinstance(v, int) else _Number(repr(v), False)


def _event_of(doc: dict, *, kafka_ts_ms: int | None, explicit: bool, rating_min: float,
              rating_max: float) -> Event | str:
    user, item = _id(doc.get("user")), _id(doc.get("item"))
    for got, reason in ((user, "missing_user"), (item, "missing_item")):
        if got is _MISSING:
            return reason
    for got, reason in ((user, "bad_user"), (item, "bad_item")):
        if got is _BAD:
            return reason
    rating, r = None, doc.get("rating")
    if r is None and explicit:
        return "missing_rating"
    if r is not None:
        if not isinstance(r, _Number):
            return "bad_rating"
        x = float(r.text)
        rating = _float32(x)
        if rating is None:
            return "non_finite_rating"
        if explicit and not rating_min <= x <= rating_max:
            return "rating_out_of_range"
    t = doc.get("ts")
    if t is None:
        ts = kafka_ts_ms
    elif isinstance(t, _Number) and t.integer:
        ts = int(t.text)
    else:
        ts = _rfc3339_ms(t) if isinstance(t, str) else None
    if ts is None or not MIN_TS_MS <= ts <= MAX_TS_MS:
        return "bad_ts"
    return Event(user, item, rating, ts)


# --- helpers -------------------------------------------------------------------------------------------

class _Number(NamedTuple):
    """A JSON number kept as its text; ``integer`` when written without fraction or exponent."""

    text: str
    integer: bool


_MISSING, _BAD = object(), object()
_CONTROL = re.compile(f"[{re.escape(CONTROL_CHARS)}]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_RFC3339 = re.compile(RFC3339)
_EPOCH_DAY = date(1970, 1, 1).toordinal()


def _id(v: object) -> object:
    """The canonical id text, or _MISSING / _BAD."""
    if isinstance(v, _Number) and v.integer and MIN_INT_ID <= int(v.text) <= MAX_INT_ID:
        return str(int(v.text))  # "-0" -> "0"; JSON allows no other non-canonical integer text
    if v is None or (isinstance(v, str) and not v.strip(WHITESPACE_CHARS)):
        return _MISSING
    if not isinstance(v, str) or len(v) > MAX_ID_CHARS or v.strip(WHITESPACE_CHARS) != v or _CONTROL.search(v):
        return _BAD
    return v


def _json_object(value: bytes) -> dict | None:
    """The parsed object, or None when the value is not one well-formed JSON object."""
    try:
        text = value.decode("utf-8")  # strict: invalid UTF-8 and encoded surrogates fail
    except UnicodeDecodeError:
        return None
    if _depth(text) > MAX_DEPTH:
        return None
    try:  # refuses a leading BOM, raw control characters in strings and trailing content
        doc = _DECODER.decode(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    # lone surrogates come only from \u escapes; a key over the limit needs over half as many characters
    # (an astral character is two UTF-16 units)
    short = len(text) <= MAX_KEY_UTF16_UNITS // 2
    return doc if ("\\u" not in text and short) or _well_formed(doc) else None


def _depth(text: str) -> int:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # cannot be deeper
    depth = deepest = 0
    for ch in _STRING.sub("", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _object(pairs: list[tuple[str, object]]) -> dict:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate key")
    return doc


def _number(text: str, integer: bool) -> _Number:
    if len(text) > MAX_NUMBER_DIGITS and sum(ch.isdigit() for ch in text) > MAX_NUMBER_DIGITS:
        raise ValueError("number too long")
    return _Number(text, integer)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _well_formed(v: object) -> bool:
    """No lone surrogate in any key or string; no key over the length limit."""
    if isinstance(v, str):
        return not _SURROGATE.search(v)
    if isinstance(v, list):
        return all(map(_well_formed, v))
    if isinstance(v, dict):
        return all(_well_formed(k) and len(k.encode("utf-16-le")) <= 2 * MAX_KEY_UTF16_UNITS and _well_formed(x)
                   for k, x in v.items())
    return True


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_int=lambda s: _number(s, True),
                            parse_float=lambda s: _number(s, False), parse_constant=_not_json)


def _float32(x: float) -> float | None:
    """``x`` rounded to a 32-bit float, or None when it is not finite there."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0] if math.isfinite(x) else None
    except OverflowError:
        return None


def _rfc3339_ms(s: str) -> int | None:
    m = _RFC3339.fullmatch(s)
    if m is None:
        return None
    y, mo, d, hh, mm, ss, frac, sign, oh, om = m.groups()
    try:
        days = date(int(y), int(mo), int(d)).toordinal() - _EPOCH_DAY
    except ValueError:  # 2023-02-29, year 0000
        return None
    ms = ((days * 24 + int(hh)) * 60 + int(mm)) * 60_000 + int(ss) * 1000 + int((frac or "0")[:3].ljust(3, "0"))
    if sign:
        ms -= (1 if sign == "+" else -1) * (int(oh) * 60 + int(om)) * 60_000
    return ms
