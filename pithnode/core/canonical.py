"""Canonical JSON (PROTOCOL.md part 1) and the checks that make a value signable.

`CJ(x)` is defined as stdlib ``json.dumps(x, sort_keys=True, separators=(",",
":"), ensure_ascii=False)`` encoded as UTF-8: every hash and signature in Pith
depends on these bytes.

The fast path: on the admissible domain (what `check_signable` accepts:
dicts with str keys, lists, valid-Unicode strings, ints with |n| <= 2**53,
bools, null, at most 128 deep) msgspec's sorted-key encoder gives the same
bytes 7-10x faster, and msgspec's decoder with floats refused gives the same
values 2-3x faster. tests/test_fastjson.py proves both equal to the stdlib
definition there (stdlib as the oracle). Everything else (floats, NaN, ints
past 2**53, lone surrogates, other types, deeper nesting, BOM or UTF-16
input, ``\ud800`` escapes) takes the stdlib path, so it is serialized,
parsed or refused exactly as the stdlib does.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec

from ..errors import InputError

MAX_DEPTH = 64
MAX_SAFE_INT = 2**53
# Depth of the fast path's domain: a bundle holds events two levels down and
# a state holds payloads four down, so admitted data fits with room to spare.
FAST_DEPTH = 2 * MAX_DEPTH

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_fast_encode = msgspec.json.Encoder(order="sorted").encode


class CanonicalError(ValueError, InputError):
    """A value that has no canonical form (float, lone surrogate, too deep, ...)."""


def stdlib_canonical_bytes(value: Any) -> bytes:
    """CJ(value) by its definition. Raises CanonicalError for a string that is not valid Unicode."""
    try:
        return _dumps(value).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate cannot be UTF-8
        raise CanonicalError("string is not valid Unicode (lone surrogate)") from exc


def admissible_bytes(value: Any) -> bytes:
    """CJ(value) for a value `check_signable` accepted (the caller checked):
    msgspec, or the stdlib for what msgspec refuses (a lone surrogate, which
    then raises CanonicalError as the stdlib path always has)."""
    try:
        return _fast_encode(value)
    except Exception:  # noqa: BLE001 - whatever msgspec refuses, the definition decides
        return stdlib_canonical_bytes(value)


def canonical_bytes(value: Any) -> bytes:
    """CJ(value), for any value. Raises CanonicalError for a string that is not valid Unicode."""
    try:
        check_signable(value, FAST_DEPTH)
    except CanonicalError:
        return stdlib_canonical_bytes(value)
    return admissible_bytes(value)


def canonical_bytes_spliced(value: dict[str, Any], key: str, items: list[bytes]) -> bytes:
    """CJ of `value` with member `key` set to a list whose items' CJ are
    `items`, already computed: they are spliced in, not serialized again.
    Equal to CJ({**value, key: <those items>}) byte for byte."""
    if not all(type(k) is str for k in value):
        raise CanonicalError("object key is not a string")
    joined = b"[" + b",".join(items) + b"]"
    members = {**value, key: None}
    return b"{" + b",".join(
        canonical_bytes(k) + b":" + (joined if k == key else canonical_bytes(members[k])) for k in sorted(members)
    ) + b"}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(value: Any) -> str:
    """H(value): lowercase hex SHA-256 of CJ(value)."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


def check_signable(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise CanonicalError unless `value` holds only objects with string keys,
    arrays, strings, integers with |n| <= 2**53, booleans and null, nested at
    most `max_depth` containers deep (the value itself counts as level 1).

    Strings are not scanned here: a lone surrogate fails `canonical_bytes`,
    which every caller runs next anyway. Iterative, so hostile depth cannot
    exhaust the Python stack.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        t = type(node)
        if t is dict:
            if depth > max_depth:
                raise CanonicalError(f"nesting deeper than {max_depth}")
            for k, v in node.items():
                if type(k) is not str:
                    raise CanonicalError("object key is not a string")
                tv = type(v)
                if tv is str or tv is bool or v is None:
                    continue
                if tv is int:
                    if -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
                        continue
                    raise CanonicalError(f"integer out of range at {k!r}")
                push((v, depth + 1))
        elif t is list:
            if depth > max_depth:
                raise CanonicalError(f"nesting deeper than {max_depth}")
            for v in node:
                push((v, depth + 1))
        elif t is str or t is bool or node is None:
            pass
        elif t is int:
            if not -MAX_SAFE_INT <= node <= MAX_SAFE_INT:
                raise CanonicalError("integer out of range")
        elif t is float:
            raise CanonicalError("floats are not allowed in signed objects")
        else:
            raise CanonicalError(f"value of type {t.__name__} is not JSON")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_float(raw: str) -> Any:
    raise ValueError("a float leaves the fast path's domain")


# One decoder each for every parse: json.loads with an option builds a new one per call.
_decode = json.JSONDecoder(parse_constant=_no_constants).decode
_fast_decode = msgspec.json.Decoder(float_hook=_no_float).decode


def stdlib_parse_json(data: bytes | str) -> Any:
    """The definition `parse_json` keeps: json.loads, NaN and Infinity refused."""
    try:
        if not isinstance(data, str):
            data = data.decode(json.detect_encoding(data), "surrogatepass")
        return _decode(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from exc


def parse_json(data: bytes | str) -> Any:
    """Parse untrusted JSON. Raises ValueError (never RecursionError) on bad input.

    NaN/Infinity are refused outright; floats survive parsing so that admission
    can reject the one event holding them, not the whole document. Bytes are
    read as json.loads reads them (UTF-8, -16 or -32).

    msgspec parses what it can (UTF-8 text without floats: the admissible
    domain); anything it refuses, floats and every error included, is parsed
    again by the stdlib, which decides the value or the error.
    """
    if type(data) is bytes or type(data) is str:
        try:
            return _fast_parse(data)
        except Exception:  # noqa: BLE001 - out of the fast domain: the definition decides
            pass
    return stdlib_parse_json(data)


def _fast_parse(data: bytes | str, frames: int = 3) -> Any:
    """msgspec's parse, `frames` + 1 Python frames below `parse_json`. msgspec
    and json's scanner count nesting against the same recursion budget, and
    the scanner runs three frames below parse_json (stdlib_parse_json,
    JSONDecoder.decode, raw_decode): called one deeper still, msgspec gives
    up on nesting before json would, never after, so a document too deep
    for the definition is never read by the fast path."""
    return _fast_parse(data, frames - 1) if frames else _fast_decode(data)
