"""Short, human words for families (and the device desk): what happened, to whom, when,
where, what to do, and how to say "I'm on it".

Families are not clinicians: no codes, no raw numbers, no jargon; times are in the
elder's own timezone. The call centre gets the structured alarm instead
(:mod:`escalation.channels.callcentre`).

>>> from homecare.contract import Alert, Severity
>>> from escalation.notification import (ChannelKind, ElderCard, MessageType,
...     Notification, Recipient)
>>> alert = Alert(id="a1", site="north", elder="e1", kind="fall",
...               severity=Severity.CRITICAL, ts=1_700_000_000, updated=1_700_000_000)
>>> note = Notification(ref="r1", type=MessageType.ALARM, alert=alert, created=1_700_000_030,
...     elder=ElderCard(id="e1", site="north", display_name="Maria", address="Rose St 3",
...                     timezone="Europe/Stockholm"),
...     recipient=Recipient(id="anna", name="Anna", role="family",
...                         channel=ChannelKind.EMAIL, address="anna@example.org"))
>>> family_message(note).subject
'Urgent: Maria may have fallen'
>>> when(alert.ts, "Europe/Stockholm")
'Tuesday 14 November, 23:13 CET'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from escalation.notification import MessageType, Notification
from homecare.contract import Alert, AlertState, Severity

SIGNATURE = "— the homecare alarm service"

_WHAT: dict[str, str] = {
    "fall": "{name} may have fallen",
    "sos": "{name} pressed the help button",
    "inactivity": "{name} has not moved{for_}",
    "not_up": "{name} has not got up this morning as usual",
    "bed_exit": "{name} got up in the night and has not gone back to bed{for_}",
    "wandering": "{name} went out in the night and has not come back{for_}",
    "bathroom": "{name} went to the bathroom and nothing has moved since{for_}",
    "tachycardia": "{name}'s heart rate is unusually high",
    "bradycardia": "{name}'s heart rate is unusually low",
    "low_spo2": "{name}'s oxygen level is low",
    "breathing": "{name}'s breathing is unusual",
    "battery_low": "{name}'s alarm device needs charging",
    "offline": "{name}'s alarm device has stopped sending",
    "device_offline": "{name}'s alarm device has stopped sending",
    "not_worn": "{name} is not wearing the alarm pendant",
}
_DURATION_KEYS = ("gap_s", "out_s", "silent_s", "unworn_s")

_TODO: dict[Severity, str] = {
    Severity.CRITICAL: "Please call {name} now. If there is no answer, go round if you can, "
    "or call the emergency services.",
    Severity.WARNING: "Please call {name} to check that all is well.",
    Severity.INFO: "Nothing urgent: please help {name} with this when you next can.",
}
_SHORT_TODO: dict[Severity, str] = {
    Severity.CRITICAL: "Please call {name} now.",
    Severity.WARNING: "Please check on {name}.",
    Severity.INFO: "No hurry.",
}
_PREFIX: dict[Severity, str] = {
    Severity.CRITICAL: "Urgent",
    Severity.WARNING: "Please check",
    Severity.INFO: "For your information",
}
OUTCOME_WORDS: dict[str, str] = {
    "false_alarm": "a false alarm",
    "handled_at_home": "handled at home",
    "visit": "someone went round",
    "ambulance": "an ambulance was called",
}
_STATE_WORDS: dict[AlertState, str] = {
    AlertState.OPEN: "not answered yet",
    AlertState.NOTIFIED: "not answered yet",
    AlertState.ACKNOWLEDGED: "someone is dealing with it",
    AlertState.RESOLVED: "closed",
    AlertState.CANCELLED: "called off",
}


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    body: str
    short: str
    """One line for SMS or push: the subject, the time, and the link."""


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def when(ts: float, timezone: str) -> str:
    """A moment in the elder's local time, as people say it."""
    t = datetime.fromtimestamp(ts, _zone(timezone))
    return f"{t:%A} {t.day} {t:%B}, {t:%H:%M} {t:%Z}"


def clock(ts: float, timezone: str) -> str:
    return f"{datetime.fromtimestamp(ts, _zone(timezone)):%H:%M}"


def duration(seconds: float) -> str:
    """A rough length of time, as people say it.

    >>> duration(40), duration(25 * 60), duration(3 * 3600)
    ('about a minute', 'about 25 minutes', 'about 3 hours')
    """
    minutes = max(1, round(seconds / 60))
    if minutes < 2:
        return "about a minute"
    if minutes < 90:
        return f"about {minutes} minutes"
    return f"about {round(minutes / 60)} hours"


def what_happened(alert: Alert, name: str) -> str:
    """One plain sentence (no full stop) for an alert kind; unknown kinds stay readable."""
    template = _WHAT.get(alert.kind)
    if template is None:
        return f"there is an alert for {name}: {alert.kind.replace('_', ' ')}"
    seconds = next((alert.evidence[k] for k in _DURATION_KEYS if k in alert.evidence), None)
    for_ = f" for {duration(seconds)}" if seconds else " for a long time"
    return template.format(name=name, for_=for_)


def _name(note: Notification, alert: Alert | None = None) -> str:
    if note.elder is not None:
        return note.elder.display_name
    return alert.elder if alert is not None else "the person you care for"


def _tz(note: Notification) -> str:
    return note.elder.timezone if note.elder is not None else "UTC"


def _ack(note: Notification) -> str:
    if not note.ack_url:
        return ""
    return (
        "If you are dealing with it, open this link and press the button so the others "
        f"know:\n{note.ack_url}\n\n"
    )


def family_message(note: Notification) -> Message:
    """The words for one notification to a person (email, SMS or push)."""
    if note.type == MessageType.DIGEST:
        return desk_batch(note) if note.elder is None else daily_digest(note)
    if note.alert is None:
        raise ValueError(f"a {note.type} message to a person needs an alert")
    alert, name, tz = note.alert, _name(note, note.alert), _tz(note)
    what = what_happened(alert, name)
    sentence = what[0].upper() + what[1:]
    where = f"Where: {note.elder.address}\n" if note.elder is not None else ""
    heading = f"When: {when(alert.ts, tz)}\n{where}"
    if note.type == MessageType.RESET:
        outcome = note.outcomes.get(alert.id)
        how = OUTCOME_WORDS.get(outcome or "", _STATE_WORDS.get(alert.state, "closed"))
        subject = f"Closed: {sentence}"
        body = (f"The alert about {name} is closed: {how}.\n\n{sentence}.\n{heading}\n"
                f"Nothing more is needed from you.\n\n{SIGNATURE}\n")  # fmt: skip
        return Message(subject, body, f"{subject} ({clock(alert.ts, tz)}): {how}.")
    todo = _TODO[alert.severity].format(name=name)
    short_todo = _SHORT_TODO[alert.severity].format(name=name)
    if note.type == MessageType.UPDATE and alert.state == AlertState.ACKNOWLEDGED:
        subject = f"Update: {sentence}"
        status = "Someone is now dealing with this.\n\n"
        todo = short_todo = "Nothing more is needed from you for now."
        ack = ""
    elif note.type == MessageType.UPDATE:
        subject = f"Reminder: {sentence}"
        status = "No one has said yet that they are dealing with this.\n\n"
        ack = _ack(note)
    else:
        subject = f"{_PREFIX[alert.severity]}: {sentence}"
        status, ack = "", _ack(note)
    body = f"{status}{sentence}.\n\n{heading}\n{todo}\n\n{ack}{SIGNATURE}\n"
    short = f"{subject} ({clock(alert.ts, tz)}). {short_todo}"
    if ack:
        short += f" I'm on it: {note.ack_url}"
    return Message(subject, body, short)


def _outcome(note: Notification, alert: Alert) -> str:
    outcome = note.outcomes.get(alert.id)
    return OUTCOME_WORDS.get(outcome or "", _STATE_WORDS.get(alert.state, "closed"))


def daily_digest(note: Notification) -> Message:
    """A family's daily summary: nothing happened, or each alert with how it ended."""
    name, tz = _name(note), _tz(note)
    day = datetime.fromtimestamp(note.created, _zone(tz))
    if not note.batch:
        subject = f"Daily summary for {name}: no alerts"
        body = (f"Good news: nothing about {name} needed attention in the last 24 hours "
                f"(up to {day:%A} {day.day} {day:%B}, {day:%H:%M}).\n\n{SIGNATURE}\n")  # fmt: skip
        return Message(subject, body, subject + ".")
    count = len(note.batch)
    subject = f"Daily summary for {name}: {count} alert{'s' if count > 1 else ''}"
    lines = [
        f"- {when(a.ts, tz)}: {what_happened(a, name)} — {_outcome(note, a)}."
        for a in sorted(note.batch, key=lambda a: a.ts)
    ]
    body = (f"In the last 24 hours (up to {day:%A} {day.day} {day:%B}, {day:%H:%M}):\n\n"
            + "\n".join(lines) + f"\n\n{SIGNATURE}\n")  # fmt: skip
    return Message(subject, body, subject + ".")


def desk_batch(note: Notification) -> Message:
    """The device desk's batch of info alerts: ids are what the desk works with."""
    count = len(note.batch)
    subject = f"{count} device notice{'s' if count != 1 else ''}"
    lines = [
        f"- {when(a.ts, 'UTC')}: {a.kind.replace('_', ' ')} — device {a.device or 'none'}, "
        f"elder {a.elder}, site {a.site}"
        for a in sorted(note.batch, key=lambda a: (a.site, a.elder, a.ts))
    ]
    body = "\n".join(lines or ["- nothing"]) + f"\n\n{SIGNATURE}\n"
    return Message(subject, body, subject + ".")
