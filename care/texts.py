"""Every person-facing word of proactive care, in one place, in the reader's language.

Reasons are built from the numbers of a sign (:class:`care.signs.Sign`), the week's
alerts and the visit policy, each in a :class:`~homecare.i18n.Translator`'s words and
number formats; page labels and messages are constants marked with :func:`N_` for the
catalogue and translated where they are shown (``tr.gettext(texts.TITLE)``). Nothing
else in ``care`` writes a word a community worker or a coordinator reads.

>>> from care.signs import Sign
>>> from homecare.i18n import translator
>>> sign_reason(Sign("e1", "activity", "steps", 1900, 3200, -1300, 5.0))
'walks 41 % less than in the four weeks before (1,900 steps a day, was 3,200)'
>>> sign_reason(Sign("e1", "night", "night_up", 4, 1, 3, 5.0))
'up four times a night (was once)'
>>> zh = translator("zh-CN")
>>> sign_reason(Sign("e1", "activity", "steps", 1900, 3200, -1300, 5.0), zh)
'步行比前四周少41%（每天1,900步，之前3,200步）'
>>> alerts_reason("fall", 2, zh), alerts_reason("sos", 1)
('本周摔倒两次', 'one SOS press this week')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from care.signs import Sign
from homecare.i18n import N_, Translator, translator
from homecare.schema import CareFollowUps, CareVisitRate

_NUMBERS = (N_("no times"), N_("once"), N_("twice"), N_("three times"), N_("four times"),
            N_("five times"), N_("six times"), N_("seven times"), N_("eight times"),
            N_("nine times"), N_("ten times"))  # fmt: skip
_COUNT_WORDS = (N_("none"), N_("one"), N_("two"), N_("three"), N_("four"), N_("five"),
                N_("six"), N_("seven"), N_("eight"), N_("nine"), N_("ten"))  # fmt: skip


def _tr(tr: Translator | None) -> Translator:
    return tr if tr is not None else translator()


def times(n: float, tr: Translator | None = None) -> str:
    """``once``, ``four times``, ``12 times``: how often, in words up to ten."""
    t, k = _tr(tr), round(n)
    if 0 <= k < len(_NUMBERS):
        return t.gettext(_NUMBERS[k])
    return t.ngettext("{n} time", "{n} times", k).format(n=t.number(k))


def count(n: int, tr: Translator | None = None) -> str:
    """``two``, ``12``: a count, in words up to ten."""
    t = _tr(tr)
    return t.gettext(_COUNT_WORDS[n]) if 0 <= n < len(_COUNT_WORDS) else t.number(n)


def sign_reason(sign: Sign, tr: Translator | None = None) -> str:
    """One plain sentence (no full stop) for a sign, with its numbers."""
    t = _tr(tr)
    w, b = sign.week, sign.baseline
    pct = t.number(round(abs(sign.rel) * 100))
    trend = sign.how in ("trend", "drift")  # a course under way
    still = t.gettext(", and still falling") if trend else ""
    rising = t.gettext(", and still rising") if trend else ""

    def n(value: float, pattern: str = "#,##0") -> str:
        return t.number(value, pattern)

    match sign.feature:
        case "steps":
            return t.gettext("walks {pct} % less than in the four weeks before "
                             "({week} steps a day, was {was})").format(
                pct=pct, week=n(w), was=n(b)) + still  # fmt: skip
        case "active_h":
            return t.gettext("active {pct} % less than in the four weeks before "
                             "({week} h a day, was {was} h)").format(
                pct=pct, week=n(w, "0.0"), was=n(b, "0.0")) + still  # fmt: skip
        case "night_up":
            return t.gettext("up {times} a night (was {was})").format(
                times=times(w, t), was=times(b, t)) + rising  # fmt: skip
        case "outings":
            return t.gettext("goes out less: the front door opens {week} times a day "
                             "(was {was})").format(week=n(w), was=n(b)) + still  # fmt: skip
        case "in_bed_h":
            return t.gettext("in bed {week} h a night (was {was} h)").format(
                week=n(w, "0.0"), was=n(b, "0.0")) + rising  # fmt: skip
        case "resting_hr":
            return t.gettext("resting pulse {week} a minute (was {was})").format(
                week=n(w), was=n(b)) + rising  # fmt: skip
        case "not_worn_h":
            return t.gettext("the wristband was not worn {week} h a day (was {was} h)").format(
                week=n(w), was=n(b))  # fmt: skip
        case "offline_h":
            return t.gettext("the bed sensor was silent {week} h a night (was {was} h)").format(
                week=n(w), was=n(b))  # fmt: skip
    return t.gettext("{feature}: {week} (was {was})").format(
        feature=sign.feature.replace("_", " "), week=n(w, "0.0"), was=n(b, "0.0"))  # fmt: skip


def stored_reason(stored: Mapping[str, Any], tr: Translator | None = None) -> str:
    """A sign kept in the register (its evidence, see :func:`care.plan.signs_rows`) in
    the reader's words: the register keeps numbers, never one language's sentence."""
    try:
        sign = Sign("", str(stored["sign"]), str(stored["feature"]), float(stored["week"]),
                    float(stored["baseline"]), float(stored["change"]), float(stored["z"]),
                    str(stored.get("how", "level")))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return str(stored.get("reason", ""))
    return sign_reason(sign, tr)


def alerts_reason(kind: str, n: int, tr: Translator | None = None) -> str:
    """``two falls this week``: the week's alerts of one kind."""
    t = _tr(tr)
    k = count(n, t)
    match kind:
        case "fall":
            text = t.ngettext("{n} fall this week", "{n} falls this week", n)
        case "sos":
            text = t.ngettext("{n} SOS press this week", "{n} SOS presses this week", n)
        case "inactivity":
            text = t.ngettext("{n} long time without moving this week",
                              "{n} long times without moving this week", n)  # fmt: skip
        case "bed_exit":
            text = t.ngettext("{n} long time out of bed at night this week",
                              "{n} long times out of bed at night this week", n)  # fmt: skip
        case "wandering":
            text = t.ngettext("{n} night-time outing this week",
                              "{n} night-time outings this week", n)  # fmt: skip
        case "morning" | "not_up":
            text = t.ngettext("{n} late morning this week", "{n} late mornings this week", n)
        case "bathroom":
            text = t.ngettext("{n} long time in the bathroom this week",
                              "{n} long times in the bathroom this week", n)  # fmt: skip
        case _:
            return t.ngettext("{n} alert ({kind}) this week", "{n} alerts ({kind}) this week",
                              n).format(n=k, kind=kind.replace("_", " "))  # fmt: skip
    return text.format(n=k)


LIVES_ALONE = N_("lives alone")
HARDSHIP = N_("in special hardship")


def care_level(level: int, tr: Translator | None = None) -> str:
    return _tr(tr).gettext("care level {level}").format(level=level)


CONTACT_WORDS = {"visit": N_("visit"), "call": N_("call")}


def due_reason(
    contact: str, every_days: int, days_since: int | None, overdue: int,
    tr: Translator | None = None,
) -> str:  # fmt: skip
    """Why a contact is due: the policy's interval, and when the last one was."""
    t = _tr(tr)
    what = t.gettext(CONTACT_WORDS[contact])
    if every_days in (30, 31):
        every = t.gettext("monthly")
    else:
        every = t.ngettext("every {n} day", "every {n} days", every_days).format(n=every_days)
    if days_since is None:
        last = t.gettext("never yet")
    else:
        last = t.ngettext("last {n} day ago", "last {n} days ago", days_since).format(
            n=days_since)  # fmt: skip
    if overdue > 0:
        return t.ngettext("{what} overdue by {n} day ({every}; {last})",
                          "{what} overdue by {n} days ({every}; {last})", overdue).format(
            what=what, n=overdue, every=every, last=last)  # fmt: skip
    return t.gettext("{what} due ({every}; {last})").format(what=what, every=every, last=last)


OUTCOMES: Mapping[str, str] = {
    "all_well": N_("All well"),
    "concern": N_("A concern (see the notes)"),
    "not_reached": N_("Not reached (not at home, no answer)"),
    "referred": N_("Referred on (GP, nurse, social services)"),
}

# -- The page --------------------------------------------------------------------------------

TITLE = N_("Proactive care")
LOGIN = N_("Log in")
LOGOUT = N_("Log out")
USERNAME = N_("Name")
PASSWORD = N_("Password")
LOGIN_FAILED = N_("That name and password do not match.")
SESSION_OVER = N_("Your session is over: please log in again.")
FORBIDDEN = N_("This form has expired or did not come from this page: please try again.")
NOT_FOUND = N_("No such elder on your site.")
LOG_IN_FIRST = N_("Please log in first.")
NAME_AND_PASSWORD = N_("A name and a password are needed.")
THIS_WEEK = N_("Who to visit or call this week")
NOTHING_THIS_WEEK = N_("Nobody needs a visit or a call this week.")
VISIT_RATE = N_("Visits this month")
GROUP = N_("Group")
CONTACTED = N_("Contacted")
TARGET = N_("Target")
OPEN_FOLLOW_UPS = N_("Open follow-ups")
NO_FOLLOW_UPS = N_("No follow-ups are open.")
RECORD = N_("Record a visit or call")
KIND = N_("What")
OUTCOME = N_("How it went")
NOTES = N_("Notes")
FOLLOW_UP = N_("Follow-up needed")
SAVE = N_("Save")
CLOSE_FOLLOW_UP = N_("Done")
RECORDED = N_("Recorded.")
SEARCH = N_("Find an elder")
SHOWING = N_("Showing {shown} of {total}.")
SHOW_MORE = N_("Show more")
SITE = N_("Site")
PHONE = N_("Phone")
LAST_CONTACT = N_("Last contact")
NEVER = N_("never")
DAY_FORMAT = N_("d MMM y")
"""The CLDR pattern of a day on the page (a word too: Chinese writes ``y年M月d日``)."""
MONTH_FORMAT = N_("MMMM y")
"""The CLDR pattern of the month of the visit rate (``December 2026``, ``2026年12月``)."""


def rate_line(contacted: int, elders: int, tr: Translator | None = None) -> str:
    return _tr(tr).gettext("{contacted} of {elders}").format(contacted=contacted, elders=elders)


PASSWORD_SHORT = N_("a password needs at least {n} characters")
BAD_KIND = N_("kind must be one of {known}, not {given}")
BAD_OUTCOME = N_("outcome must be one of {known}, not {given}")
NOTES_LONG = N_("notes are limited to {n} characters")
IN_FUTURE = N_("a visit cannot be recorded in the future")

# -- The plan on the command line, the monthly CSV -----------------------------------------

CSV_HEADERS: Mapping[str, str] = {
    "month": N_("Month"), "site": N_("Site"), "group": N_("Group"), "elders": N_("Elders"),
    "contacted": N_("Contacted"), CareVisitRate.rate_pct: N_("Rate (%)"),
    CareVisitRate.target_pct: N_("Target (%)"),
    "met": N_("Target met"), "worker": N_("Worker"), "visits": N_("Visits"),
    "calls": N_("Calls"), CareFollowUps.follow_ups_open: N_("Open follow-ups"),
    CareFollowUps.elders_overdue: N_("Elders overdue"),
}  # fmt: skip
"""The monthly CSV's header in the reader's words (``--lang``), by column."""
YES = N_("yes")
NO = N_("no")

# -- To the coordinator ----------------------------------------------------------------------

OVERDUE_KIND = "visit_overdue"
FOLLOW_UP_KIND = "follow_up_open"
