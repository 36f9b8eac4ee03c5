"""One background loop for the runtime's periodic work (metric flushes, drift updates)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("serin.runtime")


async def every(interval: float, work: Callable[[], None], what: str) -> None:
    """Call `work` every `interval` seconds until cancelled. A failure is logged and the loop goes
    on: monitoring must never take serving down."""
    while True:
        await asyncio.sleep(interval)
        try:
            work()
        except Exception:
            log.exception("%s failed", what)
