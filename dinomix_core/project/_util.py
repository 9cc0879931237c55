"""Small helpers shared by the project modules."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """ISO 8601 UTC time with microseconds: sortable as text, unambiguous across time zones."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
