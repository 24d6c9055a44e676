"""Every detector's thresholds, as settings data: one model per detector and the care table.

The detectors (``detectors/``) read these models; they live in the core so that
:class:`homecare.settings.Settings` can hold them (``Settings.detectors``) and validate
them at start, from the environment or ``.env``, nested with ``__``:
``HOMECARE_DETECTORS__FALL__IMPACT_G=1.6``, ``HOMECARE_DETECTORS__VITALS__SUSTAIN_S=60``,
``HOMECARE_DETECTORS__CARE_TABLE=/etc/homecare/care_levels.toml``. Only numbers are here:
how a detector uses them is in its own module.

>>> DetectorSettings.model_validate({"fall": {"impact_g": 1.6}}).fall.impact_g
1.6
>>> DetectorSettings.model_validate({"fall": {"impact_g": 0.5}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for DetectorSettings
fall.impact_g
  Input should be greater than 1 ...
"""

from __future__ import annotations

import tomllib
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, RootModel, model_validator

__all__ = [
    "CARE_LEVELS",
    "DAY_S",
    "BathroomSettings",
    "BedExitSettings",
    "CareLimits",
    "CareTable",
    "DetectorSettings",
    "DeviceHealthSettings",
    "FallSettings",
    "InactivitySettings",
    "MorningSettings",
    "SosSettings",
    "VitalsSettings",
    "WanderingSettings",
]

DAY_S = 86400.0
CARE_LEVELS = (1, 2, 3, 4)
"""Care levels, from 1 (independent) to 4 (dependent); a higher level, tighter limits."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")
"""Thresholds never change at run time; a misspelt name is an error, not a silent default."""


class FallSettings(BaseModel):
    """Thresholds of each stage; round, physically meaningful numbers, not tuned decimals."""

    model_config = _FROZEN

    rate_hz: float = Field(
        default=50.0, gt=0, description="Working rate every input is resampled to."
    )
    impact_g: float = Field(
        default=1.4, gt=1, description="Impact: 0.2 s mean magnitude at least this."
    )
    impact_window_s: float = Field(default=0.2, gt=0, description="Averaging window of the impact.")
    impact_lookback_s: float = Field(
        default=2.0,
        gt=0,
        description="The impact is the largest within this time before the last one.",
    )
    freefall_g: float = Field(
        default=0.9, gt=0, description="Free-fall dip: 0.1 s mean at most this."
    )
    freefall_window_s: float = Field(
        default=1.0, gt=0, description="Time before impact for the dip."
    )
    drop_g: float = Field(default=0.2, ge=0, description="Below this the device is in free flight.")
    drop_s: float = Field(default=0.2, gt=0, description="Free flight this long: a dropped device.")
    pre_gap_s: float = Field(
        default=1.0, ge=0, description="Posture before ends this long pre-impact."
    )
    pre_window_s: float = Field(
        default=2.0, gt=0, description="Length of the posture-before window."
    )
    posture_deg: float = Field(
        default=45.0, gt=0, le=180, description="Posture change at least this."
    )
    settle_s: float = Field(
        default=1.0, ge=0, description="Stillness window starts this after impact."
    )
    still_window_s: float = Field(default=10.0, gt=0, description="Length of the stillness window.")
    still_g: float = Field(
        default=0.1, gt=0, description="Activity (g) at most this counts as still."
    )
    still_fraction: float = Field(
        default=0.7, gt=0, le=1, description="Share of still samples needed."
    )
    upright_deg: float = Field(
        default=30.0, gt=0, le=180, description="Recovered fall: back within this of before."
    )
    offbody_g: float = Field(default=0.004, ge=0, description="Mean activity below this: not worn.")
    bed_fresh_s: float = Field(
        default=120.0, gt=0, description="A presence reading means in bed for this long."
    )
    bed_still_g: float = Field(
        default=0.08,
        gt=0,
        description="A movement in bed follows lying this still (g); after walking it is a fall.",
    )
    bed_wait_s: float = Field(
        default=45.0,
        gt=0,
        description="A fall in bed waits this long after its impact for the bed sensor's word.",
    )
    gait_g: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="Walking: each second the magnitude goes this far above 1 g and below it.",
    )
    gait_s: float = Field(
        default=4.0,
        gt=0,
        description="Seconds of walking in a row before the posture is learned as upright.",
    )
    upright_learn_s: float = Field(
        default=20.0,
        gt=0,
        description="The upright is learned from about this much walking (EWMA), and follows it.",
    )
    lying_deg: float = Field(
        default=60.0,
        gt=0,
        le=180,
        description="Lying before: the posture before impact this far from the upright.",
    )
    lying_impact_g: float = Field(
        default=1.8,
        gt=1,
        description="Lying quiet before, no bed sensor saying in bed: a belt needs this impact.",
    )
    lying_freefall_g: float = Field(
        default=0.3,
        gt=0,
        description="... or this deep a free-fall dip (a drop from the bed).",
    )
    max_gap_s: float = Field(
        default=1.0, gt=0, description="A longer gap between frames clears history."
    )

    @property
    def history_s(self) -> float:
        """Seconds of samples kept per row: enough for the posture before any impact."""
        stages = self.impact_lookback_s + self.pre_gap_s + self.pre_window_s
        return stages + self.impact_window_s + self.settle_s + 1.0

    @property
    def max_delay_s(self) -> float:
        """Longest time from the impact to its detection, not counting the frame length
        (a fall in bed whose bed sensor is silent waits ``bed_wait_s``)."""
        return max(self.impact_lookback_s + self.settle_s + self.still_window_s, self.bed_wait_s)


class SosSettings(BaseModel):
    """How a repeated delivery of one press is recognised."""

    model_config = _FROZEN

    dedupe_s: float = Field(
        default=600.0, ge=0, description="Same device and seq within this time: one press."
    )
    memory: int = Field(default=8, ge=1, le=64, description="Presses remembered per device.")


class InactivitySettings(BaseModel):
    """What counts as a sign, and how the personal limit is learned."""

    model_config = _FROZEN

    move_g: float = Field(default=0.02, gt=0, description="Wearable mag_std at least this: moving.")
    bed_move: float = Field(default=0.1, gt=0, le=1, description="Bed movement at least this.")
    bed_fresh_s: float = Field(
        default=120.0, gt=0, description="A presence reading means in bed for this long."
    )
    quantile: float = Field(default=0.95, gt=0.5, lt=1, description="Quantile of the limit.")
    margin: float = Field(default=1.25, ge=1, description="Learned quantile times this.")
    harmonics: int = Field(default=3, ge=1, le=6, description="Daily sine/cosine pairs.")
    min_gap_s: float = Field(
        default=300.0, gt=0, description="Shorter stillness is not worth modelling."
    )
    min_hours: int = Field(default=48, ge=8, description="Fewer observed hours: no fit.")
    prior_days: float = Field(default=7.0, ge=0, description="Shrinkage towards the care default.")
    lying_deg: float = Field(
        default=60.0, gt=0, lt=180, description="Trunk this far from upright: lying."
    )
    upright_weight: float = Field(
        default=0.2, gt=0, le=1, description="Weight of a batch's walking frames in upright."
    )


class WanderingSettings(BaseModel):
    """Nothing to tune here: the sleep window and the wait come from the care table."""

    model_config = _FROZEN


class BedExitSettings(BaseModel):
    """How the personal out-of-bed limit is learned."""

    model_config = _FROZEN

    quantile: float = Field(default=0.95, gt=0, lt=1, description="Quantile of past trips.")
    margin: float = Field(default=1.5, ge=1, description="The quantile times this.")
    prior_trips: float = Field(default=10.0, ge=0, description="Shrinkage to the care default.")
    max_trip_s: float = Field(
        default=3 * 3600.0, gt=0, description="Longer: up for the day, not a trip."
    )


class BathroomSettings(BaseModel):
    """How the personal bathroom limit is learned from past visits."""

    model_config = _FROZEN

    quantile: float = Field(default=0.95, gt=0, lt=1, description="Quantile of past visits.")
    margin: float = Field(default=1.5, ge=1, description="The quantile times this.")
    prior_visits: float = Field(default=10.0, ge=0, description="Shrinkage to the care default.")


class MorningSettings(BaseModel):
    """What getting up means, and how the usual wake time is learned."""

    model_config = _FROZEN

    up_min_s: float = Field(default=1800.0, gt=0, description="Out of bed this long: up.")
    morning_from_s: float = Field(
        default=4 * 3600.0, ge=0, lt=DAY_S, description="Getting up counts from (local)."
    )
    check_until_s: float = Field(
        default=18 * 3600.0, gt=0, le=DAY_S, description="No warning after this (local)."
    )
    bed_fresh_s: float = Field(
        default=120.0, gt=0, description="A presence reading means in bed for this long."
    )
    quantile: float = Field(default=0.9, gt=0, lt=1, description="Quantile of wake times.")
    prior_days: float = Field(default=7.0, ge=0, description="Shrinkage to the care default.")


class VitalsSettings(BaseModel):
    """Debouncing, baseline and rest; the ranges themselves come from the care level."""

    model_config = _FROZEN

    wearable_min_samples: int = Field(default=10, ge=1, description="Consecutive, 1 Hz stream.")
    bed_min_samples: int = Field(default=3, ge=1, description="Consecutive, 10-30 s stream.")
    sustain_s: float = Field(default=30.0, ge=0, description="And lasting at least this.")
    deviation_sustain_s: float = Field(
        default=300.0, ge=0, description="A baseline deviation lasting at least this."
    )
    exit_margin: dict[str, float] = Field(
        default={"hr": 5.0, "spo2": 2.0, "br": 2.0},
        description="Re-arm once this far back inside an absolute limit.",
    )
    min_delta: dict[str, float] = Field(
        default={"hr": 15.0, "spo2": 3.0, "br": 4.0},
        description="A baseline deviation must also be at least this large.",
    )
    exit_z: float = Field(default=0.5, gt=0, lt=1, description="Re-arm within this × z.")
    tau_s: float = Field(default=3 * 86400.0, gt=0, description="Baseline time constant.")
    warm_s: float = Field(default=12 * 3600.0, ge=0, description="Resting data before baseline.")
    max_step_s: float = Field(default=60.0, gt=0, description="A longer gap counts as this.")
    learn_every_s: int = Field(
        default=10, ge=1, description="The 1 Hz wearable feeds the baseline every this (s)."
    )
    rest_g: float = Field(default=0.05, gt=0, description="Wearable mag_std below this: rest.")
    settle_s: float = Field(
        default=300.0,
        ge=0,
        description="Rest must have lasted this long (heart rate recovering after a walk is "
        "no deviation).",
    )


class DeviceHealthSettings(BaseModel):
    """Cadences, battery band and what counts as worn."""

    model_config = _FROZEN

    missed: float = Field(default=3.0, gt=1, description="Periods of silence before offline.")
    offline_min_s: float = Field(default=120.0, gt=0, description="Silence at least this.")
    bed_period_s: float = Field(default=30.0, gt=0, description="A bed sensor's longest period.")
    status_period_s: float = Field(default=300.0, gt=0, description="Status period, undeclared.")
    battery_low: float = Field(default=15.0, gt=0, lt=100, description="Below this: low.")
    battery_ok: float = Field(default=25.0, gt=0, le=100, description="Above this: re-armed.")
    battery_samples: int = Field(default=2, ge=1, description="Low readings in a row.")
    worn_g: float = Field(default=0.004, ge=0, description="mag_std at least this: on a body.")
    up_recent_s: float = Field(default=3600.0, gt=0, description="An up-sign this recent.")
    bed_fresh_s: float = Field(
        default=120.0, gt=0, description="A bed reading this recent tells where the elder is."
    )
    streaming_s: float = Field(
        default=60.0, gt=0, description="A frame this recent: streaming (not on its charger)."
    )

    @model_validator(mode="after")
    def _band(self) -> Self:
        if self.battery_ok <= self.battery_low:
            raise ValueError("battery_ok must be above battery_low (the re-arm band)")
        return self


class CareLimits(BaseModel):
    """The limits of one care level (seconds, beats or breaths per minute, %)."""

    model_config = _FROZEN

    inactivity_default_s: float = Field(gt=0, description="Inactivity limit with no history.")
    inactivity_min_s: float = Field(gt=0, description="A learned inactivity limit, at least.")
    inactivity_max_s: float = Field(gt=0, description="A learned inactivity limit, at most.")
    in_bed_still_s: float = Field(gt=0, description="In bed without any bed movement, at most.")
    wander_return_s: float = Field(gt=0, description="Out of the front door at night, at most.")
    bed_exit_default_s: float = Field(gt=0, description="Night out-of-bed limit, no history.")
    bed_exit_min_s: float = Field(gt=0, description="A learned out-of-bed limit, at least.")
    bed_exit_max_s: float = Field(gt=0, description="A learned out-of-bed limit, at most.")
    wake_margin_s: float = Field(ge=0, description="Added to the learned usual wake time.")
    wake_default_s: float = Field(gt=0, le=DAY_S, description="Not-up limit (local), no history.")
    wake_earliest_s: float = Field(gt=0, le=DAY_S, description="Not-up limit, at the earliest.")
    wake_latest_s: float = Field(gt=0, le=DAY_S, description="Not-up limit, at the latest.")
    hr_high: float = Field(gt=0, description="Heart rate above this: tachycardia.")
    hr_low: float = Field(gt=0, description="Heart rate below this: bradycardia.")
    spo2_low: float = Field(gt=0, le=100, description="SpO2 below this: low oxygen.")
    br_high: float = Field(gt=0, description="Breathing rate above this.")
    br_low: float = Field(gt=0, description="Breathing rate below this.")
    deviation_z: float = Field(gt=0, description="Deviation from the own baseline, in SDs.")
    not_worn_s: float = Field(gt=0, description="Up but the wearable not worn, at most.")
    lying_s: float = Field(gt=0, description="Lying out of bed (on the floor), at most.")
    home_inactivity_min_s: float = Field(
        default=5400.0,
        gt=0,
        description="Ambient sensors, at home off the mats: no sign, at least.",
    )
    home_inactivity_max_s: float = Field(
        default=10800.0, gt=0, description="Ambient sensors: a learned home limit, at most."
    )
    bathroom_default_s: float = Field(
        default=3600.0, gt=0, description="Last sign in the bathroom, then none: no history."
    )
    bathroom_min_s: float = Field(
        default=1800.0, gt=0, description="A learned bathroom limit, at least."
    )
    bathroom_max_s: float = Field(
        default=5400.0, gt=0, description="A learned bathroom limit, at most."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        """A default inside its bounds, a low limit below its high one."""
        for lo, mid, hi in (
            ("inactivity_min_s", "inactivity_default_s", "inactivity_max_s"),
            ("bed_exit_min_s", "bed_exit_default_s", "bed_exit_max_s"),
            ("wake_earliest_s", "wake_default_s", "wake_latest_s"),
            ("home_inactivity_min_s", "home_inactivity_min_s", "home_inactivity_max_s"),
            ("bathroom_min_s", "bathroom_default_s", "bathroom_max_s"),
        ):
            if not getattr(self, lo) <= getattr(self, mid) <= getattr(self, hi):
                raise ValueError(f"{lo} <= {mid} <= {hi} does not hold")
        for lo, hi in (("hr_low", "hr_high"), ("br_low", "br_high")):
            if getattr(self, lo) >= getattr(self, hi):
                raise ValueError(f"{lo} must be below {hi}")
        return self


_RAISED_WITH_LEVEL = frozenset({"hr_low", "spo2_low", "br_low"})
"""Lower limits: a higher care level raises them. Every other limit it lowers (or keeps)."""


class CareTable(RootModel[dict[Annotated[int, Field(ge=1, le=4)], CareLimits]]):
    """The limits of care levels 1-4. A higher level never loosens a limit: every time
    limit, upper vital-sign limit and deviation is at most the level below's, every lower
    vital-sign limit at least it.

    >>> table = CareTable.from_toml(Path("detectors/care_levels.toml"))
    >>> table[4].lying_s / 60, table[1].hr_high
    (5.0, 130.0)
    """

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _levels(self) -> Self:
        if tuple(sorted(self.root)) != CARE_LEVELS:
            raise ValueError(f"the care table needs levels {CARE_LEVELS}, got {sorted(self.root)}")
        for name in CareLimits.model_fields:
            values = [getattr(self.root[k], name) for k in CARE_LEVELS]
            raised = name in _RAISED_WITH_LEVEL
            if not all(b >= a if raised else b <= a for a, b in pairwise(values)):
                way = "rise" if raised else "fall"
                raise ValueError(f"{name} must {way} (or stay) from level 1 to 4, got {values}")
        return self

    def __getitem__(self, level: int) -> CareLimits:
        return self.root[level]

    @classmethod
    def from_toml(cls, path: Path) -> CareTable:
        """Read and check a table: under ``[limits]``, one list per limit with its values
        for levels 1-4 (the layout of ``detectors/care_levels.toml``)."""
        try:
            limits = tomllib.loads(path.read_text()).get("limits", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"care table {path}: {exc}") from exc
        bad = [k for k, v in limits.items() if not isinstance(v, list) or len(v) != 4]
        if bad or not limits:
            raise ValueError(f"care table {path}: [limits] needs 4 values (levels 1-4) for "
                             f"each limit; not so for {bad or 'any'}")  # fmt: skip
        return cls.model_validate(
            {level: {k: v[i] for k, v in limits.items()} for i, level in enumerate(CARE_LEVELS)}
        )


class DetectorSettings(BaseModel):
    """Every detector's thresholds (``HOMECARE_DETECTORS__<DETECTOR>__<FIELD>``)."""

    fall: FallSettings = FallSettings()
    sos: SosSettings = SosSettings()
    inactivity: InactivitySettings = InactivitySettings()
    wandering: WanderingSettings = WanderingSettings()
    bed_exit: BedExitSettings = BedExitSettings()
    morning: MorningSettings = MorningSettings()
    vitals: VitalsSettings = VitalsSettings()
    device_health: DeviceHealthSettings = DeviceHealthSettings()
    bathroom: BathroomSettings = BathroomSettings()
    care_table: Path | None = Field(
        None,
        description="A TOML file replacing the shipped care-level table "
        "(detectors/care_levels.toml, same layout); checked at start.",
    )
    _care: CareTable | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _load_care_table(self) -> Self:
        if self.care_table is not None:
            self._care = CareTable.from_toml(self.care_table)
        return self

    @property
    def care(self) -> CareTable | None:
        """The care table given in ``care_table``, read and checked; None: the shipped one."""
        return self._care
