"""Try, and try again with backoff while the failure is transient: every channel's loop.

>>> async def busy_then_ok(attempt: int) -> Answer:
...     return Answer(DeliveryStatus.BUSY if attempt < 3 else DeliveryStatus.OK)
>>> d = asyncio.run(deliver("r1", busy_then_ok, RetrySettings(backoff_s=0)))
>>> d.status, d.attempts
(<DeliveryStatus.OK: 'ok'>, 3)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from escalation.notification import Delivery, DeliveryStatus
from homecare.settings import RetrySettings

log = logging.getLogger(__name__)

DETAIL_MAX = 200


@dataclass(frozen=True, slots=True)
class Answer:
    """One try's outcome: the status, whether retrying is pointless, and a wait hint."""

    status: DeliveryStatus
    detail: str = ""
    final: bool = False
    retry_after: float | None = None
    acknowledged_by: str | None = None


async def deliver(
    ref: str, attempt: Callable[[int], Awaitable[Answer]], retry: RetrySettings
) -> Delivery:
    """Call ``attempt(1)``, ``attempt(2)``… until ok, a final answer, or ``retry.attempts``;
    the returned status is the last try's. Never raises for a receiver's failure."""
    n = 0
    while True:
        n += 1
        got = await attempt(n)
        detail = got.detail[:DETAIL_MAX]
        if got.status == DeliveryStatus.OK:
            return Delivery(ref=ref, status=got.status, detail=detail, attempts=n,
                            delivered=time.time(),
                            acknowledged_by=got.acknowledged_by)  # fmt: skip
        if got.final or n >= retry.attempts:
            log.warning("delivery %s: %s after %d tries (%s)", ref, got.status, n, detail)
            return Delivery(ref=ref, status=got.status, detail=detail, attempts=n, final=got.final)
        await asyncio.sleep(retry.delay(n, got.retry_after))
