"""One try's outcome, as every channel reads it, and as the ladder's retry policy gets it.

A channel makes one try per send: whether and when to try again, and when to give up,
is the ladder's one retry policy (:meth:`~escalation.ladder.EscalationPolicy.after_delivery`),
with the channel's :class:`~homecare.settings.RetrySettings` (tries, backoff), counted in
the store so that a restart does not start the count again.

>>> d = delivery("r1", Answer(DeliveryStatus.BUSY, "queue full", retry_after=2.0))
>>> d.status, d.attempts, d.final, d.retry_after
(<DeliveryStatus.BUSY: 'busy'>, 1, False, 2.0)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from escalation.notification import Delivery, DeliveryStatus

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


def delivery(ref: str, got: Answer) -> Delivery:
    """The :class:`Delivery` of one try; never raises for a receiver's failure."""
    detail = got.detail[:DETAIL_MAX]
    if got.status == DeliveryStatus.OK:
        return Delivery(ref=ref, status=got.status, detail=detail, delivered=time.time(),
                        acknowledged_by=got.acknowledged_by)  # fmt: skip
    log.info("delivery %s: %s (%s)", ref, got.status, detail)
    return Delivery(ref=ref, status=got.status, detail=detail, final=got.final,
                    retry_after=got.retry_after)  # fmt: skip
