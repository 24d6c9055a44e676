"""Every person-facing word of proactive care, in one place (for translation, issue 19).

Reasons are built from the numbers of a sign (:class:`care.signs.Sign`), the week's
alerts and the visit policy; page labels and messages are plain constants. Nothing
else in ``care`` writes a word a community worker or a coordinator reads.

>>> from care.signs import Sign
>>> sign_reason(Sign("e1", "activity", "steps", 1900, 3200, -1300, 5.0))
'walks 41 % less than in the four weeks before (1,900 steps a day, was 3,200)'
>>> sign_reason(Sign("e1", "night", "night_up", 4, 1, 3, 5.0))
'up four times a night (was once)'
"""

from __future__ import annotations

from collections.abc import Mapping

from care.signs import Sign

_NUMBERS = ("no", "once", "twice", "three times", "four times", "five times", "six times",
            "seven times", "eight times", "nine times", "ten times")  # fmt: skip
_COUNT_WORDS = ("none", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine", "ten")  # fmt: skip


def times(n: float) -> str:
    k = round(n)
    return _NUMBERS[k] if 0 <= k < len(_NUMBERS) else f"{k} times"


def count(n: int) -> str:
    return _COUNT_WORDS[n] if 0 <= n < len(_COUNT_WORDS) else str(n)


def _pct(sign: Sign) -> int:
    return round(abs(sign.rel) * 100)


def sign_reason(sign: Sign) -> str:
    """One plain sentence (no full stop) for a sign, with its numbers."""
    w, b, still = sign.week, sign.baseline, ", and still falling" if sign.how == "trend" else ""
    rising = ", and still rising" if sign.how == "trend" else ""
    match sign.feature:
        case "steps":
            return (f"walks {_pct(sign)} % less than in the four weeks before "
                    f"({w:,.0f} steps a day, was {b:,.0f}){still}")  # fmt: skip
        case "active_h":
            return (f"active {_pct(sign)} % less than in the four weeks before "
                    f"({w:.1f} h a day, was {b:.1f} h){still}")  # fmt: skip
        case "night_up":
            return f"up {times(w)} a night (was {times(b)}){rising}"
        case "outings":
            return (f"goes out less: the front door opens {w:.0f} times a day "
                    f"(was {b:.0f}){still}")  # fmt: skip
        case "in_bed_h":
            return f"in bed {w:.1f} h a night (was {b:.1f} h){rising}"
        case "resting_hr":
            return f"resting pulse {w:.0f} a minute (was {b:.0f}){rising}"
        case "not_worn_h":
            return f"the wristband was not worn {w:.0f} h a day (was {b:.0f} h)"
        case "offline_h":
            return f"the bed sensor was silent {w:.0f} h a night (was {b:.0f} h)"
    return f"{sign.feature.replace('_', ' ')}: {w:.1f} (was {b:.1f})"


ALERT_WORDS: Mapping[str, tuple[str, str]] = {
    "fall": ("a fall", "falls"),
    "sos": ("an SOS press", "SOS presses"),
    "inactivity": ("a long time without moving", "long times without moving"),
    "bed_exit": ("a long time out of bed at night", "long times out of bed at night"),
    "wandering": ("a night-time outing", "night-time outings"),
    "morning": ("a late morning", "late mornings"),
}


def alerts_reason(kind: str, n: int) -> str:
    one, many = ALERT_WORDS.get(kind, (f"an alert ({kind.replace('_', ' ')})",
                                       f"alerts ({kind.replace('_', ' ')})"))  # fmt: skip
    return f"{one} this week" if n == 1 else f"{count(n)} {many} this week"


LIVES_ALONE = "lives alone"
HARDSHIP = "in special hardship"


def care_level(level: int) -> str:
    return f"care level {level}"


CONTACT_WORDS = {"visit": "visit", "call": "call"}
CONTACT_DONE = {"visit": "visited", "call": "called"}


def due_reason(contact: str, every_days: int, days_since: int | None, overdue: int) -> str:
    """Why a contact is due: the policy's interval, and when the last one was."""
    what = CONTACT_WORDS[contact]
    every = "monthly" if every_days in (30, 31) else f"every {every_days} days"
    last = "never yet" if days_since is None else f"last {days_since} days ago"
    if overdue > 0:
        return f"{what} overdue by {overdue} days ({every}; {last})"
    return f"{what} due ({every}; {last})"


OUTCOMES: Mapping[str, str] = {
    "all_well": "All well",
    "concern": "A concern (see the notes)",
    "not_reached": "Not reached (not at home, no answer)",
    "referred": "Referred on (GP, nurse, social services)",
}

# -- The page --------------------------------------------------------------------------------

TITLE = "Proactive care"
LOGIN = "Log in"
LOGOUT = "Log out"
USERNAME = "Name"
PASSWORD = "Password"
LOGIN_FAILED = "That name and password do not match."
SESSION_OVER = "Your session is over: please log in again."
FORBIDDEN = "This form has expired or did not come from this page: please try again."
NOT_FOUND = "No such elder on your site."
THIS_WEEK = "Who to visit or call this week"
NOTHING_THIS_WEEK = "Nobody needs a visit or a call this week."
VISIT_RATE = "Visits this month"
GROUP = "Group"
CONTACTED = "Contacted"
TARGET = "Target"
OPEN_FOLLOW_UPS = "Open follow-ups"
NO_FOLLOW_UPS = "No follow-ups are open."
RECORD = "Record a visit or call"
KIND = "What"
OUTCOME = "How it went"
NOTES = "Notes"
FOLLOW_UP = "Follow-up needed"
SAVE = "Save"
CLOSE_FOLLOW_UP = "Done"
RECORDED = "Recorded."
SEARCH = "Find an elder"
SHOWING = "Showing {shown} of {total}."
SHOW_MORE = "Show more"
SITE = "Site"
PHONE = "Phone"
LAST_CONTACT = "Last contact"
NEVER = "never"


def rate_line(contacted: int, elders: int) -> str:
    return f"{contacted} of {elders}"


PASSWORD_SHORT = "a password needs at least {n} characters"
BAD_KIND = "kind must be one of {known}, not {given!r}"
BAD_OUTCOME = "outcome must be one of {known}, not {given!r}"
NOTES_LONG = "notes are limited to {n} characters"
IN_FUTURE = "a visit cannot be recorded in the future"

# -- To the coordinator ----------------------------------------------------------------------

OVERDUE_KIND = "visit_overdue"
FOLLOW_UP_KIND = "follow_up_open"
