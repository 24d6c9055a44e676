"""Proactive care: who needs a visit or a call this week, the visit register, the monthly
visit rate (issue 18; docs/care.md).

Signs of decline from the rollups (:mod:`care.signs`, :mod:`care.rollups`), the visit
policy (:mod:`care.policy`), the ranked list (:mod:`care.plan`), the register of visits
and workers (:mod:`care.register`), its page and API (:mod:`care.web`), the monthly
figures (:mod:`care.report`), notices to coordinators (:mod:`care.service`); every
person-facing word in :mod:`care.texts`.
"""

__all__ = ["bench", "cli", "evaluate", "plan", "policy", "register", "report", "service", "signs",
           "texts", "web"]  # fmt: skip
"""Modules the rest of the project imports; the others are this package's own."""
