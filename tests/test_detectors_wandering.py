"""Night wandering: front door at night, not back in time; fake clock across the limit."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import DOOR_ROLES, ReadingBatch
from detectors.care import CARE_TABLE, Care
from detectors.wandering import WanderingDetector

H = 3600.0
NIGHT = 10 * 86400 + 23 * H  # 23:00 UTC


def door(rows, ts, role, opened) -> ReadingBatch:
    n = len(rows)
    codes = np.full(n, DOOR_ROLES.index(role)) if isinstance(role, str) else np.asarray(role)
    return ReadingBatch(
        "door",
        np.asarray(rows),
        np.broadcast_to(np.asarray(ts, float), n),
        {"opened": np.broadcast_to(opened, n).astype(float), "role": codes},
    )


def bed(rows, ts, presence=1) -> ReadingBatch:
    n = len(rows)
    return ReadingBatch(
        "bed", np.asarray(rows), np.full(n, float(ts)), {"presence": np.full(n, float(presence))}
    )


def test_fires_just_after_the_care_level_limit_for_many_rows() -> None:
    care = Care()
    rows = np.arange(40)
    levels = rows % 4 + 1
    care.set_care_levels(rows, levels)
    det = WanderingDetector(care=care)
    det.update(door(rows, NIGHT, "front", 1))
    limits = {k: CARE_TABLE[k].wander_return_s for k in (1, 2, 3, 4)}
    fired: dict[int, float] = {}
    for t in sorted(set(limits.values()) | {v + 1 for v in limits.values()}):
        for d in det.tick(NIGHT + t):
            fired[d.row] = t
            assert d.kind == "wandering"
            assert d.severity == "warning"
    assert fired == {int(r): limits[int(lv)] + 1 for r, lv in zip(rows, levels, strict=True)}
    assert det.tick(NIGHT + 5 * H) == []  # once per night out


@pytest.mark.parametrize(
    ("events", "back"),
    [
        ([("front", 0), ("bathroom", 1)], True),  # closed behind, then a sign inside
        ([("front", 0)], False),  # closing the door proves nothing
        ([("bathroom", 1)], False),  # inside sign, but the front door is still open
        ([("front", 0), ("front", 1)], False),  # went out again
    ],
)
def test_back_needs_the_door_closed_and_a_sign_inside(events, back: bool) -> None:
    det = WanderingDetector()
    det.update(door([0], NIGHT, "front", 1))
    for i, (role, opened) in enumerate(events):
        det.update(door([0], NIGHT + 60 * (i + 1), role, opened))
    assert (det.tick(NIGHT + 2 * H) == []) is back


def test_bed_presence_means_back_and_one_batch_can_hold_the_whole_story() -> None:
    det = WanderingDetector()
    det.update(door([0, 1], NIGHT, "front", 1))
    det.update(bed([0], NIGHT + 300))
    # row 1: door closed and fridge opened, in one batch with repeated rows
    story = door(
        [1, 1, 2],
        [NIGHT + 100, NIGHT + 200, NIGHT + 200],
        [DOOR_ROLES.index("front"), DOOR_ROLES.index("fridge"), 0],
        [0, 1, 1],
    )
    det.update(story)
    assert [d.row for d in det.tick(NIGHT + 2 * H)] == [2]


def test_daytime_door_is_not_watched_and_local_time_counts() -> None:
    care = Care()
    care.set_utc_offsets(np.array([1]), np.array([2 * H]))
    det = WanderingDetector(care=care)
    day = 10 * 86400 + 20.5 * H  # 20:30 UTC: 22:30 local for row 1
    det.update(door([0, 1], day, "front", 1))
    assert [d.row for d in det.tick(day + 2 * H)] == [1]
