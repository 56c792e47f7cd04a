"""Wall-clock helpers for the I/O shell (the core never reads a clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc_now() -> str:
    """Now as the protocol writes instants: YYYY-MM-DDTHH:MM:SSZ."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now_precise() -> str:
    """Now with microseconds, for `signed_at` fields (outside every hash)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime | None = None) -> str:
    """An instant as the store writes them, from an ISO date (2026-12-01), an
    ISO date-time (2026-12-01T08:00:00Z, or with an offset; without one: UTC)
    or a duration back from now (90s, 30m, 24h, 7d, 2w). ValueError otherwise."""
    s = text.strip()
    if len(s) > 1 and s[-1] in _UNITS and s[:-1].isascii() and s[:-1].isdigit():
        when = (now or datetime.now(UTC)) - timedelta(seconds=int(s[:-1]) * _UNITS[s[-1]])
    else:
        try:
            when = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"{text!r} is neither an ISO date or date-time nor a duration like 24h or 7d") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
