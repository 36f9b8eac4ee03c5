"""A fixed clock for the decision tests: the pure functions take `now`, and these name it as
seconds after T0."""

from __future__ import annotations

import datetime as dt

from serin.operator.status import from_time

T0 = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def ts(seconds: float) -> str:
    """`at(seconds)` as status writes it."""
    return from_time(at(seconds)) or ""
