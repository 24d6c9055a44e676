"""The four dashboards: one elder, a site at a glance, alerts, and the device fleet.

Queries read the storage schema of :mod:`ingest.points` (raw data, kept 30 days) and,
for long ranges, the rollups of :mod:`ingest.rollups` (``"history"."wearable_1h"`` and
friends, kept for years). Alert panels read the ``alert`` points of
:mod:`homecare.alerts` and the ``alert_escalation`` events of escalation: the one of
event ``acknowledged`` carries ``after_s`` (seconds since the alert began), the one of
event ``resolved`` its outcome in ``detail``.

Each dashboard has a fixed uid, so links between them (the site board's rows open the
elder's dashboard) and bookmarks survive every rebuild.

>>> sorted(uid for uid, _ in DASHBOARDS)
['homecare-alerts', 'homecare-elder', 'homecare-fleet', 'homecare-site']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, histogram, piechart, stat, table
from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    TableSortByFieldState,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models import piechart as piechart_model

from dashboards.influxql import (
    ELDER_VAR,
    INFLUX,
    SITE_VAR,
    Math,
    Query,
    annotation,
    datasource_variable,
    tag_variable,
)

ELDER_UID = "homecare-elder"
SITE_UID = "homecare-site"
ALERTS_UID = "homecare-alerts"
FLEET_UID = "homecare-fleet"
TAGS = ["homecare"]

ELDER = """"elder" = '$elder'"""
SITE = """"site" = '$site'"""
OPEN = """"state" =~ /^(open|notified|acknowledged)$/"""
"""An alert nobody has closed yet (resolved and cancelled are closed)."""
BASELINE_TIME = "time >= ${__from}ms - 7d AND time <= ${__to}ms"
"""The panel's range and the 7 days before it, which its first baseline points average."""
ACTIVE_G = 0.05
"""``mag_std`` (g) from which a second counts as active, as in the rollups' ``active_s``."""
OUTCOMES = ("false_alarm", "handled_at_home", "visit", "ambulance")
RECENT = "time > now() - 30d"
"""Status panels look back over the whole raw retention, whatever the picked range."""


def _cfg(id_val: str, value: object) -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val=id_val, value=value)


def _transform(id_val: str, options: dict[str, Any]) -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val=id_val, options=options)


def _thresholds(*steps: tuple[float | None, str]) -> board.ThresholdsConfig:
    return (
        board.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def _battery() -> board.ThresholdsConfig:
    """Red under 20 %, orange under 40 %: the device desk's call to charge or replace."""
    return _thresholds((None, "red"), (20, "orange"), (40, "green"))


class Layout:
    """Numbers panels and places them on the 24-column grid, rows of a given height."""

    def __init__(self, dash: board.Dashboard) -> None:
        self.dash = dash
        self.next_id = 1

    def add(self, panel: Any, w: int, h: int) -> None:
        self.dash.with_panel(panel.id(self.next_id).span(w).height(h).datasource(INFLUX))
        self.next_id += 1

    def row(self, title: str) -> None:
        self.dash.with_row(board.Row(title).id(self.next_id))
        self.next_id += 1


def _dashboard(uid: str, title: str, description: str, start: str) -> board.Dashboard:
    return (
        board.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time(start, "now")
        .refresh("1m")
        .timezone("browser")
        .readonly()
        .with_variable(datasource_variable())
        .with_variable(tag_variable("site", "Site", SITE_VAR))
        .link(
            board.DashboardLink("Homecare dashboards")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def _series(title: str, description: str, unit: str, *targets: cogbuilder.Builder[Any]
            ) -> ts.Panel:  # fmt: skip
    panel = ts.Panel().title(title).description(description).unit(unit).span_nulls(3_600_000)
    for target in targets:
        panel.with_target(target)
    return panel


def _bars(title: str, description: str, unit: str, *targets: cogbuilder.Builder[Any]) -> ts.Panel:
    return (
        _series(title, description, unit, *targets)
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(70)
        .line_width(1)
    )


# -- Elder -------------------------------------------------------------------------------


def _activity_by_hour(utc_offset_h: float = 0.0) -> heatmap.Panel:
    """Activity per hour of day (rows) and day (columns) over 30 days.

    InfluxQL cannot take the hour of a timestamp, and Grafana's heatmap has no such
    bucketing, so each hour of day is its own query: hourly active seconds (every hour
    present, ``fill(0)``), the first of each day-long window that starts at that hour
    (which is that hour), moved to the day's midnight. Twenty-four series of daily
    points named ``00``…``23`` are exactly the heatmap's pre-bucketed input. Hours are
    the site's local time (``utc_offset_h``, as for the daily rollups and nights): local
    hour ``h`` is the window starting ``h - utc_offset_h`` hours after UTC midnight.
    """
    panel = (
        heatmap.Panel()
        .title("Activity by hour of day (30 days)")
        .description(f"Minutes active in each hour of each day (local hours, UTC"
                     f"{utc_offset_h:+g}), from the hourly rollups: the elder's daily "
                     "rhythm, and changes to it.")
        .time_from("30d")
        .calculate(False)
        .unit("m")
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.GE))
        .color(heatmap.HeatmapColorOptions().mode(heatmap_model.HeatmapColorMode.SCHEME)
               .scheme("Oranges").steps(64).fill("dark-orange").exponent(0.5)
               .scale(heatmap_model.HeatmapColorScale.EXPONENTIAL))
        .y_axis(heatmap.YAxisConfig().unit("none").decimals(0))
        .cell_gap(1)
    )
    for hour in range(24):
        hourly = (
            'SELECT sum("active_s") / 60 AS "a" FROM "history"."wearable_1h" '
            f"WHERE {ELDER} AND $timeFilter GROUP BY time(1h) fill(0)"
        )
        start_m = round((hour - utc_offset_h) % 24 * 60)
        at_hour = f'SELECT first("a") AS "a" FROM ({hourly}) GROUP BY time(1d, {start_m}m)'
        panel.with_target(
            Query(
                f"H{hour:02d}",
                f'SELECT max("a") AS "{hour:02d}" FROM ({at_hour}) WHERE $timeFilter '
                "GROUP BY time(1d) fill(null)",
            )
        )
    return panel


def elder_dashboard(utc_offset_h: float = 0.0) -> board.Dashboard:
    dash = _dashboard(
        ELDER_UID,
        "Homecare: elder",
        "One elder's week against their own normal: vital signs, activity, sleep, doors, "
        "devices; alerts as annotations.",
        "now-7d",
    ).with_variable(tag_variable("elder", "Elder", ELDER_VAR))
    dash.annotation(
        annotation(
            "Alerts",
            f'SELECT "kind", "state", "severity" FROM "alert" WHERE {ELDER} AND $timeFilter',
            text="kind",
            tags="severity,state",
            color="red",
        )
    )
    grid = Layout(dash)
    grid.row("Vital signs")
    heart = _series(
        "Heart rate",
        "Wearable and bed sensor, with the elder's usual range: the 10th to 90th percentile "
        "of their hourly mean on each day, averaged over their previous 7 days with at "
        "least 12 hours worn.",
        "bpm",
        Query("A", f'SELECT mean("hr") AS "wearable" FROM "wearable" WHERE {ELDER} AND '
                   "$timeFilter GROUP BY time($__interval) fill(null)"),
        Query("B", f'SELECT mean("hr") AS "bed" FROM "bed" WHERE {ELDER} AND $timeFilter '
                   "GROUP BY time($__interval) fill(null)"),
        # Partial days are left out: the 10th percentile of fewer than 5 hours is null, and
        # one null day would blank the low bound (only) for the next 7 days.
        Query("C", 'SELECT moving_average("low", 7) AS "usual low", '
                   'moving_average("high", 7) AS "usual high" FROM ('
                   'SELECT percentile("hr_mean", 10) AS "low", percentile("hr_mean", 90) AS '
                   '"high", count("hr_mean") AS "hours" FROM "history"."wearable_1h" WHERE '
                   f"{ELDER} AND {BASELINE_TIME} GROUP BY time(1d)) "
                   f'WHERE "hours" >= 12 AND {BASELINE_TIME}'),
    )  # fmt: skip
    band = [_cfg("custom.lineWidth", 0), _cfg("custom.fillOpacity", 15),
            _cfg("color", {"mode": "fixed", "fixedColor": "green"})]  # fmt: skip
    heart.override_by_name("usual low", band).override_by_name(
        "usual high", [*band, _cfg("custom.fillBelowTo", "usual low")]
    )
    grid.add(heart, 24, 9)
    grid.add(
        _series(
            "Blood oxygen (SpO2)",
            "Wearable SpO2: the mean and the lowest reading of each interval.",
            "percent",
            Query("A", 'SELECT mean("spo2") AS "mean", min("spo2") AS "lowest" FROM "wearable" '
                       f"WHERE {ELDER} AND $timeFilter GROUP BY time($__interval) fill(null)"),
        ).min(80).max(100),
        12, 8,
    )  # fmt: skip
    grid.add(
        _series(
            "Breathing rate in bed",
            "Breaths per minute measured by the bed sensor while the elder lies in bed "
            "(mostly the night).",
            "none",
            Query("A", 'SELECT mean("br") AS "breaths/min" FROM "bed" WHERE '
                       f'{ELDER} AND "presence" = true AND $timeFilter '
                       "GROUP BY time($__interval) fill(null)"),
        ),
        12, 8,
    )  # fmt: skip
    grid.row("Activity and sleep")
    grid.add(_activity_by_hour(utc_offset_h), 24, 10)
    grid.add(
        _bars(
            "Sleep: time in bed per night",
            "Hours in bed between 18:00 and 12:00, and how often the elder got out of bed "
            "and back in that night.",
            "h",
            Query("A", 'SELECT "in_bed_s" / 3600 AS "hours in bed", "exits" AS "bed exits" '
                       f'FROM "history"."sleep_1d" WHERE {ELDER} AND $timeFilter'),
        ).override_by_name("bed exits", [_cfg("unit", "none"),
                                         _cfg("custom.axisPlacement", "right")]),
        12, 8,
    )  # fmt: skip
    grid.add(
        _bars(
            "Steps per day",
            "Steps counted by the wearable each day (daily rollup).",
            "none",
            Query("A", f'SELECT "steps" FROM "history"."wearable_1d" WHERE {ELDER} AND '
                       "$timeFilter"),
        ),
        12, 8,
    )  # fmt: skip
    grid.add(
        _bars(
            "Door openings per day",
            "Openings of each door (front, bathroom, bedroom, fridge) per day (daily rollup).",
            "none",
            Query("A", f'SELECT "opens" FROM "history"."door_1d" WHERE {ELDER} AND $timeFilter '
                       'GROUP BY "role"').alias("$tag_role"),
        ).stacking(StackingConfig().mode(common.StackingMode.NORMAL)),
        24, 8,
    )  # fmt: skip
    grid.row("Devices")
    grid.add(
        table.Panel()
        .title("Battery and last seen")
        .description("Each device of the elder: when it last reported its status (last "
                     "seen) and its battery then.")
        .with_target(
            Query("A", 'SELECT last("battery") AS "battery" FROM "device_status" WHERE '
                       f'{ELDER} AND {RECENT} GROUP BY "device", "kind"').table()
        )
        .override_by_name("Time", [_cfg("displayName", "last seen"),
                                   _cfg("unit", "dateTimeFromNow")])
        .override_by_name("battery", [_cfg("unit", "percent"),
                                      _cfg("thresholds", _battery().build()),
                                      _cfg("custom.cellOptions", {"type": "color-background"})]),
        24, 7,
    )
    return dash


# -- Site board --------------------------------------------------------------------------

STATUS_MAPPINGS = [
    {"type": "range", "options": {"from": 0, "to": 0.5, "result": {"text": "OK", "color": "green",
                                                                  "index": 0}}},
    {"type": "range", "options": {"from": 0.5, "to": 9.5,
                                  "result": {"text": "device offline", "color": "orange",
                                             "index": 1}}},
    {"type": "range", "options": {"from": 9.5, "to": 1e9,
                                  "result": {"text": "open alert", "color": "red", "index": 2}}},
]  # fmt: skip
"""Status = 10 × open alerts + devices offline (missing counts are 0): an open alert
outranks an offline device."""


def site_dashboard() -> board.Dashboard:
    dash = _dashboard(
        SITE_UID,
        "Homecare: site board",
        "Every elder of a site at a glance: who needs attention now.",
        "now-24h",
    )
    grid = Layout(dash)
    elder_link = {
        "title": "Open ${__value.raw}'s dashboard",
        "url": f"/d/{ELDER_UID}/homecare-elder?var-site=${{site}}&var-elder=${{__value.raw}}"
        "&${__url_time_range}",
    }
    elders = (
        table.Panel()
        .title("Elders")
        .description("One row per elder: status (open alert, device offline, OK), open "
                     "alerts, devices offline, time since the last active second on the "
                     "wearable, lowest battery. Click an elder to open their dashboard.")
        .with_target(Query("A", 'SELECT last("mag_std") AS "last active" FROM "wearable" '
                                f'WHERE {SITE} AND "mag_std" >= {ACTIVE_G} AND {RECENT} '
                                'GROUP BY "elder"').table())
        .with_target(Query("B", 'SELECT count("id") AS "open alerts" FROM "alert" WHERE '
                                f'{SITE} AND {OPEN} AND {RECENT} GROUP BY "elder"').table())
        .with_target(Query("C", 'SELECT count("online") AS "devices offline" FROM '
                                '(SELECT last("online") AS "online" FROM "availability" '
                                f'WHERE {SITE} AND {RECENT} GROUP BY "elder", "device") '
                                'WHERE "online" = false GROUP BY "elder"').table())
        .with_target(Query("D", 'SELECT min("battery") AS "lowest battery" FROM '
                                '(SELECT last("battery") AS "battery" FROM "device_status" '
                                f'WHERE {SITE} AND time > now() - 1d GROUP BY "elder", "device") '
                                'GROUP BY "elder"').table())
        .with_transformation(_transform("joinByField", {"byField": "elder", "mode": "outer"}))
        .with_transformation(_transform("organize", {
            "excludeByName": {"Time 2": True, "Time 3": True, "Time 4": True},
            "renameByName": {"Time 1": "last active"},
        }))
        .with_transformation(_transform("calculateField", {
            "mode": "binary", "alias": "alert weight",
            "binary": {"left": {"matcher": {"id": "byName", "options": "open alerts"}},
                       "operator": "*", "right": {"fixed": "10"}},
        }))
        .with_transformation(_transform("calculateField", {
            "mode": "reduceRow", "alias": "status",
            "reduce": {"include": ["alert weight", "devices offline"], "reducer": "sum",
                       "nullValueMode": "null as zero"},
        }))
        .with_transformation(_transform("organize", {
            "excludeByName": {"alert weight": True},
            "indexByName": {"elder": 0, "status": 1, "open alerts": 2, "devices offline": 3,
                            "last active": 4, "lowest battery": 5},
        }))
        .override_by_name("elder", [_cfg("links", [elder_link])])
        .override_by_name("status", [_cfg("mappings", STATUS_MAPPINGS),
                                     _cfg("custom.cellOptions", {"type": "color-background"})])
        .override_by_name("last active", [_cfg("unit", "dateTimeFromNow")])
        .override_by_name("lowest battery", [_cfg("unit", "percent")])
        .override_by_regexp("open alerts|devices offline", [_cfg("noValue", "0")])
        .sort_by([TableSortByFieldState().display_name("status").desc(True)])
    )  # fmt: skip
    grid.add(elders, 24, 10)
    grid.add(
        bargauge.Panel()
        .title("Open alerts by severity")
        .description("Alerts of the site nobody has resolved or cancelled yet.")
        .with_target(Query("A", 'SELECT count("id") FROM "alert" WHERE '
                                f'{SITE} AND {OPEN} AND {RECENT} GROUP BY "severity"')
                     .alias("$tag_severity"))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .orientation(common.VizOrientation.HORIZONTAL),
        8, 8,
    )  # fmt: skip
    grid.add(
        table.Panel()
        .title("Open alerts")
        .description("Each open alert: who, what, how severe, its state, and how long ago "
                     "it began (its age).")
        .with_target(Query("A", 'SELECT "state", "device", "id" FROM "alert" WHERE '
                                f'{SITE} AND {OPEN} AND {RECENT} GROUP BY "elder", "kind", '
                                '"severity"').table())
        .override_by_name("Time", [_cfg("displayName", "began"), _cfg("unit", "dateTimeFromNow")])
        .override_by_name("elder", [_cfg("links", [elder_link])])
        .sort_by([TableSortByFieldState().display_name("began").desc(False)]),
        16, 8,
    )  # fmt: skip
    grid.add(
        bargauge.Panel()
        .title("Battery")
        .description("Each battery-powered device's last reported battery.")
        .with_target(Query("A", 'SELECT last("battery") FROM "device_status" WHERE '
                                f"{SITE} AND \"kind\" != 'bed' AND time > now() - 1d "
                                'GROUP BY "elder", "device"').alias("$tag_elder $tag_device"))
        .unit("percent").min(0).max(100)
        .thresholds(_battery())
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .orientation(common.VizOrientation.HORIZONTAL),
        24, 8,
    )  # fmt: skip
    return dash


# -- Alerts ------------------------------------------------------------------------------


def _acknowledged(panel: Any) -> Any:
    """Time to acknowledge: each alert's start (its ``alert`` point) joined by id with its
    ``acknowledged`` escalation event, the difference of their times. InfluxQL has no join,
    so Grafana joins the two queries' rows."""
    return (
        panel
        .with_target(Query("A", 'SELECT "id" FROM "alert" WHERE '
                                f'{SITE} AND $timeFilter GROUP BY "elder", "kind", "severity"')
                     .table())
        .with_target(Query("B", 'SELECT "id" FROM "alert_escalation" WHERE '
                                f"{SITE} AND \"event\" = 'acknowledged' AND $timeFilter "
                                'GROUP BY "channel", "who"').table())
        .with_transformation(_transform("joinByField", {"byField": "id", "mode": "inner"}))
        .with_transformation(_transform("calculateField", {
            "mode": "binary", "alias": "acknowledged after",
            "binary": {"left": {"matcher": {"id": "byName", "options": "Time 2"}},
                       "operator": "-",
                       "right": {"matcher": {"id": "byName", "options": "Time 1"}}},
        }))
    )  # fmt: skip



def alerts_dashboard() -> board.Dashboard:
    dash = _dashboard(
        ALERTS_UID,
        "Homecare: alerts",
        "What the detectors raised and how escalation handled it: kinds, time to "
        "acknowledge, outcomes, false alarms.",
        "now-30d",
    )
    grid = Layout(dash)
    grid.add(
        _bars(
            "Alerts by kind",
            "Alerts raised per day, by kind.",
            "none",
            Query("A", f'SELECT count("id") FROM "alert" WHERE {SITE} AND $timeFilter '
                       'GROUP BY time(1d), "kind" fill(none)').alias("$tag_kind"),
        ).stacking(StackingConfig().mode(common.StackingMode.NORMAL)),
        24, 8,
    )  # fmt: skip
    grid.add(
        _acknowledged(table.Panel())
        .title("Time to acknowledge")
        .description("Each acknowledged alert: when it began, who it concerned, on which "
                     "channel and how long after it was acknowledged.")
        .with_transformation(_transform("organize", {
            "excludeByName": {"Time 2": True, "id": True},
            "renameByName": {"Time 1": "began"},
            "indexByName": {"began": 0, "elder": 1, "kind": 2, "severity": 3,
                            "acknowledged after": 4, "channel": 5, "who": 6},
        }))
        .override_by_name("acknowledged after", [_cfg("unit", "ms")])
        .sort_by([TableSortByFieldState().display_name("began").desc(True)]),
        16, 8,
    )  # fmt: skip
    grid.add(
        _acknowledged(stat.Panel())
        .title("Mean time to acknowledge")
        .reduce_options(ReduceDataOptions().calcs(["mean"]).fields("/^acknowledged after$/"))
        .unit("ms")
        .thresholds(_thresholds((None, "green"), (60_000, "orange"), (300_000, "red"))),
        8, 8,
    )  # fmt: skip
    resolved = f"\"alert_escalation\" WHERE {SITE} AND \"event\" = 'resolved' AND $timeFilter"
    outcomes = (
        piechart.Panel()
        .title("Outcomes")
        .description("How resolved alerts ended: false alarm, handled at home, a visit, "
                     "an ambulance.")
        .pie_type(piechart_model.PieChartType.DONUT)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )  # fmt: skip
    for k, outcome in enumerate(OUTCOMES):
        outcomes.with_target(
            Query(chr(ord("A") + k), f'SELECT count("id") AS "{outcome.replace("_", " ")}" '
                                     f"FROM {resolved} AND \"detail\" = '{outcome}'")
        )  # fmt: skip
    grid.add(outcomes, 12, 9)
    grid.add(
        stat.Panel()
        .title("False-alarm share")
        .description("False alarms among the alerts resolved in the range.")
        .with_target(Query("A", f'SELECT count("id") FROM {resolved} AND '
                                "\"detail\" = 'false_alarm'").hide())
        .with_target(Query("B", f'SELECT count("id") FROM {resolved}').hide())
        .with_target(Math("C", "$A / $B * 100"))
        .unit("percent")
        .thresholds(_thresholds((None, "green"), (20, "orange"), (50, "red"))),
        12, 9,
    )  # fmt: skip
    return dash


# -- Device fleet ------------------------------------------------------------------------


def fleet_dashboard() -> board.Dashboard:
    dash = _dashboard(
        FLEET_UID,
        "Homecare: device fleet",
        "Every device of a site: online or not, batteries, firmware, messages refused at "
        "the edge, security events.",
        "now-7d",
    )
    grid = Layout(dash)
    last_online = ('(SELECT last("online") AS "online" FROM "availability" WHERE '
                   f'{SITE} AND {RECENT} GROUP BY "device")')  # fmt: skip
    grid.add(
        stat.Panel()
        .title("Devices online / offline")
        .description("By each device's last availability message (offline: its last will).")
        .with_target(Query("A", f'SELECT count("online") AS "online" FROM {last_online} '
                                'WHERE "online" = true'))
        .with_target(Query("B", f'SELECT count("online") AS "offline" FROM {last_online} '
                                'WHERE "online" = false'))
        .override_by_name("offline", [_cfg("color", {"mode": "fixed", "fixedColor": "red"})])
        .override_by_name("online", [_cfg("color", {"mode": "fixed", "fixedColor": "green"})]),
        8, 6,
    )  # fmt: skip
    grid.add(
        histogram.Panel()
        .title("Battery distribution")
        .description("Last reported battery of every battery-powered device.")
        .with_target(Query("A", 'SELECT last("battery") AS "battery" FROM "device_status" '
                                f"WHERE {SITE} AND \"kind\" != 'bed' AND time > now() - 1d "
                                'GROUP BY "device"').table())
        .bucket_size(10)
        .combine(True)
        .unit("percent"),
        16, 6,
    )  # fmt: skip
    grid.add(
        table.Panel()
        .title("Devices")
        .description("Each device's availability, model, vendor and firmware, as last reported.")
        .with_target(Query("A", 'SELECT last("online") AS "online" FROM "availability" WHERE '
                                f'{SITE} AND {RECENT} GROUP BY "elder", "device", "kind"')
                     .table())
        .with_target(Query("B", 'SELECT last("model") AS "model", last("vendor") AS "vendor", '
                                'last("firmware") AS "firmware", last("battery") AS "battery" '
                                f'FROM "device_status" WHERE {SITE} AND {RECENT} '
                                'GROUP BY "device"').table())
        .with_transformation(_transform("joinByField", {"byField": "device", "mode": "outer"}))
        .with_transformation(_transform("organize", {
            "excludeByName": {"Time 1": True, "Time 2": True}}))
        .override_by_name("online", [_cfg("mappings", [
            {"type": "value", "options": {
                "true": {"text": "online", "color": "green", "index": 0},
                "false": {"text": "offline", "color": "red", "index": 1}}}]),
            _cfg("custom.cellOptions", {"type": "color-background"})]),
        24, 8,
    )  # fmt: skip
    grid.add(
        table.Panel()
        .title("Firmware versions")
        .description("How many devices run each firmware, per model.")
        .with_target(Query("A", 'SELECT last("firmware") AS "firmware", last("model") AS '
                                f'"model" FROM "device_status" WHERE {SITE} AND {RECENT} '
                                'GROUP BY "device"').table())
        .with_transformation(_transform("groupBy", {"fields": {
            "model": {"operation": "groupby"}, "firmware": {"operation": "groupby"},
            "device": {"operation": "aggregate", "aggregations": ["count"]}}}))
        .with_transformation(_transform("organize", {
            "renameByName": {"device (count)": "devices"}})),
        12, 8,
    )  # fmt: skip
    grid.add(
        table.Panel()
        .title("Dead letters per model and vendor")
        .description("Messages refused at the edge in the range, attributed to the model "
                     "and vendor of the device that sent them; with the share per device.")
        .with_target(Query("A", 'SELECT "device", "size" FROM "dead_letter" WHERE '
                                "\"device\" != '' AND $timeFilter LIMIT 10000").table())
        .with_target(Query("B", 'SELECT last("model") AS "model", last("vendor") AS "vendor" '
                                f'FROM "device_status" WHERE {SITE} AND {RECENT} '
                                'GROUP BY "device"').table())
        .with_transformation(_transform("joinByField", {"byField": "device", "mode": "inner"}))
        .with_transformation(_transform("groupBy", {"fields": {
            "model": {"operation": "groupby"}, "vendor": {"operation": "groupby"},
            "size": {"operation": "aggregate", "aggregations": ["count"]},
            "device": {"operation": "aggregate", "aggregations": ["distinctCount"]}}}))
        .with_transformation(_transform("organize", {"renameByName": {
            "size (count)": "dead letters", "device (distinctCount)": "devices"}})),
        12, 8,
    )  # fmt: skip
    grid.add(
        _bars(
            "Dead letters by reason",
            "Messages refused at the edge per interval, by reason.",
            "none",
            Query("A", 'SELECT count("size") FROM "dead_letter" WHERE $timeFilter '
                       'GROUP BY time($__interval), "reason" fill(none)').alias("$tag_reason"),
        ),
        12, 8,
    )  # fmt: skip
    grid.add(
        table.Panel()
        .title("Security events per device")
        .description("Messages a device published for another elder or device (its "
                     "credentials were used to speak for someone else).")
        .with_target(Query("A", 'SELECT count("detail") AS "events" FROM "security_event" '
                                f'WHERE {SITE} AND $timeFilter GROUP BY "elder", "device", '
                                '"reason"').table())
        .override_by_name("Time", [_cfg("custom.hidden", True)]),
        12, 8,
    )  # fmt: skip
    return dash


DASHBOARDS: list[tuple[str, Callable[[], board.Dashboard]]] = [
    (ELDER_UID, elder_dashboard),
    (SITE_UID, site_dashboard),
    (ALERTS_UID, alerts_dashboard),
    (FLEET_UID, fleet_dashboard),
]
