"""Random and adversarial Kafka record values for the event-contract tests, from one generator.

:func:`random_value` builds one raw value (``bytes | None``) from a ``random.Random``: objects made of JSON
text pieces (ids, ratings and times of every JSON type; numbers at and beyond the double and 64-bit
ranges, huge integers; strings with control characters, lone surrogates, combining marks, RTL marks and
every kind of whitespace, escaped or raw; RFC 3339 times valid and not: offsets, leap days, leap
seconds, year 0000, 2200), duplicate keys, case variants and escaped forms of keys, extra fields;
then byte-level damage: BOMs, truncation, trailing content, invalid UTF-8, deep nesting, long keys,
padding to the size limit, other roots, random bytes.

- ``record_values()`` is the Hypothesis strategy: Hypothesis drives the generator's random choices,
  so a failing value shrinks (the unit tests of the reference use it);
- ``corpus(n, seed)`` draws ``n`` values with a fixed seed, the same list on every run, for the tests
  that check thousands of records in one Spark job or one stream.

``DSGD_FUZZ_EXAMPLES`` (default 3000: the corpus; the Hypothesis tests run a tenth of it, at least 100)
and ``DSGD_FUZZ_SEED`` (default 21) make a longer or a different run.
"""

from __future__ import annotations

import json
import os
import random

from hypothesis import strategies as st

from dsgd.core.contract import MAX_DEPTH, MAX_ID_CHARS, MAX_KEY_UTF16_UNITS, MAX_TS_MS, MAX_VALUE_BYTES

#: Bounds of the explicit model the tests use.
RATING_MIN, RATING_MAX = 1.0, 5.0
#: Kafka timestamp the tests give records (it stands in for an absent ts).
KAFKA_TS_MS = 1_700_000_000_000
#: Records per corpus in CI; DSGD_FUZZ_EXAMPLES raises it for a longer run.
FUZZ_EXAMPLES = int(os.environ.get("DSGD_FUZZ_EXAMPLES", "3000"))
#: The seed of the corpus and of the Hypothesis tests; DSGD_FUZZ_SEED picks another one.
FUZZ_SEED = int(os.environ.get("DSGD_FUZZ_SEED", "21"))

CONTROL = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
WHITESPACE = list("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000")
INVISIBLE = list("\u200b\u200c\u200d\u200e\u200f\u202a\u202e\u2060\ufeff\ufffe\uffff\ufffd")
COMBINING = ["\u0301", "\u0308", "\u0327", "e\u0301", "\u00e9", "\u1e9b\u0323", "\u0928\u093f"]
RTL = list("\u05d0\u05d1\u0627\u0644\u202b\u202e\u200f")
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d", "\ude00"]
ASTRAL = ["\U0001f600", "\U00010000", "\U0010ffff", "\U0001f468\u200d\U0001f469"]
SYNTAX = list('"\\/{}[]:,') + ["'", "true", "null", "1e400"]
PLAIN = list("abcxyzABC0123456789-_.:@ ")
ODD = CONTROL + WHITESPACE + INVISIBLE + COMBINING + RTL + SURROGATES + ASTRAL + SYNTAX
WS = ["", "", "", "", " ", "\n", "\t", "\r\n  "]  # JSON whitespace

INT_TEXTS = ["0", "-0", "7", "-7", str(2**63 - 1), str(2**63), str(-(2**63)), str(-(2**63) - 1), str(2**64),
             str(10**38), str(MAX_TS_MS), str(MAX_TS_MS + 1), "1" * 38, "9" * 39]
FLOAT_TEXTS = ["1.0", "1e3", "1E+2", "-0.0", "0.1", "1e400", "-1e400", "1e-400", "1e39", "-1e39", "1.5",
               "3.4028234663852886e38", "3.4028235677973366e38", "3.4028235677973362e38", "5.0000001",
               "0.9999999", "5.00000000000000001", "0.99999999999999999", "1700000000000.0", "1.7e12", "2.5E0"]
BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "01", "+1", ".5", "1.", "0x10", "1_000", "- 1", "1e", "tru",
               "nul", "'a'", "undefined"]
ODD_TIMES = ["yesterday", "1700000000000", "2024-01-02", "2024-01-02T03:04:05", "2024-01-02T03:04:05Z\n",
             "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2024-04-31T00:00:00Z", "2024-12-31T23:59:60Z",
             "1969-12-31T23:59:59.999-00:01", "1969-12-31T23:00:00-01:00", "2200-01-01T00:00:00Z",
             "2200-01-01T00:00:00.001Z", "2199-12-31T23:00:00-01:00", "\u0662024-01-02T03:04:05Z",
             "2024-01-02T03:04:05.Z", "0000-01-01T00:00:00Z", "2024-01-02t03:04:05.5z", "2024-01-02T03:04:05+0100"]
INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc0\x80", b"\xc1\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
                b"\xe2\x82", b"\x80", b"\xbf", b"\xf8\x88\x80\x80\x80", b"\xc2", b"\xe0\x80\xaf", b"\xf0\x8f\xbf\xbf"]
KEY_VARIANTS = {"user": ["User", "USER", "uSer", "user ", " user"], "item": ["Item", "ITEM", "item\u0000"],
                "rating": ["Rating", "RATING"], "ts": ["TS", "Ts", "tS"]}


# --- JSON text pieces -------------------------------------------------------------------------------

def _utf16(s: str) -> list[int]:
    data = s.encode("utf-16-le", "surrogatepass")
    return [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)]


def json_string(r: random.Random, s: str) -> str:
    """``s`` as a JSON string literal in one of several escape styles. The ``raw`` style leaves control
    characters (invalid JSON) and lone surrogates (invalid UTF-8 once encoded) as they are."""
    style = r.choice(["dumps", "dumps", "dumps", "ascii", "all", "raw"])
    if style == "dumps":
        return json.dumps(s, ensure_ascii=False)
    if style == "ascii":
        return json.dumps(s)
    if style == "all":
        return '"' + "".join(f"\\u{u:04x}" for u in _utf16(s)) + '"'
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plain_text(r: random.Random, max_pieces: int = 8) -> str:
    return "".join(r.choice(PLAIN) for _ in range(r.randint(1, max_pieces)))


def odd_text(r: random.Random) -> str:
    pieces = []
    for _ in range(r.randint(0, 8)):
        k = r.random()
        pieces.append(r.choice(ODD) if k < 0.4 else r.choice(PLAIN) if k < 0.8 else chr(r.randint(0x20, 0x2FFFF)))
    if r.random() < 0.1:
        return r.choice(["a", "\u00e9", "\U0001f600", "7", "e\u0301"]) * r.choice(
            [MAX_ID_CHARS - 1, MAX_ID_CHARS, MAX_ID_CHARS + 1])
    return "".join(pieces)


def int_text(r: random.Random) -> str:
    k = r.random()
    if k < 0.4:
        return str(r.randint(-1000, 100_000))
    if k < 0.7:
        return r.choice(INT_TEXTS)
    if k < 0.9:
        return str(r.randint(-(10**40), 10**40))
    return r.choice("19") * r.choice([999, 1000, 1001, 1500])


def float_text(r: random.Random) -> str:
    k = r.random()
    if k < 0.3:
        return repr(r.uniform(-10, 10))
    if k < 0.5:
        return f"{r.choice(['', '-'])}{r.uniform(1, 10):.17g}e{r.randint(-330, 330)}"  # also past the double range
    if k < 0.9:
        return r.choice(FLOAT_TEXTS)
    return r.choice(["1." + "1" * 998, "1." + "1" * 999, "1e" + "1" * 999, "-1." + "2" * 999])


def any_json(r: random.Random, depth: int = 2) -> str:
    """Any JSON value as text (objects may repeat keys)."""
    k = r.random()
    if depth <= 0 or k < 0.6:
        return r.choice([
            lambda: int_text(r), lambda: float_text(r), lambda: r.choice(["true", "false", "null"]),
            lambda: json_string(r, odd_text(r)), lambda: json_string(r, plain_text(r)),
        ])()
    items = [any_json(r, depth - 1) for _ in range(r.randint(0, 3))]
    if k < 0.8:
        return "[" + ",".join(items) + "]"
    keys = [r.choice(['"a"', '"b"', '"user"', '""', '"\\u0061"']) for _ in items]
    return "{" + ",".join(f"{k}:{v}" for k, v in zip(keys, items, strict=True)) + "}"


def rfc3339(r: random.Random, valid: bool) -> str:
    """An RFC 3339 time; ``valid`` draws fields within their ranges (the date may still be impossible)."""
    if valid:
        y, mo, d = r.choice([1970, 1999, 2024, 2199, r.randint(1970, 2199)]), r.randint(1, 12), r.randint(1, 31)
        hh, mm, ss = r.randint(0, 23), r.randint(0, 59), r.randint(0, 59)
        off = r.choice(["Z", "z", "+00:00", "-00:00", f"{r.choice('+-')}{r.randint(0, 23):02d}:{r.randint(0, 59):02d}"])
        frac, sep, pad = r.choice(["", "", "." + str(r.randint(0, 10**r.randint(1, 12)))]), r.choice("TTt"), True
    else:
        y = r.choice([0, 1, 1969, 2200, 2201, 9999, r.randint(0, 9999)])
        mo, d, hh, mm, ss = r.randint(0, 13), r.randint(0, 32), r.randint(0, 24), r.randint(0, 60), r.randint(0, 61)
        off = r.choice(["Z", "", "+24:00", "+0100", "+01:60", "UTC", " Z", "+5:30",
                        f"{r.choice('+-')}{r.randint(0, 25):02d}:{r.randint(0, 61):02d}"])
        frac, sep = r.choice(["", ".", ".12345678901234567890", "." + "9" * r.randint(1, 4)]), r.choice("TTt ")
        pad = r.random() < 0.8
    f = (lambda n, w: str(n).zfill(w)) if pad else (lambda n, w: str(n))
    return f"{f(y, 4)}-{f(mo, 2)}-{f(d, 2)}{sep}{f(hh, 2)}:{f(mm, 2)}:{f(ss, 2)}{frac}{off}"


# --- field values: (clean, wild) --------------------------------------------------------------------

def good_id(r: random.Random) -> str:
    k = r.random()
    if k < 0.35:
        return json_string(r, plain_text(r).strip() or "u")
    if k < 0.55:
        return str(r.randint(-(2**63), 2**63 - 1)) if r.random() < 0.3 else str(r.randint(0, 5000))
    if k < 0.8:  # unusual but valid: unicode inside, escapes
        s = plain_text(r, 3) + r.choice(COMBINING + RTL[:4] + ASTRAL + INVISIBLE + [" ", "\u00a0x"]) + plain_text(r, 3)
        return json_string(r, s.strip(" \u00a0") or "v")
    return json_string(r, r.choice(["7", "true", "null", "{x", "[1]", "-0", "1e400", "\\u0000", "Infinity"]))


def wild_id(r: random.Random) -> str:
    k = r.random()
    if k < 0.35:
        return json_string(r, odd_text(r))
    if k < 0.5:
        return int_text(r)
    if k < 0.6:
        return float_text(r)
    if k < 0.75:
        return r.choice(["true", "false", "null", "[]", "{}", '["u1"]', '{"id": 1}', '""', '"  "', '"\\t"'])
    if k < 0.9:
        return any_json(r)
    return r.choice(BAD_NUMBERS)


def good_rating(r: random.Random) -> str:
    return r.choice([repr(round(r.uniform(1, 5), r.randint(0, 3))), str(r.randint(1, 5)), "1", "5", "5.0", "1.0",
                     repr(r.uniform(-10, 10))])


def wild_rating(r: random.Random) -> str:
    k = r.random()
    if k < 0.3:
        return float_text(r)
    if k < 0.45:
        return int_text(r)
    if k < 0.75:
        return r.choice(["null", "true", '"4.5"', '"NaN"', "[3]", '{"v": 3}', '""', "0", "6",
                         "0.99999999999999999", "5.000000000000001", "4.9999999"])
    if k < 0.9:
        return json_string(r, odd_text(r))
    return r.choice(BAD_NUMBERS)


def good_ts(r: random.Random) -> str:
    if r.random() < 0.6:
        return str(r.choice([r.randint(0, MAX_TS_MS), 1_600_000_000_000 + r.randint(0, 10**11), 0, MAX_TS_MS]))
    return json_string(r, rfc3339(r, True))


def wild_ts(r: random.Random) -> str:
    k = r.random()
    if k < 0.2:
        return str(r.choice([-1, -5, MAX_TS_MS + 1, 99_999_999_999_999, 2**63, r.randint(-(10**20), 10**20)]))
    if k < 0.45:
        return json_string(r, rfc3339(r, r.random() < 0.4))
    if k < 0.6:
        return json_string(r, r.choice(ODD_TIMES))
    if k < 0.75:
        return float_text(r)
    if k < 0.9:
        return r.choice(["true", "false", "null", "[]", '{"ms": 1}', '""'])
    return r.choice(BAD_NUMBERS)


FIELDS = {"user": (good_id, wild_id), "item": (good_id, wild_id), "rating": (good_rating, wild_rating),
          "ts": (good_ts, wild_ts)}


def object_text(r: random.Random) -> str:
    """A JSON object text: each field clean or wild, present, absent, repeated, renamed or escaped."""
    wild = r.random() < 0.5
    pairs: list[tuple[str, str]] = []
    for name, (good, bad) in FIELDS.items():
        value = bad if (wild and r.random() < 0.5) or r.random() < 0.05 else good
        how = r.random()
        if name == "rating" and how < 0.4 or (wild and how < 0.1) or how < 0.02:
            continue  # absent
        key = f'"{name}"'
        if wild and how < 0.2 or how < 0.04:
            key = json.dumps(r.choice(KEY_VARIANTS[name]))
        elif how < 0.08:
            key = '"\\u' + f"{ord(name[0]):04x}" + name[1:] + '"'
        pairs.append((key, value(r)))
        if wild and how > 0.95 or how > 0.99:
            pairs.append((f'"{name}"', r.choice([good, bad])(r)))  # a duplicate key
    for _ in range(r.choice([0, 0, 0, 1, 2])):
        key = r.choice(["device", "schema_version", "", "a", "USERID", "\\u0000", plain_text(r)])
        pairs.append((json.dumps(key).replace("\\\\u0000", "\\u0000"), any_json(r)))
    r.shuffle(pairs)
    body = ",".join(f"{r.choice(WS)}{k}{r.choice(WS)}:{r.choice(WS)}{v}{r.choice(WS)}" for k, v in pairs)
    return r.choice(WS) + "{" + body + "}" + r.choice(WS)


def _with_field(text: str, field: str) -> str:
    """``text`` (an object) with one more ``"key":value`` at the end."""
    inner = text.strip()[1:-1]
    return "{" + inner + ("," if inner.strip() else "") + field + "}"


def _nest(depth: int, kind: str) -> str:
    return ("[" * depth + "1" + "]" * depth) if kind == "array" else ('{"a":' * depth + "1" + "}" * depth)


def random_value(r: random.Random) -> bytes | None:
    """One raw Kafka record value: mostly objects, some damaged at the byte level."""
    k = r.random()
    if k < 0.03:
        return r.choice([None, b""])
    if k < 0.05:
        return r.randbytes(r.randint(1, 40))
    if k < 0.08:  # another root
        return any_json(r).encode("utf-8", "surrogatepass")
    text = object_text(r)
    k = r.random()
    if k < 0.02:  # deep nesting in an extra field
        depth = r.choice([MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, 998, 999, 1000])
        text = _with_field(text, f'"deep":{_nest(depth, r.choice(["array", "object"]))}')
    elif k < 0.0215:  # padded to about the size limit (rare: a 1 MiB value costs ~0.1 s to parse)
        n = MAX_VALUE_BYTES - len(_with_field(text, '"pad":""').encode("utf-8", "surrogatepass"))
        text = _with_field(text, '"pad":"' + "p" * (n + r.randint(-1, 2)) + '"')
    elif k < 0.03:  # a key at the key-length limit
        ch, units = r.choice([("k", 1), ("\u00e9", 1), ("\U0001f600", 2)])  # the limit counts UTF-16 units
        text = _with_field(text, f'"{ch * (MAX_KEY_UTF16_UNITS // units + r.choice([0, 1]))}":1')
    value = text.encode("utf-8", "surrogatepass")
    k = r.random()
    if k < 0.03:
        value = b"\xef\xbb\xbf" + value
    elif k < 0.06:
        value = value[: r.randrange(len(value))]
    elif k < 0.09:
        value += r.choice([b" x", b"{}", b',{"user":"u"}', b", 1", b"]", b"\x00", b"\n", b" ", b"\xef\xbb\xbf"])
    elif k < 0.12:
        at = r.randint(0, len(value))
        value = value[:at] + r.choice(INVALID_UTF8) + value[at:]
    elif k < 0.14:
        at = r.randrange(len(value))
        value = value[:at] + bytes([r.randrange(256)]) + value[at + 1:]
    elif k < 0.15:
        value = b"[" + value + b"]"
    return value


def record_values() -> st.SearchStrategy[bytes | None]:
    """The Hypothesis strategy: Hypothesis makes (and shrinks) every random choice of the generator."""
    return st.randoms(use_true_random=False).map(random_value)


def corpus(n: int = FUZZ_EXAMPLES, seed: int = FUZZ_SEED) -> list[bytes | None]:
    """``n`` values from :func:`random_value` with a fixed seed: the same list on every run."""
    r = random.Random(seed)
    return [random_value(r) for _ in range(n)]


def _ev(user: str, item: str = "a", rating: float | None = None, ts: int = KAFKA_TS_MS):
    from dsgd.core.contract import Event

    return Event(user, item, rating, ts)


#: Hand-picked records, one per rule: (value, result for an implicit model, result for an explicit one
#: with ratings in [RATING_MIN, RATING_MAX]); a result is an Event or a reason. ``None`` for the explicit
#: result means "the same as implicit".
EDGE_CASES: list[tuple[bytes | None, object, object]] = [
    # the three records of issue 21
    (b'{"user": 1e400, "item": "a"}', "bad_user", None),
    (b'{"user": true, "item": "a"}', "bad_user", None),
    (b'{"user": "u\\u0000x", "item": "a"}', "bad_user", None),
    # ids: strings and 64-bit integers, taken by their text
    (b'{"user": 7, "item": "7"}', _ev("7", "7"), "missing_rating"),
    (b'{"user": -0, "item": -9223372036854775808}', _ev("0", "-9223372036854775808"), "missing_rating"),
    (b'{"user": 9223372036854775807, "item": "a"}', _ev("9223372036854775807"), "missing_rating"),
    (b'{"user": 9223372036854775808, "item": "a"}', "bad_user", None),
    (b'{"user": 123456789012345678901234567890, "item": "a"}', "bad_user", None),
    (b'{"user": 1.0, "item": "a"}', "bad_user", None),
    (b'{"user": 1e3, "item": "a"}', "bad_user", None),
    (b'{"user": "u", "item": 1.5}', "bad_item", None),
    (b'{"user": false, "item": "a"}', "bad_user", None),
    (b'{"user": ["u1"], "item": "a"}', "bad_user", None),
    (b'{"user": {"id": 1}, "item": "a"}', "bad_user", None),
    (b'{"user": "true", "item": "{x"}', _ev("true", "{x"), "missing_rating"),
    (b'{"user": "", "item": "a"}', "missing_user", None),
    (b'{"user": " \\t\\u3000", "item": "a"}', "missing_user", None),
    (b'{"user": null, "item": "a"}', "missing_user", None),
    (b'{"user": "u"}', "missing_item", None),
    (b'{"user": " u", "item": "a"}', "bad_user", None),
    (b'{"user": "u\\u00a0", "item": "a"}', "bad_user", None),
    (b'{"user": "u\\u2028", "item": "a"}', "bad_user", None),
    (b'{"user": "a b", "item": "a\\u200bb"}', _ev("a b", "a\u200bb"), "missing_rating"),
    (b'{"user": "u\\u007f", "item": "a"}', "bad_user", None),
    (b'{"user": "u\\u0085", "item": "a"}', "bad_user", None),
    (b'{"user": "e\\u0301", "item": "\xc3\xa9"}', _ev("e\u0301", "\u00e9"), "missing_rating"),
    (b'{"user": "\\u05d0\\u202e", "item": "\\ud83d\\ude00"}', _ev("\u05d0\u202e", "\U0001f600"), "missing_rating"),
    (('{"user": "%s", "item": "a"}' % ("\U0001f600" * MAX_ID_CHARS)).encode(), _ev("\U0001f600" * MAX_ID_CHARS),
     "missing_rating"),
    (('{"user": "%s", "item": "a"}' % ("x" * (MAX_ID_CHARS + 1))).encode(), "bad_user", None),
    (b'{"User": "u", "item": "a"}', "missing_user", None),
    (b'{"\\u0075ser": "u", "item": "a"}', _ev("u"), "missing_rating"),
    # the JSON text
    (b'{"user": "a", "user": "b", "item": "a"}', "malformed_json", None),
    (b'{"user": "u", "item": "a", "x": {"k": 1, "k": 2}}', "malformed_json", None),
    (b'\xef\xbb\xbf{"user": "u", "item": "a"}', "malformed_json", None),
    (b'{"user": "u\xff", "item": "a"}', "malformed_json", None),
    (b'{"user": "u\xed\xa0\x80", "item": "a"}', "malformed_json", None),
    (b'{"user": "\\ud800", "item": "a"}', "malformed_json", None),
    (b'{"user": "u", "item": "a"} x', "malformed_json", None),
    (b'{"user": "u", "item": "a"}]', "malformed_json", None),
    (b'{"user": "u", "item": "a"}{"user": "v"}', "malformed_json", None),
    (b'{"user": "u", "item": "a"},{"user": "v"}', "malformed_json", None),
    (b' {"user": "u", "item": "a"}\r\n', _ev("u"), "missing_rating"),
    (b"{'user': 'u', 'item': 'a'}", "malformed_json", None),
    (b'{"user": "u", "item": "a", "rating": NaN}', "malformed_json", None),
    (b'{"user": 007, "item": "a"}', "malformed_json", None),
    (b'[{"user": "u", "item": "a"}]', "malformed_json", None),
    (b'{"user": "u", "item": "a", "x": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}", _ev("u"),
     "missing_rating"),
    (b'{"user": "u", "item": "a", "x": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", "malformed_json", None),
    (b'{"user": "u", "item": "a", "x": ' + b"1" * 1000 + b"}", _ev("u"), "missing_rating"),
    (b'{"user": "u", "item": "a", "x": ' + b"1" * 1001 + b"}", "malformed_json", None),
    (('{"user": "u", "item": "a", "%s": 1}' % ("\U0001f600" * (MAX_KEY_UTF16_UNITS // 2))).encode(), _ev("u"),
     "missing_rating"),  # an astral character is two UTF-16 units of the key-length limit
    (('{"user": "u", "item": "a", "%s": 1}' % ("\U0001f600" * (MAX_KEY_UTF16_UNITS // 2 + 1))).encode(),
     "malformed_json", None),
    (b"", "empty_value", None),
    (None, "empty_value", None),
    (b'{"user": "u", "item": "a", "pad": "' + b"p" * MAX_VALUE_BYTES + b'"}', "value_too_large", None),
    # ratings
    (b'{"user": "u", "item": "a", "rating": 4.5}', _ev("u", rating=4.5), None),
    (b'{"user": "u", "item": "a", "rating": "4.5"}', "bad_rating", None),
    (b'{"user": "u", "item": "a", "rating": true}', "bad_rating", None),
    (b'{"user": "u", "item": "a", "rating": null}', _ev("u"), "missing_rating"),
    (b'{"user": "u", "item": "a", "rating": 1e39}', "non_finite_rating", None),
    (b'{"user": "u", "item": "a", "rating": -1e400}', "non_finite_rating", None),
    (b'{"user": "u", "item": "a", "rating": 0.5}', _ev("u", rating=0.5), "rating_out_of_range"),
    (b'{"user": "u", "item": "a", "rating": 5.0000001}', _ev("u", rating=5.0), "rating_out_of_range"),
    (b'{"user": "u", "item": "a", "rating": 5}', _ev("u", rating=5.0), None),
    # times
    (b'{"user": "u", "item": "a", "ts": 0}', _ev("u", ts=0), "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": -1}', "bad_ts", "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": 7258118400000}', _ev("u", ts=MAX_TS_MS), "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": 7258118400001}', "bad_ts", "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": 1.7e12}', "bad_ts", "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "1700000000000"}', "bad_ts", "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": null}', _ev("u"), "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "2024-01-02T03:04:05Z"}', _ev("u", ts=1704164645000), "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "2024-01-02T03:04:05.6789+05:30"}', _ev("u", ts=1704144845678),
     "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "2024-01-02t03:04:05z"}', _ev("u", ts=1704164645000), "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "1969-12-31T23:00:00-01:00"}', _ev("u", ts=0), "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "2024-01-02T03:04:05"}', "bad_ts", "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "2024-01-02 03:04:05Z"}', "bad_ts", "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "2023-02-29T00:00:00Z"}', "bad_ts", "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "2024-02-29T00:00:00Z"}', _ev("u", ts=1709164800000), "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "2024-12-31T23:59:60Z"}', "bad_ts", "missing_rating"),
    (b'{"user": "u", "item": "a", "ts": "2200-01-01T00:00:00.001Z"}', "bad_ts", "missing_rating"),
]
