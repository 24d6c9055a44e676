"""The words a family or a care monitor reads for the platform's own codes: alert kinds,
severities, states, outcomes, channels, door roles. Each is a catalogue entry
(:mod:`homecare.i18n`), translated where it is shown; a code without words here is
never shown as it is to a family."""

from __future__ import annotations

from homecare.i18n import N_

KINDS = {
    "fall": N_("A possible fall"),
    "fall_recovered": N_("A fall, got up again"),
    "sos": N_("The emergency button was pressed"),
    "inactivity": N_("No movement for longer than usual"),
    "wandering": N_("Went out at night"),
    "bed_exit": N_("Out of bed at night for a long time"),
    "not_up": N_("Stayed in bed much later than usual"),
    "tachycardia": N_("Heart rate was very high"),
    "bradycardia": N_("Heart rate was very low"),
    "low_spo2": N_("Blood oxygen was low"),
    "breathing": N_("Breathing was unusual"),
    "low_br": N_("Breathing was slow"),
    "high_br": N_("Breathing was fast"),
    "offline": N_("A sensor stopped sending"),
    "device_offline": N_("A sensor stopped sending"),
    "battery_low": N_("A battery was running low"),
    "not_worn": N_("The wristband was not worn"),
    "bathroom": N_("A long time in the bathroom"),
}
OTHER_KIND = N_("Another alert")
OUTCOMES = {
    "false_alarm": N_("it was a false alarm"),
    "handled_at_home": N_("handled at home"),
    "visit": N_("someone visited"),
    "ambulance": N_("an ambulance was called"),
}
CHANNELS = {
    "call_centre": N_("by the call centre"),
    "email": N_("after an email"),
    "webhook": N_("after a text message"),
    "sms": N_("after a text message"),
    "http": N_("through the link in a message"),
    "mqtt": N_("in the app"),
}
"""How an answer came (escalation's channel names), in a sentence."""
CHANNEL_NAMES = {
    "call_centre": N_("Call centre"),
    "email": N_("Email"),
    "webhook": N_("Text message or push"),
    "http": N_("Link in a message"),
    "mqtt": N_("App"),
}
"""The same as a column's value."""
SEVERITIES = {"critical": N_("Critical"), "warning": N_("Warning"), "info": N_("Information")}
STATES = {
    "open": N_("Not answered yet"),
    "notified": N_("Told, not answered yet"),
    "acknowledged": N_("Being dealt with"),
    "resolved": N_("Resolved"),
    "cancelled": N_("Cancelled"),
}
OUTCOME_NAMES = {
    "false_alarm": N_("False alarm"),
    "handled_at_home": N_("Handled at home"),
    "visit": N_("Visit"),
    "ambulance": N_("Ambulance"),
}
DOORS = {
    "front": N_("Front door"),
    "bathroom": N_("Bathroom"),
    "bedroom": N_("Bedroom"),
    "fridge": N_("Fridge"),
}
DEVICE_KINDS = {"wearable": N_("Wristband"), "bed": N_("Bed sensor"), "door": N_("Door sensor")}
