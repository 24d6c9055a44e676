"""Short, human words for families (and the device desk): what happened, to whom, when,
where, what to do, and how to say "I'm on it".

Families are not clinicians: no codes, no raw numbers, no jargon; times are in the
elder's own timezone. The call centre gets the structured alarm instead
(:mod:`escalation.channels.callcentre`).

Every word is in the reader's language (the recipient's, else the elder's site's, else
English: :func:`language_of`), from the catalogues of :mod:`homecare.i18n`. An alarm's
``short`` text is one SMS segment (70 characters in Chinese); the acknowledgement link
travels as its own line (``ack``), a second SMS.

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
>>> zh = note.model_copy(update={"recipient": note.recipient.model_copy(
...     update={"language": "zh-CN"})})
>>> family_message(zh).subject
'紧急：Maria可能摔倒了'
"""

from __future__ import annotations

from dataclasses import dataclass

from escalation.notification import MessageType, Notification
from homecare.alerts import SOURCE_BROKEN, is_operations
from homecare.contract import Alert, AlertState, Severity
from homecare.i18n import N_, Translator, translator

__all__ = [
    "OUTCOME_WORDS",
    "Message",
    "clock",
    "daily_digest",
    "desk_batch",
    "duration",
    "family_message",
    "language_of",
    "outcome_words",
    "sms_segments",
    "state_words",
    "what_happened",
    "when",
]

_EN = translator()

_WHAT: dict[str, str] = {
    "fall": N_("{name} may have fallen"),
    "sos": N_("{name} pressed the help button"),
    "inactivity": N_("{name} has not moved{for_}"),
    "not_up": N_("{name} has not got up this morning as usual"),
    "bed_exit": N_("{name} got up in the night and has not gone back to bed{for_}"),
    "wandering": N_("{name} went out in the night and has not come back{for_}"),
    "tachycardia": N_("{name}'s heart rate is unusually high"),
    "bradycardia": N_("{name}'s heart rate is unusually low"),
    "low_spo2": N_("{name}'s oxygen level is low"),
    "breathing": N_("{name}'s breathing is unusual"),
    "battery_low": N_("{name}'s alarm device needs charging"),
    "offline": N_("{name}'s alarm device has stopped sending"),
    "device_offline": N_("{name}'s alarm device has stopped sending"),
    "not_worn": N_("{name} is not wearing the alarm pendant"),
    "placement_unknown": N_("{name}'s alarm wearable does not say where it is worn"),
    "bathroom": N_("{name} has been in the bathroom{for_} with no sign of coming out"),
    "fall_candidate": N_("{name} may have fallen (not yet confirmed)"),
    "fall_recovered": N_("{name} had a fall and got up again after being down{for_}"),
    "visit_overdue": N_("{name} is overdue for a visit or call from the care team"),
    "follow_up_open": N_("a follow-up after a visit to {name} is still open"),
    # an operations alert: {name} is a broker stream (TELEMETRY), not a person
    SOURCE_BROKEN: N_(
        "the {name} stream has received nothing from the homes' devices"
        "{for_}: no alarm from a home is being detected"
    ),
}
_DURATION_KEYS = ("gap_s", "out_s", "silent_s", "unworn_s", "broken_s", "down_s")
_OPS_TODO = N_(
    "Please tell the engineer on duty now: check the broker (homecare broker "
    "check) and the {name} stream's source. Until it is mended, alarms from "
    "homes do not reach you."
)
_OPS_SHORT_TODO = N_("Call the engineer on duty now.")

_TODO: dict[Severity, str] = {
    Severity.CRITICAL: N_("Please call {name} now. If there is no answer, go round if you can, "
                          "or call the emergency services."),
    Severity.WARNING: N_("Please call {name} to check that all is well."),
    Severity.INFO: N_("Nothing urgent: please help {name} with this when you next can."),
}  # fmt: skip
_SHORT_TODO: dict[Severity, str] = {
    Severity.CRITICAL: N_("Please call {name} now."),
    Severity.WARNING: N_("Please check on {name}."),
    Severity.INFO: N_("No hurry."),
}
_PREFIX: dict[Severity, str] = {
    Severity.CRITICAL: N_("Urgent"),
    Severity.WARNING: N_("Please check"),
    Severity.INFO: N_("For your information"),
}
OUTCOME_WORDS: dict[str, str] = {
    "false_alarm": N_("a false alarm"),
    "handled_at_home": N_("handled at home"),
    "visit": N_("someone went round"),
    "ambulance": N_("an ambulance was called"),
}
"""How an alert ended, in English words (the msgids): :func:`outcome_words` translates."""
_STATE_WORDS: dict[AlertState, str] = {
    AlertState.OPEN: N_("not answered yet"),
    AlertState.NOTIFIED: N_("not answered yet"),
    AlertState.ACKNOWLEDGED: N_("someone is dealing with it"),
    AlertState.RESOLVED: N_("closed"),
    AlertState.CANCELLED: N_("called off"),
}


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    body: str
    short: str
    """The alarm in one SMS or push line: the subject, the time, what to do (no link)."""
    ack: str = ""
    """"I'm on it" and the acknowledgement link, for a second SMS; empty when none."""

    @property
    def text(self) -> str:
        """``short`` and ``ack`` on one line, for a push notification."""
        return f"{self.short} {self.ack}" if self.ack else self.short


_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


def sms_segments(text: str) -> int:
    """How many SMS a text takes: GSM 03.38 (160 septets, 153 a part when split; an
    extended character takes two), else UCS-2 (70 characters, 67 a part): Chinese.

    >>> [sms_segments(c * n) for c, n in [("x", 160), ("x", 161), ("摔", 70), ("摔", 71)]]
    [1, 2, 1, 2]
    """
    if all(c in _GSM7 or c in _GSM7_EXTENDED for c in text):
        septets = len(text) + sum(c in _GSM7_EXTENDED for c in text)
        return 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def language_of(note: Notification) -> str | None:
    """The reader's language: their own, else their elder's site's (``None``: default)."""
    if note.recipient.language:
        return note.recipient.language
    return note.elder.language if note.elder is not None else None


def when(ts: float, timezone: str, tr: Translator = _EN) -> str:
    """A moment in the elder's local time, as people say it."""
    # Translators: a CLDR date pattern (weekday, day, month, time, time zone), e.g.
    # "Tuesday 14 November, 23:13 CET"; see babel.dates.format_datetime.
    return tr.datetime(ts, timezone, tr.pgettext("date pattern", "EEEE d MMMM, HH:mm zzz"))


def clock(ts: float, timezone: str, tr: Translator = _EN) -> str:
    return tr.time(ts, timezone, "HH:mm")


def duration(seconds: float, tr: Translator = _EN) -> str:
    """A rough length of time, as people say it.

    >>> duration(40), duration(25 * 60), duration(3 * 3600)
    ('about a minute', 'about 25 minutes', 'about 3 hours')
    >>> duration(3 * 3600, translator("zh-CN"))
    '约3小时'
    """
    minutes = max(1, round(seconds / 60))
    if minutes < 2:
        return tr.gettext("about a minute")
    if minutes < 90:
        return tr.ngettext("about {n} minute", "about {n} minutes", minutes).format(n=minutes)
    hours = round(minutes / 60)
    return tr.ngettext("about {n} hour", "about {n} hours", hours).format(n=hours)


def what_happened(alert: Alert, name: str, tr: Translator = _EN) -> str:
    """One plain sentence (no full stop) for an alert kind; unknown kinds stay readable."""
    template = _WHAT.get(alert.kind)
    if template is None:
        return tr.gettext("there is an alert for {name}: {what}").format(
            name=name, what=alert.kind.replace("_", " ")
        )
    seconds = next((alert.evidence[k] for k in _DURATION_KEYS if k in alert.evidence), None)
    if seconds:
        for_ = tr.gettext(" for {duration}").format(duration=duration(seconds, tr))
    else:
        for_ = tr.gettext(" for a long time")
    return tr.gettext(template).format(name=name, for_=for_)


def outcome_words(outcome: str, tr: Translator = _EN) -> str:
    """How an alert ended, in the reader's words (an unknown outcome: its own name)."""
    words = OUTCOME_WORDS.get(outcome)
    return tr.gettext(words) if words else outcome.replace("_", " ")


def state_words(state: AlertState | str, tr: Translator = _EN) -> str:
    """Where an alert stands, in the reader's words."""
    words = _STATE_WORDS.get(AlertState(state)) if state in set(AlertState) else None
    return tr.gettext(words or _STATE_WORDS[AlertState.RESOLVED])


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _name(note: Notification, tr: Translator, alert: Alert | None = None) -> str:
    if note.elder is not None:
        return note.elder.display_name
    return alert.elder if alert is not None else tr.gettext("the person you care for")


def _tz(note: Notification) -> str:
    return note.elder.timezone if note.elder is not None else "UTC"


def _ack(note: Notification, tr: Translator) -> str:
    if not note.ack_url:
        return ""
    return tr.gettext(
        "If you are dealing with it, open this link and press the button so the others "
        "know:\n{url}\n\n"
    ).format(url=note.ack_url)


def _hotline(note: Notification, tr: Translator, severity: Severity) -> str:
    """Where to turn when the elder cannot be reached: the site's hotline, if it has one."""
    number = note.elder.hotline if note.elder is not None else None
    if not number or severity == Severity.INFO:
        return ""
    return tr.gettext(
        "If you cannot reach them or need help, call the elders' services line on {hotline}."
    ).format(hotline=number)


def family_message(note: Notification) -> Message:
    """The words for one notification to a person (email, SMS or push)."""
    tr = translator(language_of(note), fallback=True)
    if note.type == MessageType.DIGEST:
        return desk_batch(note) if note.elder is None else daily_digest(note)
    if note.alert is None:
        raise ValueError(f"a {note.type} message to a person needs an alert")
    _ = tr.gettext
    alert, name, tz = note.alert, _name(note, tr, note.alert), _tz(note)
    sentence = _sentence(what_happened(alert, name, tr))
    at = clock(alert.ts, tz, tr)
    where = _("Where: {address}").format(address=note.elder.address) + "\n" if note.elder else ""
    heading = _("When: {when}").format(when=when(alert.ts, tz, tr)) + "\n" + where
    signature = _("— the homecare alarm service")
    if note.type == MessageType.RESET:
        how = outcome_words(note.outcomes[alert.id], tr) if alert.id in note.outcomes else (
            state_words(alert.state, tr))  # fmt: skip
        subject = _("Closed: {what}").format(what=sentence)
        closed = _("The alert about {name} is closed: {how}.").format(name=name, how=how)
        said, done = _("{what}.").format(what=sentence), _("Nothing more is needed from you.")
        body = f"{closed}\n\n{said}\n{heading}\n{done}\n\n{signature}\n"
        short = _("{subject} ({time}): {how}.").format(subject=subject, time=at, how=how)
        return Message(subject, body, short)
    if is_operations(alert):  # for the provider's own staff: the platform is broken
        todo, short_todo, hotline = _(_OPS_TODO).format(name=name), _(_OPS_SHORT_TODO), ""
    else:
        todo = _(_TODO[alert.severity]).format(name=name)
        short_todo = _(_SHORT_TODO[alert.severity]).format(name=name)
        hotline = _hotline(note, tr, alert.severity)
    if note.type == MessageType.UPDATE and alert.state == AlertState.ACKNOWLEDGED:
        subject = _("Update: {what}").format(what=sentence)
        status = _("Someone is now dealing with this.") + "\n\n"
        todo = short_todo = _("Nothing more is needed from you for now.")
        ack = hotline = ""
    elif note.type == MessageType.UPDATE:
        subject = _("Reminder: {what}").format(what=sentence)
        status = _("No one has said yet that they are dealing with this.") + "\n\n"
        ack = _ack(note, tr)
    else:
        subject = _("{prefix}: {what}").format(prefix=_(_PREFIX[alert.severity]), what=sentence)
        status, ack = "", _ack(note, tr)
    help_ = f"{hotline}\n\n" if hotline else ""
    said = _("{what}.").format(what=sentence)
    body = f"{status}{said}\n\n{heading}\n{todo}\n\n{help_}{ack}{signature}\n"
    short = _("{subject} ({time}). {todo}").format(subject=subject, time=at, todo=short_todo)
    if hotline and alert.severity == Severity.CRITICAL:
        short += _(" No answer: call {hotline}.").format(hotline=note.elder.hotline if note.elder
                                                         else "")  # fmt: skip
    link = _("I'm on it: {url}").format(url=note.ack_url) if ack else ""
    return Message(subject, body, short, link)


def _outcome(note: Notification, alert: Alert, tr: Translator) -> str:
    if alert.id in note.outcomes:
        return outcome_words(note.outcomes[alert.id], tr)
    return state_words(alert.state, tr)


def daily_digest(note: Notification) -> Message:
    """A family's daily summary: nothing happened, or each alert with how it ended."""
    tr = translator(language_of(note), fallback=True)
    _ = tr.gettext
    name, tz = _name(note, tr), _tz(note)
    # Translators: a CLDR pattern for the end of the day covered, e.g. "Tuesday 14 November, 09:00".
    day = tr.datetime(note.created, tz, tr.pgettext("date pattern", "EEEE d MMMM, HH:mm"))
    signature = _("— the homecare alarm service")
    if not note.batch:
        subject = _("Daily summary for {name}: no alerts").format(name=name)
        body = _("Good news: nothing about {name} needed attention in the last 24 hours "
                 "(up to {day}).").format(name=name, day=day) + f"\n\n{signature}\n"  # fmt: skip
        return Message(subject, body, _("{text}.").format(text=subject))
    count = len(note.batch)
    subject = tr.ngettext(
        "Daily summary for {name}: {n} alert", "Daily summary for {name}: {n} alerts", count
    ).format(name=name, n=count)
    lines = [
        _("- {when}: {what} — {outcome}.").format(
            when=when(a.ts, tz, tr), what=what_happened(a, name, tr), outcome=_outcome(note, a, tr)
        )
        for a in sorted(note.batch, key=lambda a: a.ts)
    ]
    body = (_("In the last 24 hours (up to {day}):").format(day=day) + "\n\n"
            + "\n".join(lines) + f"\n\n{signature}\n")  # fmt: skip
    return Message(subject, body, _("{text}.").format(text=subject))


def desk_batch(note: Notification) -> Message:
    """The device desk's batch of info alerts: ids are what the desk works with."""
    tr = translator(language_of(note), fallback=True)
    _ = tr.gettext
    count = len(note.batch)
    subject = tr.ngettext("{n} device notice", "{n} device notices", count).format(n=count)
    lines = [
        _("- {when}: {what} — device {device}, elder {elder}, site {site}").format(
            when=when(a.ts, "UTC", tr), what=a.kind.replace("_", " "),
            device=a.device or _("none"), elder=a.elder, site=a.site,
        )
        for a in sorted(note.batch, key=lambda a: (a.site, a.elder, a.ts))
    ]  # fmt: skip
    signature = _("— the homecare alarm service")
    body = "\n".join(lines or [_("- nothing")]) + f"\n\n{signature}\n"
    return Message(subject, body, _("{text}.").format(text=subject))
