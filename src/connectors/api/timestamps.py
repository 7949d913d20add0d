"""Times as the Kubernetes API writes them (RFC 3339 in UTC, `Z`), in one place.

Conditions, Events and status files use whole seconds (`Time`); Leases keep microseconds
(`MicroTime`). Parsing accepts both, and any offset.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time in UTC, to the second (what a `Time` field can hold)."""
    return datetime.now(UTC).replace(microsecond=0)


def precise_now() -> datetime:
    """The current time in UTC with microseconds (for `MicroTime` fields)."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """`2026-01-31T12:00:00Z`: a Kubernetes `Time`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(moment: datetime) -> str:
    """`2026-01-31T12:00:00.123456Z`: a Kubernetes `MicroTime`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(text: str) -> datetime:
    """A `Time` or `MicroTime` (or any RFC 3339 time); ValueError when it is none."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
