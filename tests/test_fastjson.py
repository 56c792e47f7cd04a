"""The fast JSON path (msgspec) against the spec's definition (stdlib json).

Canonical bytes are defined as stdlib ``json.dumps(x, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`` in UTF-8, and parsing as
``json.loads``. The core encodes and parses with msgspec where that gives
the same answer. Here the stdlib is the oracle:

- on the admissible domain (dicts with str keys, lists, valid-Unicode
  strings, ints with |n| <= 2**53, bools, null), the raw msgspec encoder and
  decoder themselves give exactly the oracle's bytes and values (so the fast
  path is really taken there, and really equal);
- on everything, in the domain or not, the core's public functions give the
  oracle's bytes or value, or fail where it fails.

The strategies aim at the edges where JSON serializers differ: control
characters and their short escapes, U+007F, U+2028/2029, the BOM character,
non-BMP characters and keys whose order differs between code points and
UTF-16 units, ints at 2**53, 2**63 and 2**64 and far beyond, floats, lone
surrogates, duplicate keys, BOM and UTF-16/32 input, and nesting at the
domain's depth limit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pithnode.core import CanonicalError, canonical_bytes, check_signable, parse_json
from pithnode.core.canonical import FAST_DEPTH, _fast_decode, _fast_encode, admissible_bytes
from strategies import cj, scaled

# --- the oracle: the spec's definitions, written here from the spec ---


def oracle_parse(data: bytes | str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        if isinstance(data, bytes):
            data = data.decode(json.detect_encoding(data), "surrogatepass")
        return json.loads(data, parse_constant=no_constants)
    except RecursionError as exc:
        raise ValueError("too deep") from exc


def outcome(fn: Any, arg: Any) -> tuple[str, Any]:
    """What `fn(arg)` gives: its value as a typed tree, or the kind of error."""
    try:
        return "value", typed(fn(arg))
    except RecursionError:
        return "error", ValueError
    except (ValueError, TypeError) as exc:  # CanonicalError and JSONDecodeError are ValueErrors
        return "error", ValueError if isinstance(exc, ValueError) else TypeError


def typed(x: Any) -> Any:
    """A tree that compares types too (1 == 1.0 == True in Python) and keeps key order."""
    t = type(x)
    if t is dict:
        return ("dict", [(typed(k), typed(v)) for k, v in x.items()])
    if t is list:
        return ("list", [typed(v) for v in x])
    if t is float:
        return ("float", repr(x))
    return (t.__name__, x)


# --- strategies aimed at the edges ---

EDGE_CHARS = (
    [chr(c) for c in range(0x20)] + ['"', "\\", "/", "\x7f", "\x80", "\x9f", "\xa0", "é", "\u2028", "\u2029",
                                     "\ud7ff", "\ue000", "\ufeff", "\uffff", "\U00010000", "\U0001f600", "\U0010ffff"]
)
chars = st.sampled_from(EDGE_CHARS) | st.characters(codec="utf-8")  # valid Unicode: no lone surrogates
text = st.text(chars, max_size=12)
SAFE = 2**53
ints = st.sampled_from([0, 1, -1, SAFE, -SAFE, SAFE - 1, 1 - SAFE, 2**31, -(2**31), 2**32]) | st.integers(-SAFE, SAFE)
scalars = st.none() | st.booleans() | ints | text
admissible = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(text, kids, max_size=6),
    max_leaves=60,
)

floats = st.sampled_from([0.0, -0.0, 1.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 0.1, float("inf"),
                          float("-inf"), float("nan")]) | st.floats()
big_ints = st.sampled_from([SAFE + 1, -SAFE - 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 2**64 + 1, 10**100,
                            -(10**400)]) | st.integers().filter(lambda n: abs(n) > SAFE)
surrogates = st.builds(lambda a, s, b: a + s + b, text, st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]), text)
odd = floats | big_ints | surrogates | st.tuples(ints, text) | st.builds(lambda v: {1: v}, ints) | st.just(b"x")
anything = st.recursive(
    scalars | odd,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(text | surrogates, kids, max_size=5),
    max_leaves=40,
)


def nest(depth: int, leaf: Any, kind: str) -> Any:
    v = leaf
    for i in range(depth - 1):
        v = [v] if kind == "list" or (kind == "mixed" and i % 2) else {"k": v}
    return v


# --- canonical bytes ---


@settings(max_examples=scaled(4))
@given(admissible)
def test_msgspec_encodes_the_admissible_domain_exactly_as_the_definition(value: Any) -> None:
    check_signable(value)  # the strategy stays inside the domain
    expected = cj(value)
    assert _fast_encode(value) == expected  # the fast path itself, not a fallback
    assert admissible_bytes(value) == canonical_bytes(value) == expected


@settings(max_examples=scaled(4))
@given(anything)
def test_canonical_bytes_are_the_definition_for_any_value(value: Any) -> None:
    assert outcome(canonical_bytes, value) == outcome(cj, value)


@pytest.mark.parametrize("depth", [FAST_DEPTH - 1, FAST_DEPTH, FAST_DEPTH + 1, 254, 255, 256, 600])
@pytest.mark.parametrize("kind", ["list", "dict", "mixed"])
def test_nesting_at_and_past_the_fast_domain_depth(depth: int, kind: str) -> None:
    value = nest(depth, "\u2028", kind)
    assert canonical_bytes(value) == cj(value)


def test_values_msgspec_would_write_differently_take_the_stdlib_path() -> None:
    # each of these: msgspec's bytes differ from the definition, or msgspec refuses it
    for value in ([1e16], [float("nan")], {"a": float("inf")}, [2**64, 10**30], {1: "a", 2: "b"}, (1, "x"), [True, 1.0]):
        assert canonical_bytes(value) == cj(value), value
    for value in ("\ud800", {"\udfff": 1}, ["ok", "a\udc00b"]):
        with pytest.raises(CanonicalError):
            canonical_bytes(value)
    assert _fast_encode([1e16]) != cj([1e16])  # so the domain check is what keeps these right


# --- parsing ---


@st.composite
def json_texts(draw: Any, values: Any) -> bytes | str:
    """A document as some writer might lay it out: escapes or raw UTF-8, spacing, key order."""
    value = draw(values)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0, 2, "\t"])),
                      separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
                      sort_keys=draw(st.booleans()))
    text = draw(st.sampled_from(["", " ", "\n", "\r\n\t"])) + text + draw(st.sampled_from(["", " ", "\n"]))
    return text if draw(st.booleans()) else text.encode("utf-8", "surrogatepass")


@settings(max_examples=scaled(4))
@given(json_texts(admissible))
def test_msgspec_parses_the_admissible_domain_exactly_as_the_definition(data: bytes | str) -> None:
    expected = typed(oracle_parse(data))
    assert typed(_fast_decode(data)) == expected  # the fast path itself, not a fallback
    assert typed(parse_json(data)) == expected


def _mutations(data: bytes) -> list[bytes]:
    """Inputs around a valid document that parsers are known to read differently."""
    text = data.decode("utf-8")
    return [
        b"\xef\xbb\xbf" + data, text.encode("utf-16"), text.encode("utf-16-le"), text.encode("utf-32"),
        b'{"a":1,"a":[2],"b":3,"a":4}', b'["\\ud800"]', b'["\\udc00x"]', b'["\\ud800\\u0041"]',
        b'["\\ud83d\\ude00"]', b'["\xed\xa0\x80"]', b"[1e400]", b"[-1e400]", b"[1.0]", b"[1E2]", b"[-0]", b"[-0.0]",
        b"[18446744073709551616]", b"[-9223372036854775809]", b"[" + b"9" * 4300 + b"]", b"[" + b"9" * 4301 + b"]",
        b"NaN", b"[Infinity]", b"[-Infinity]", b"[1,]", b"\x0c[]", "\xa0[]".encode(), b'["\t"]', b'["\x7f"]',
        b"[" * 300 + b"]" * 300, b"[" * 5000 + b"]" * 5000, b"", b" ", b"01", b'"\\/"', b'"\\u00E9"',
        data[: len(data) // 2], data + b"x",
    ]


@settings(max_examples=scaled(3))
@given(json_texts(anything.filter(lambda v: _dumpable(v))), st.binary(max_size=24))
def test_parse_json_is_the_definition_for_any_input(data: bytes | str, noise: bytes) -> None:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    inputs: list[bytes | str] = [data, noise, raw + noise, noise + raw]
    if isinstance(data, str):
        inputs += _mutations(data.encode("utf-8")) if _valid_utf8(data) else []
    for x in inputs:
        assert outcome(parse_json, x) == outcome(oracle_parse, x), x[:80]


def _dumpable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=True)
        return True
    except (TypeError, ValueError):
        return False


def _valid_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def test_parse_json_reads_what_msgspec_refuses_as_the_definition_does() -> None:
    for data in _mutations(b'{"k":["\\u2028",1,true,null]}'):
        assert outcome(parse_json, data) == outcome(oracle_parse, data), data[:40]
    # msgspec's own answers differ on some of these: the fallback is what keeps parse_json exact
    assert typed(parse_json(b"[18446744073709551616]")) == typed([2**64])
    assert typed(parse_json(b"[1e400]")) == typed([float("inf")])
    assert parse_json(b'["\\ud800"]') == ["\ud800"]


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_parse_json_gives_up_on_nesting_exactly_where_the_definition_does(kind: str) -> None:
    """Both parsers refuse nesting near Python's recursion limit; msgspec would
    read a few levels deeper than json.loads if called from the same frame."""
    def doc(depth: int) -> bytes:
        return (b"[" * depth + b"]" * depth) if kind == "list" else (b'{"a":' * depth + b"1" + b"}" * depth)

    def reads(parse: Any, data: bytes) -> bool:  # a value, or ValueError (anything else fails the test)
        try:
            parse(data)
            return True
        except ValueError:
            return False

    lo, hi = 1, 100_000  # the deepest document the oracle reads, from this call site
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if reads(oracle_parse, doc(mid)) else (lo, mid - 1)
    assert 100 < lo < 100_000
    for depth in range(lo - 4, lo + 6):
        assert reads(parse_json, doc(depth)) == reads(oracle_parse, doc(depth)), depth
