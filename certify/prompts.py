"""The operator's part of a certification: staged steps, prompted and performed on cue.

A step is announced (:meth:`Operator.ready`: the operator gets ready, or declines and
the step is skipped), then started (:meth:`Operator.go`: the kit's clock starts, the
operator acts now). Three operators play it: a person at the console
(:class:`ConsoleOperator`), nobody (:class:`NoOperator`, the non-interactive mode:
every step is skipped and the report says so) and the simulator's own device
(:class:`certify.reference.SimulatedDevice`), which performs each step itself.

>>> import io
>>> out = io.StringIO()
>>> person = ConsoleOperator(io.StringIO("\\ns\\n"), out)
>>> person.ready(power_off()), person.ready(sos())
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TextIO


class StepKind(StrEnum):
    POWER_OFF = "power_off"
    POWER_ON = "power_on"
    SOS = "sos"
    FALL = "fall"
    LOOKALIKE = "lookalike"
    OUTAGE_EVENTS = "outage_events"


@dataclass(frozen=True, slots=True)
class Step:
    """One staged step: what to prepare, and what to do when the kit says GO."""

    kind: StepKind
    prepare: str
    action: str
    motion: str | None = None
    """For falls and look-alikes: the movement (a name in :data:`device_sim.motions.MOTIONS`)."""


FALL_MOTIONS = ("fall_forward", "fall_sideways", "fall_backward")
LOOKALIKE_MOTIONS = ("sit_hard", "stumble", "lie_down")
_MOVES = {
    "fall_forward": "walk a few steps, then fall forward onto the mat",
    "fall_sideways": "walk a few steps, then fall sideways onto the mat",
    "fall_backward": "stand, then fall backwards onto the mat",
    "sit_hard": "walk to the chair and sit down hard",
    "stumble": "walk, stumble and catch yourself, walk on",
    "lie_down": "sit on the bed's edge, then lie down",
}


def power_off() -> Step:
    return Step(StepKind.POWER_OFF, "Be ready to switch the device off (or pull its battery).",
                "Switch the device OFF now.")


def power_on() -> Step:
    return Step(StepKind.POWER_ON, "Be ready to switch the device back on.",
                "Switch the device ON now.")


def sos() -> Step:
    return Step(StepKind.SOS, "Hold the wearable; be ready to press its SOS button.",
                "Press the SOS button NOW.")


def staged_motion(kind: StepKind, motion: str, number: int, of: int, stage_s: float) -> Step:
    what = "test fall" if kind is StepKind.FALL else "look-alike movement"
    still = " and lie still on the mat" if kind is StepKind.FALL else ""
    return Step(kind, f"{what} {number} of {of}: wear the device; you will {_MOVES[motion]}.",
                f"Within 5 s: {_MOVES[motion]}{still}; the kit records for {stage_s:.0f} s.",
                motion)


def outage_events(device_kind: str, outage_s: float) -> Step:
    act = {
        "door": "open and close the door",
        "motion": "walk past the motion sensor",
        "mat": "sit on the mat, then get up",
    }.get(device_kind, "press the SOS button once")
    return Step(StepKind.OUTAGE_EVENTS,
                f"The kit will stop the broker for {outage_s:.0f} s; while it is down, {act}.",
                f"Broker stopped: {act} NOW.")


class Operator(Protocol):
    """Whoever performs the staged steps."""

    interactive: bool

    def ready(self, step: Step) -> bool:
        """Announce ``step``; ``False`` skips it."""
        ...

    def go(self, step: Step) -> None:
        """The kit's clock runs from now: perform ``step``."""
        ...


class ConsoleOperator:
    """A person at the console: Enter to go ahead with a step, ``s`` Enter to skip it."""

    interactive = True

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin, self.stdout = stdin, stdout

    def ready(self, step: Step) -> bool:
        self.stdout.write(f"\n>>> {step.prepare}\n    Enter when ready, s + Enter to skip: ")
        self.stdout.flush()
        return self.stdin.readline().strip().lower() != "s"

    def go(self, step: Step) -> None:
        self.stdout.write(f"GO: {step.action}\n")
        self.stdout.flush()


class NoOperator:
    """Nobody there (non-interactive mode): every operator step is skipped."""

    interactive = False

    def ready(self, step: Step) -> bool:
        return False

    def go(self, step: Step) -> None:  # never called: every step was declined
        return None
