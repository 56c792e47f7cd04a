"""Wall-clock helpers for the I/O shell (the core never reads a clock)."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """Now as the protocol writes instants: YYYY-MM-DDTHH:MM:SSZ."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now_precise() -> str:
    """Now with microseconds, for `signed_at` fields (outside every hash)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
