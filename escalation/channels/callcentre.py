"""The call centre's webhook: a structured alarm modelled on SCAIP, as JSON over HTTPS.

SCAIP (SS 91100:2014, now CLC/TS 50134-9) carries social-care alarms as small XML
messages over SIP: a message type, a reference, the caller (the alarm unit), the device
that raised it and its type, a status code, a location, and how to set up the voice
call. Alarm receiving centres already work in those terms, so this webhook keeps them,
in JSON over HTTPS (the issue's transport), one alarm per request:

- ``type``: ``alarm`` (a new incident for this recipient), ``update`` (a later rung of
  the same alert), ``reset`` (cancelled or resolved: close the incident), ``heartbeat``
  (the platform is alive), ``digest`` (batched info alerts);
- ``ref``: the message reference, also the ``Idempotency-Key`` header; a retry, or a
  re-send after a restart, carries the same one, so the centre never opens a second
  incident;
- ``caller``, ``device`` (id and type), ``status`` (code, kind, text), ``priority``,
  ``location``, ``voice`` (the number to call the elder back on), ``evidence``;
- ``words``: what happened, as a sentence for the operator in their language (the call
  centre contact's ``language``, else the site's): ``{"language": "zh-CN", "text":
  "王秀英可能摔倒了"}``. The status ``text`` stays the protocol's.

The status codes are this platform's own table in SCAIP's structure (the standard's
code list is not public): see :data:`ALARM_CODES`. The receiver answers with JSON
``{"status": "ok" | "unknown_caller" | "busy" | "error", "incident": ..., "detail": ...}``;
:mod:`~escalation.channels.jsonpost` says which answers are retried. An ok
answer to an ``alarm`` or ``update`` may acknowledge it at once (SCAIP's acknowledgement
of an alarm): ``"ack": {"operator": "op-17"}``, or ``"ack": {}`` for the centre with no
operator named; a malformed ``ack`` is logged and ignored, and the alarm still counts
as delivered.

>>> alarm_code("fall").code, alarm_code("tachycardia").text, alarm_code("new_kind").code
(101, 'heart rate high', 199)
"""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

from escalation.channels.jsonpost import PostingChannel
from escalation.messages import language_of, what_happened
from escalation.notification import (
    ChannelKind,
    MessageType,
    Notification,
)
from homecare.contract import Alert, Severity
from homecare.i18n import translator
from homecare.settings import CallCentreSettings

log = logging.getLogger(__name__)

PROTOCOL = "homecare-scaip/1"
OPERATOR_ID = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
"""An operator id in an answer's ``ack``: it lands in logs and InfluxDB tags, so ids only."""
ACKNOWLEDGEABLE = (MessageType.ALARM, MessageType.UPDATE)


class AlarmCode(NamedTuple):
    code: int
    text: str
    device_type: str | None
    """The kind of device that raises it; ``None``: a wearable or a bed sensor, or the
    platform itself from several sensors (the device id says which, when there is one)."""


ALARM_CODES: dict[str, AlarmCode] = {
    "sos": AlarmCode(100, "assistance alarm (help button)", "wearable"),
    "fall": AlarmCode(101, "fall detected", "wearable"),
    "inactivity": AlarmCode(110, "no activity", None),
    "not_up": AlarmCode(111, "not up in the morning", None),
    "bed_exit": AlarmCode(112, "out of bed at night", "bed"),
    "wandering": AlarmCode(113, "left home at night", "door"),
    "bathroom": AlarmCode(114, "too long in the bathroom", "motion"),
    "tachycardia": AlarmCode(120, "heart rate high", None),
    "bradycardia": AlarmCode(121, "heart rate low", None),
    "low_spo2": AlarmCode(122, "oxygen saturation low", "wearable"),
    "breathing": AlarmCode(123, "breathing rate abnormal", "bed"),
    "battery_low": AlarmCode(300, "battery low", None),
    "offline": AlarmCode(310, "device offline", None),
    "device_offline": AlarmCode(310, "device offline", None),
    "not_worn": AlarmCode(320, "wearable not worn", "wearable"),
    "placement_unknown": AlarmCode(330, "wearable placement unknown", "wearable"),
}
OTHER = AlarmCode(199, "other alarm", None)
HEARTBEAT = AlarmCode(900, "platform alive", None)
PRIORITY = {Severity.CRITICAL: 1, Severity.WARNING: 2, Severity.INFO: 3}


def alarm_code(kind: str) -> AlarmCode:
    return ALARM_CODES.get(kind, OTHER)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _alarm(alert: Alert) -> dict[str, Any]:
    code = alarm_code(alert.kind)
    return {
        "alert_id": alert.id,
        "status": {"code": code.code, "kind": alert.kind, "text": code.text},
        "priority": PRIORITY[alert.severity],
        "severity": str(alert.severity),
        "state": str(alert.state),
        "started": _iso(alert.ts),
        "device": {"id": alert.device, "type": code.device_type},
        "evidence": {k: v if math.isfinite(v) else None for k, v in alert.evidence.items()},
    }


def scaip_message(note: Notification, sender: str, now: float | None = None) -> dict[str, Any]:
    """The JSON the call centre receives for one notification."""
    now = time.time() if now is None else now
    message: dict[str, Any] = {
        "protocol": PROTOCOL,
        "type": str(note.type),
        "ref": note.ref,
        "sender": sender,
        "sent": _iso(now),
        "created": _iso(note.created),
        "recipient": {"id": note.recipient.id, "role": note.recipient.role},
        "step": note.step,
    }
    if note.type == MessageType.HEARTBEAT:
        message["status"] = {"code": HEARTBEAT.code, "kind": "heartbeat", "text": HEARTBEAT.text}
        return message
    if note.elder is not None:
        e = note.elder
        message["caller"] = {"id": e.id, "site": e.site, "name": e.display_name,
                             "care_level": e.care_level}  # fmt: skip
        message["location"] = {"address": e.address, "site": e.site, "timezone": e.timezone}
        message["voice"] = {"phone": e.phone, "mode": "call_back" if e.phone else "none"}
    if note.alert is not None:
        message.update(_alarm(note.alert))
        message.setdefault("caller", {"id": note.alert.elder, "site": note.alert.site})
        tr = translator(language_of(note), fallback=True)
        said = what_happened(note.alert, note.elder.display_name if note.elder else
                             note.alert.elder, tr)  # fmt: skip
        message["words"] = {"language": tr.language, "text": said[:1].upper() + said[1:]}
    if note.batch:
        message["alarms"] = [{"elder": a.elder, "site": a.site, **_alarm(a)} for a in note.batch]
    if note.outcomes:
        message["outcomes"] = note.outcomes
    if note.ack_url:
        message["ack_url"] = note.ack_url
    return message


class CallCentreChannel(PostingChannel):
    """Alarms to the call centre's webhook (the recipient's address), retried, idempotent."""

    kind = ChannelKind.CALL_CENTRE

    def __init__(self, settings: CallCentreSettings | None = None) -> None:
        self.settings = settings or CallCentreSettings()
        super().__init__(self.settings)

    def message(self, note: Notification) -> dict[str, Any]:
        return scaip_message(note, self.settings.sender)

    def acknowledgement(self, note: Notification, ack: object) -> str | None:
        """The operator who took the alarm in the answer (the recipient's id when none is
        named). The answer came over the connection we opened to the configured URL, so it
        needs no contact token."""
        if note.alert is None or note.type not in ACKNOWLEDGEABLE:
            problem = f"a {note.type} cannot be acknowledged"
        elif not isinstance(ack, dict):
            problem = "not a JSON object"
        elif ack.get("operator") is None:
            return note.recipient.id
        elif isinstance(ack["operator"], str) and OPERATOR_ID.fullmatch(ack["operator"]):
            return ack["operator"]
        else:
            problem = "operator must be 1-64 letters, digits or ._:@-"
        log.warning("ack in the call centre's answer to %s ignored: %s", note.ref, problem)
        return None
