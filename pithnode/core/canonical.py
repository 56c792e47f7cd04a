"""Canonical JSON (PROTOCOL.md part 1) and the checks that make a value signable.

`CJ(x)` is exactly stdlib ``json.dumps(x, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` encoded as UTF-8: every hash and signature in Pith depends
on these bytes, so no other serializer may produce them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

MAX_DEPTH = 64
MAX_SAFE_INT = 2**53

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


class CanonicalError(ValueError):
    """A value that has no canonical form (float, lone surrogate, too deep, ...)."""


def canonical_bytes(value: Any) -> bytes:
    """CJ(value). Raises CanonicalError for a string that is not valid Unicode."""
    try:
        return _dumps(value).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate cannot be UTF-8
        raise CanonicalError("string is not valid Unicode (lone surrogate)") from exc


_HOLE = "\ud800hole\ud800"  # a lone surrogate never survives into canonical bytes: a unique mark


def canonical_bytes_spliced(value: dict[str, Any], key: str, items: list[bytes]) -> bytes:
    """CJ of `value` with member `key` set to a list whose items' CJ are
    `items`, already computed: they are spliced in, not serialized again.
    Equal to CJ({**value, key: <those items>}) byte for byte."""
    text = _dumps({**value, key: _HOLE})
    head, sep, tail = text.partition(_dumps(_HOLE))
    try:
        return head.encode("utf-8") + b"[" + b",".join(items) + b"]" + tail.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate in the rest of `value`
        raise CanonicalError("string is not valid Unicode (lone surrogate)") from exc


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


def canonical_hash_chunked(value: Any, *, chunk: int = 64, depth: int = 2) -> str:
    """H(value), equal to `canonical_hash(value)`, without ever holding CJ(value)
    whole: objects in the top `depth` levels are written member by member and
    long arrays `chunk` items at a time, each piece hashed as it is made. On a
    large value (the state of a subject with many events) the pieces stay in
    the CPU caches, which makes this faster as well as lighter."""
    h = hashlib.sha256()
    try:
        _feed(h.update, value, depth, chunk)
    except UnicodeEncodeError as exc:  # a lone surrogate cannot be UTF-8
        raise CanonicalError("string is not valid Unicode (lone surrogate)") from exc
    return h.hexdigest()


def _feed(write: Any, value: Any, depth: int, chunk: int) -> None:
    t = type(value)
    if t is dict and depth > 0 and value and all(type(k) is str for k in value):
        sep = b"{"  # sort_keys: members in the order of their (unique) keys
        for k in sorted(value):
            write(sep + _dumps(k).encode("utf-8") + b":")
            sep = b","
            _feed(write, value[k], depth - 1, chunk)
        write(b"}")
    elif t is list and len(value) > chunk:
        write(b"[")
        for i in range(0, len(value), chunk):
            if i:
                write(b",")
            write(_dumps(value[i:i + chunk])[1:-1].encode("utf-8"))  # the items, without the brackets
        write(b"]")
    else:
        write(_dumps(value).encode("utf-8"))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every parse: json.loads with an option builds a new one per call.
_decode = json.JSONDecoder(parse_constant=_no_constants).decode


def parse_json(data: bytes | str) -> Any:
    """Parse untrusted JSON. Raises ValueError (never RecursionError) on bad input.

    NaN/Infinity are refused outright; floats survive parsing so that admission
    can reject the one event holding them, not the whole document. Bytes are
    read as json.loads reads them (UTF-8, -16 or -32).
    """
    try:
        if not isinstance(data, str):
            data = data.decode(json.detect_encoding(data), "surrogatepass")
        return _decode(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from exc
