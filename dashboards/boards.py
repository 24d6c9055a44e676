"""The four dashboards: one elder, a site at a glance, alerts, and the device fleet.

Queries read the storage schema of :mod:`homecare.schema` (raw data, kept 30 days) and,
for long ranges, its rollups (``"history"."wearable_1h"`` and friends, kept for years),
built by :mod:`homecare.query`. Alert panels read the ``alert`` points of
:mod:`homecare.alerts` and the ``alert_escalation`` events of escalation: the one of
event ``acknowledged`` carries ``after_s`` (seconds since the alert began), the one of
event ``resolved`` its outcome in ``detail``.

Each dashboard has a fixed uid, so links between them (the site board's rows open the
elder's dashboard) and bookmarks survive every rebuild.

Every dashboard is built once per language (:mod:`homecare.i18n`): titles, descriptions,
rows, legends, column names and the words for alert kinds, severities and states. English
keeps the plain uids; another language's boards have the language in theirs
(``homecare-elder-zh-cn``) and their own tag, and each board links to its counterparts in
the other languages, so a care monitor switches with one click.

>>> sorted(uid for uid, _ in DASHBOARDS)
['homecare-alerts', 'homecare-care', 'homecare-elder', 'homecare-fleet', 'homecare-site']
>>> uid_for(ELDER_UID, "zh-CN"), tags_for("zh-CN")
('homecare-elder-zh-cn', ['homecare-zh-CN'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from babel import Locale
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
from dashboards.words import (
    CHANNEL_NAMES,
    DEVICE_KINDS,
    DOORS,
    KINDS,
    OUTCOME_NAMES,
    SEVERITIES,
    STATES,
)
from homecare.contract import DeviceKind
from homecare.i18n import DEFAULT_LANGUAGE, N_, Translator, available, translator
from homecare.query import (
    INTERVAL,
    TIME_FILTER,
    Select,
    call,
    compare,
    equal,
    field,
    matches,
    not_equal,
    select,
    time,
)
from homecare.schema import (
    ACTIVE_G,
    CARE_GROUP,
    DEVICE,
    ELDER,
    HISTORY,
    KIND,
    SITE,
    WORKER,
    Alert,
    AlertEscalation,
    Availability,
    Bed,
    CareFollowUps,
    CareVisitRate,
    CareWorkerVisits,
    DeadLetter,
    DeviceStatus,
    Door,
    DoorRollup,
    SecurityEvent,
    Sleep,
    Wearable,
    WearableRollup,
)

ELDER_UID = "homecare-elder"
SITE_UID = "homecare-site"
ALERTS_UID = "homecare-alerts"
FLEET_UID = "homecare-fleet"
CARE_UID = "homecare-care"
TAGS = ["homecare"]

ELDER_IS = equal(ELDER, "$elder")
SITE_IS = equal(SITE, "$site")
OPEN = matches(Alert.state, "^(open|notified|acknowledged)$")
"""An alert nobody has closed yet (resolved and cancelled are closed)."""
BASELINE_TIME = "time >= ${__from}ms - 7d AND time <= ${__to}ms"
"""The panel's range and the 7 days before it, which its first baseline points average."""
OUTCOMES = ("false_alarm", "handled_at_home", "visit", "ambulance")
RECENT = "time > now() - 30d"
"""Status panels look back over the whole raw retention, whatever the picked range."""
DAY = "time > now() - 1d"
NOT_BED = not_equal(KIND, DeviceKind.BED)
"""Battery-powered devices (the bed sensor is mains-powered)."""
ROLE = Door.role
_EN = translator()


def uid_for(uid: str, language: str) -> str:
    """A board's uid in a language: English keeps the plain one."""
    return uid if language == DEFAULT_LANGUAGE else f"{uid}-{language.lower()}"


def tags_for(language: str) -> list[str]:
    """One tag per language: each language's dropdown lists its own boards."""
    return TAGS if language == DEFAULT_LANGUAGE else [f"{TAGS[0]}-{language}"]


def _shown(panel: Any, tr: Translator, names: Mapping[str, str]) -> Any:
    """Show each field (a column, a series in the legend) under its name in the reader's
    language; the queries and transformations keep their own names."""
    for name, words in names.items():
        panel.override_by_name(name, [_cfg("displayName", tr.gettext(words))])
    return panel


def _values(tr: Translator, words: Mapping[str, str]) -> list[dict[str, Any]]:
    """A value mapping: each code (``fall``, ``critical``) shown in the reader's words."""
    options = {code: {"text": tr.gettext(w), "index": i} for i, (code, w) in
               enumerate(words.items())}  # fmt: skip
    return [{"type": "value", "options": options}]


def _codes(panel: Any, tr: Translator) -> Any:
    """Columns of codes (alert kind, severity, state, channel, device kind) in words."""
    coded = [(KIND, {**KINDS, **DEVICE_KINDS}), (Alert.severity, SEVERITIES),
             (Alert.state, STATES), (AlertEscalation.channel, CHANNEL_NAMES)]  # fmt: skip
    for column, words in coded:
        panel.override_by_name(column, [_cfg("mappings", _values(tr, words))])
    return panel


COLUMNS = {
    ELDER: N_("elder"),
    DEVICE: N_("device"),
    KIND: N_("kind"),
    Alert.severity: N_("severity"),
    Alert.state: N_("state"),
    Alert.id: N_("alert"),
    AlertEscalation.channel: N_("channel"),
    AlertEscalation.who: N_("who"),
    AlertEscalation.detail: N_("detail"),
    DeviceStatus.battery: N_("battery"),
    DeviceStatus.model: N_("model"),
    DeviceStatus.vendor: N_("vendor"),
    DeviceStatus.firmware: N_("firmware"),
    Availability.online: N_("online"),
    SecurityEvent.reason: N_("reason"),
}
"""Tag and field names as a table's column headers."""


def _columns(panel: Any, tr: Translator, more: Mapping[str, str] | None = None) -> Any:
    """A table whose column headers, and the codes in them, are in the reader's words.
    Overrides come first: a later one for the same column adds to it."""
    return _codes(_shown(panel, tr, {**COLUMNS, **(more or {})}), tr)


def _per_interval(measurement: str, *columns: str, where: str | None = None) -> Select:
    """Aggregates of the elder's raw points per panel interval (gaps left empty)."""
    conditions = (ELDER_IS, *([where] if where else []), TIME_FILTER)
    return select(measurement, *columns).where(*conditions).group_by(time(INTERVAL)).fill("null")


def _last(name: str) -> str:
    """The last value of a field, under its own name."""
    return call("last", name, alias=name)


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


def _dashboard(
    uid: str, title: str, description: str, start: str, tr: Translator
) -> board.Dashboard:
    """A board in the reader's language (``title`` and ``description`` already in it),
    linked to the other boards of that language and to itself in every other one."""
    lang = tr.language
    dash = (
        board.Dashboard(title)
        .uid(uid_for(uid, lang))
        .description(description)
        .tags(tags_for(lang))
        .time(start, "now")
        .refresh("1m")
        .timezone("browser")
        .readonly()
        .with_variable(datasource_variable())
        .with_variable(tag_variable("site", tr.gettext("Site"), SITE_VAR))
        .link(
            board.DashboardLink(tr.gettext("Homecare dashboards"))
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(tags_for(lang))
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for other in available():
        if other != lang:  # "中文" on the English board, "English" on the Chinese one
            name = Locale.parse(other.replace("-", "_")).language_name or other
            dash.link(
                board.DashboardLink(name.capitalize())
                .type(model.DashboardLinkType.LINK)
                .url(f"/d/{uid_for(uid, other)}")
                .include_vars(True)
                .keep_time(True)
            )
    return dash


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


def _activity_by_hour(utc_offset_h: float = 0.0, tr: Translator = _EN) -> heatmap.Panel:
    _ = tr.gettext
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
        .title(_("Activity by hour of day (30 days)"))
        .description(tr.gettext(
            "Minutes active in each hour of each day (local hours, UTC{offset}), from the "
            "hourly rollups: the elder's daily rhythm, and changes to it."
        ).format(offset=f"{utc_offset_h:+g}"))
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
    active = call("sum", WearableRollup.active_s, then="/ 60", alias="a")
    hourly = (
        select(WearableRollup.at("1h"), active, policy=HISTORY)
        .where(ELDER_IS, TIME_FILTER)
        .group_by(time("1h"))
        .fill("0")
    )
    for hour in range(24):
        start_m = round((hour - utc_offset_h) % 24 * 60)
        at_hour = select(hourly, call("first", "a", alias="a")).group_by(time("1d", f"{start_m}m"))
        panel.with_target(
            Query(
                f"H{hour:02d}",
                select(at_hour, call("max", "a", alias=f"{hour:02d}"))
                .where(TIME_FILTER)
                .group_by(time("1d"))
                .fill("null"),
            )
        )
    return panel


def elder_dashboard(utc_offset_h: float = 0.0, tr: Translator = _EN) -> board.Dashboard:
    _ = tr.gettext
    dash = _dashboard(
        ELDER_UID,
        _("Homecare: elder"),
        _("One elder's week against their own normal: vital signs, activity, sleep, doors, "
        "devices; alerts as annotations."),
        "now-7d",
        tr,
    ).with_variable(tag_variable("elder", _("Elder"), ELDER_VAR))
    dash.annotation(
        annotation(
            _("Alerts"),
            select(Alert.name, field(KIND), field(Alert.state), field(Alert.severity))
            .where(ELDER_IS, TIME_FILTER),
            text=KIND,
            tags=f"{Alert.severity},{Alert.state}",
            color="red",
        )
    )
    grid = Layout(dash)
    grid.row(_("Vital signs"))
    heart = _series(
        _("Heart rate"),
        _("Wearable and bed sensor, with the elder's usual range: the 10th to 90th percentile "
        "of their hourly mean on each day, averaged over their previous 7 days with at "
        "least 12 hours worn."),
        "bpm",
        Query("A", _per_interval(Wearable.name, call("mean", Wearable.hr, alias=Wearable.name))),
        Query("B", _per_interval(Bed.name, call("mean", Bed.hr, alias=Bed.name))),
        # Partial days are left out: the 10th percentile of fewer than 5 hours is null, and
        # one null day would blank the low bound (only) for the next 7 days.
        Query("C", select(
            select(WearableRollup.at("1h"),
                   call("percentile", WearableRollup.hr_mean, 10, alias="low"),
                   call("percentile", WearableRollup.hr_mean, 90, alias="high"),
                   call("count", WearableRollup.hr_mean, alias="hours"), policy=HISTORY)
            .where(ELDER_IS, BASELINE_TIME).group_by(time("1d")),
            call("moving_average", "low", 7, alias="usual low"),
            call("moving_average", "high", 7, alias="usual high"),
        ).where(compare("hours", ">=", 12), BASELINE_TIME)),
    )  # fmt: skip
    band = [_cfg("custom.lineWidth", 0), _cfg("custom.fillOpacity", 15),
            _cfg("color", {"mode": "fixed", "fixedColor": "green"})]  # fmt: skip
    heart.override_by_name("usual low", band).override_by_name(  # Grafana finds it by the
        "usual high", [*band, _cfg("custom.fillBelowTo", _("usual low"))]  # name it shows
    )
    _shown(heart, tr, {Wearable.name: N_("wristband"), Bed.name: N_("bed sensor"),
                       "usual low": N_("usual low"), "usual high": N_("usual high")})  # fmt: skip
    grid.add(heart, 24, 9)
    grid.add(
        _series(
            _("Blood oxygen (SpO2)"),
            _("Wearable SpO2: the mean and the lowest reading of each interval."),
            "percent",
            Query("A", _per_interval(Wearable.name, call("mean", Wearable.spo2, alias="mean"),
                                     call("min", Wearable.spo2, alias="lowest"))),
        ).min(80).max(100).override_by_name("mean", [_cfg("displayName", _("mean"))])
        .override_by_name("lowest", [_cfg("displayName", _("lowest"))]),
        12, 8,
    )  # fmt: skip
    grid.add(
        _series(
            _("Breathing rate in bed"),
            _("Breaths per minute measured by the bed sensor while the elder lies in bed "
            "(mostly the night)."),
            "none",
            Query("A", _per_interval(Bed.name, call("mean", Bed.br, alias="breaths/min"),
                                     where=compare(Bed.presence, "=", True))),
        ).override_by_name("breaths/min", [_cfg("displayName", _("breaths a minute"))]),
        12, 8,
    )  # fmt: skip
    grid.row(_("Activity and sleep"))
    grid.add(_activity_by_hour(utc_offset_h, tr), 24, 10)
    grid.add(
        _bars(
            _("Sleep: time in bed per night"),
            _("Hours in bed between 18:00 and 12:00, and how often the elder got out of bed "
            "and back in that night."),
            "h",
            Query("A", select(Sleep.name,
                              field(Sleep.in_bed_s, then="/ 3600", alias="hours in bed"),
                              field(Sleep.exits, alias="bed exits"), policy=HISTORY)
                       .where(ELDER_IS, TIME_FILTER)),
        ).override_by_name("bed exits", [_cfg("unit", "none"),
                                         _cfg("custom.axisPlacement", "right"),
                                         _cfg("displayName", _("bed exits"))])
        .override_by_name("hours in bed", [_cfg("displayName", _("hours in bed"))]),
        12, 8,
    )  # fmt: skip
    grid.add(
        _bars(
            _("Steps per day"),
            _("Steps counted by the wearable each day (daily rollup)."),
            "none",
            Query("A", select(WearableRollup.at("1d"), field(WearableRollup.steps),
                              policy=HISTORY).where(ELDER_IS, TIME_FILTER)),
        ).override_by_name(WearableRollup.steps, [_cfg("displayName", _("steps"))]),
        12, 8,
    )  # fmt: skip
    grid.add(
        _shown(_bars(
            _("Door openings per day"),
            _("Openings of each door (front, bathroom, bedroom, fridge) per day (daily rollup)."),
            "none",
            Query("A", select(DoorRollup.at("1d"), field(DoorRollup.opens), policy=HISTORY)
                       .where(ELDER_IS, TIME_FILTER).group_by(ROLE)).alias(f"$tag_{ROLE}"),
        ).stacking(StackingConfig().mode(common.StackingMode.NORMAL)), tr, DOORS),
        24, 8,
    )  # fmt: skip
    grid.row(_("Devices"))
    grid.add(
        _columns(table.Panel(), tr)
        .title(_("Battery and last seen"))
        .description(_("Each device of the elder: when it last reported its status (last "
                     "seen) and its battery then."))
        .with_target(
            Query("A", select(DeviceStatus.name, _last(DeviceStatus.battery))
                       .where(ELDER_IS, RECENT).group_by(DEVICE, KIND)).table()
        )
        .override_by_name("Time", [_cfg("displayName", _("last seen")),
                                   _cfg("unit", "dateTimeFromNow")])
        .override_by_name(DeviceStatus.battery, [_cfg("unit", "percent"),
                                      _cfg("thresholds", _battery().build()),
                                      _cfg("custom.cellOptions", {"type": "color-background"})]),
        24, 7,
    )
    return dash


# -- Site board --------------------------------------------------------------------------

def status_mappings(tr: Translator = _EN) -> list[dict[str, Any]]:
    """Status = 10 × open alerts + devices offline (missing counts are 0): an open alert
    outranks an offline device."""
    _ = tr.gettext
    return [
        {"type": "range", "options": {"from": 0, "to": 0.5,
                                      "result": {"text": _("OK"), "color": "green", "index": 0}}},
        {"type": "range", "options": {"from": 0.5, "to": 9.5,
                                      "result": {"text": _("device offline"), "color": "orange",
                                                 "index": 1}}},
        {"type": "range", "options": {"from": 9.5, "to": 1e9,
                                      "result": {"text": _("open alert"), "color": "red",
                                                 "index": 2}}},
    ]  # fmt: skip


STATUS_MAPPINGS = status_mappings()


def site_dashboard(tr: Translator = _EN) -> board.Dashboard:
    _ = tr.gettext
    dash = _dashboard(
        SITE_UID,
        _("Homecare: site board"),
        _("Every elder of a site at a glance: who needs attention now."),
        "now-24h",
        tr,
    )
    grid = Layout(dash)
    elder_link = {
        "title": _("Open {elder}'s dashboard").format(elder="${__value.text}"),
        "url": f"/d/{uid_for(ELDER_UID, tr.language)}/homecare-elder?var-site=${{site}}"
        "&var-elder=${__value.raw}&${__url_time_range}",
    }
    elders = (
        _columns(table.Panel(), tr, {"last active": N_("last active"),
                                     "open alerts": N_("open alerts"),
                                     "devices offline": N_("devices offline"),
                                     "lowest battery": N_("lowest battery"),
                                     "status": N_("status")})
        .title(_("Elders"))
        .description(_("One row per elder: status (open alert, device offline, OK), open "
                     "alerts, devices offline, time since the last active second on the "
                     "wearable, lowest battery. Click an elder to open their dashboard."))
        .with_target(Query("A", select(Wearable.name, call("last", Wearable.mag_std,
                                                           alias="last active"))
                                .where(SITE_IS, compare(Wearable.mag_std, ">=", ACTIVE_G), RECENT)
                                .group_by(ELDER)).table())
        .with_target(Query("B", select(Alert.name, call("count", Alert.id, alias="open alerts"))
                                .where(SITE_IS, OPEN, RECENT).group_by(ELDER)).table())
        .with_target(Query("C", select(
            select(Availability.name, _last(Availability.online))
            .where(SITE_IS, RECENT).group_by(ELDER, DEVICE),
            call("count", Availability.online, alias="devices offline"),
        ).where(compare(Availability.online, "=", False)).group_by(ELDER)).table())
        .with_target(Query("D", select(
            select(DeviceStatus.name, _last(DeviceStatus.battery))
            .where(SITE_IS, DAY).group_by(ELDER, DEVICE),
            call("min", DeviceStatus.battery, alias="lowest battery"),
        ).group_by(ELDER)).table())
        .with_transformation(_transform("joinByField", {"byField": ELDER, "mode": "outer"}))
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
        .override_by_name(ELDER, [_cfg("links", [elder_link])])
        .override_by_name("status", [_cfg("mappings", status_mappings(tr)),
                                     _cfg("custom.cellOptions", {"type": "color-background"})])
        .override_by_name("last active", [_cfg("unit", "dateTimeFromNow")])
        .override_by_name("lowest battery", [_cfg("unit", "percent")])
        .override_by_regexp("open alerts|devices offline", [_cfg("noValue", "0")])
        .sort_by([TableSortByFieldState().display_name(_("status")).desc(True)])
    )  # fmt: skip
    grid.add(elders, 24, 10)
    grid.add(
        _shown(bargauge.Panel(), tr, SEVERITIES)
        .title(_("Open alerts by severity"))
        .description(_("Alerts of the site nobody has resolved or cancelled yet."))
        .with_target(Query("A", select(Alert.name, call("count", Alert.id))
                                .where(SITE_IS, OPEN, RECENT).group_by(Alert.severity))
                     .alias(f"$tag_{Alert.severity}"))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .orientation(common.VizOrientation.HORIZONTAL),
        8, 8,
    )  # fmt: skip
    grid.add(
        _columns(table.Panel(), tr)
        .title(_("Open alerts"))
        .description(_("Each open alert: who, what, how severe, its state, and how long ago "
                     "it began (its age)."))
        .with_target(Query("A", select(Alert.name, field(Alert.state), field(Alert.device),
                                       field(Alert.id))
                                .where(SITE_IS, OPEN, RECENT)
                                .group_by(ELDER, KIND, Alert.severity)).table())
        .override_by_name("Time", [_cfg("displayName", _("began")),
                                   _cfg("unit", "dateTimeFromNow")])
        .override_by_name(ELDER, [_cfg("links", [elder_link])])
        .sort_by([TableSortByFieldState().display_name(_("began")).desc(False)]),
        16, 8,
    )  # fmt: skip
    grid.add(
        bargauge.Panel()
        .title(_("Battery"))
        .description(_("Each battery-powered device's last reported battery."))
        .with_target(Query("A", select(DeviceStatus.name, call("last", DeviceStatus.battery))
                                .where(SITE_IS, NOT_BED, DAY).group_by(ELDER, DEVICE))
                     .alias(f"$tag_{ELDER} $tag_{DEVICE}"))
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
        .with_target(Query("A", select(Alert.name, field(Alert.id)).where(SITE_IS, TIME_FILTER)
                                .group_by(ELDER, KIND, Alert.severity)).table())
        .with_target(Query("B", select(AlertEscalation.name, field(AlertEscalation.id))
                                .where(SITE_IS, equal(AlertEscalation.event, "acknowledged"),
                                       TIME_FILTER)
                                .group_by(AlertEscalation.channel, AlertEscalation.who)).table())
        .with_transformation(_transform("joinByField", {"byField": Alert.id, "mode": "inner"}))
        .with_transformation(_transform("calculateField", {
            "mode": "binary", "alias": "acknowledged after",
            "binary": {"left": {"matcher": {"id": "byName", "options": "Time 2"}},
                       "operator": "-",
                       "right": {"matcher": {"id": "byName", "options": "Time 1"}}},
        }))
    )  # fmt: skip



def alerts_dashboard(tr: Translator = _EN) -> board.Dashboard:
    _ = tr.gettext
    dash = _dashboard(
        ALERTS_UID,
        _("Homecare: alerts"),
        _("What the detectors raised and how escalation handled it: kinds, time to "
        "acknowledge, outcomes, false alarms."),
        "now-30d",
        tr,
    )
    grid = Layout(dash)
    grid.add(
        _shown(_bars(
            _("Alerts by kind"),
            _("Alerts raised per day, by kind."),
            "none",
            Query("A", select(Alert.name, call("count", Alert.id)).where(SITE_IS, TIME_FILTER)
                       .group_by(time("1d"), KIND).fill("none")).alias(f"$tag_{KIND}"),
        ).stacking(StackingConfig().mode(common.StackingMode.NORMAL)), tr, KINDS),
        24, 8,
    )  # fmt: skip
    grid.add(
        _columns(_acknowledged(table.Panel()), tr,
                 {"acknowledged after": N_("acknowledged after"), "began": N_("began")})
        .title(_("Time to acknowledge"))
        .description(_("Each acknowledged alert: when it began, who it concerned, on which "
                     "channel and how long after it was acknowledged."))
        .with_transformation(_transform("organize", {
            "excludeByName": {"Time 2": True, Alert.id: True},
            "renameByName": {"Time 1": "began"},
            "indexByName": {"began": 0, ELDER: 1, KIND: 2, Alert.severity: 3,
                            "acknowledged after": 4, AlertEscalation.channel: 5,
                            AlertEscalation.who: 6},
        }))
        .override_by_name("acknowledged after", [_cfg("unit", "ms")])
        .sort_by([TableSortByFieldState().display_name(_("began")).desc(True)]),
        16, 8,
    )  # fmt: skip
    grid.add(
        _acknowledged(stat.Panel())
        .title(_("Mean time to acknowledge"))
        .reduce_options(ReduceDataOptions().calcs(["mean"]).fields("/^acknowledged after$/"))
        .unit("ms")
        .thresholds(_thresholds((None, "green"), (60_000, "orange"), (300_000, "red"))),
        8, 8,
    )  # fmt: skip
    grid.add(
        _columns(table.Panel(), tr, {"Time": N_("when")})
        .title(_("Deliveries that failed"))
        .description(_("Notifications escalation gave up on after its retries (a failed_<channel> "
                     "event): who was not reached, on which channel, and the last error. "
                     "The ladder's next rung still runs; call the contact another way."))
        .with_target(Query("A", select(AlertEscalation.name, field(AlertEscalation.id),
                                       field(AlertEscalation.detail))
                                .where(SITE_IS, matches(AlertEscalation.event, "^failed_"),
                                       TIME_FILTER)
                                .group_by(ELDER, KIND, AlertEscalation.who,
                                          AlertEscalation.channel)).table())
        .with_transformation(_transform("merge", {}))
        .sort_by([TableSortByFieldState().display_name(_("when")).desc(True)]),
        24, 6,
    )  # fmt: skip
    resolved = select(AlertEscalation.name).where(
        SITE_IS, equal(AlertEscalation.event, "resolved"), TIME_FILTER
    )
    count_ids = call("count", AlertEscalation.id)
    outcomes = (
        piechart.Panel()
        .title(_("Outcomes"))
        .description(_("How resolved alerts ended: false alarm, handled at home, a visit, "
                     "an ambulance."))
        .pie_type(piechart_model.PieChartType.DONUT)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )  # fmt: skip
    for k, outcome in enumerate(OUTCOMES):
        outcomes.with_target(
            Query(chr(ord("A") + k), replace(resolved, columns=(
                call("count", AlertEscalation.id, alias=outcome.replace("_", " ")),
            )).where(equal(AlertEscalation.detail, outcome)))
        )  # fmt: skip
    _shown(outcomes, tr, {k.replace("_", " "): words for k, words in OUTCOME_NAMES.items()})
    grid.add(outcomes, 12, 9)
    grid.add(
        stat.Panel()
        .title(_("False-alarm share"))
        .description(_("False alarms among the alerts resolved in the range."))
        .with_target(Query("A", replace(resolved, columns=(count_ids,))
                                .where(equal(AlertEscalation.detail, "false_alarm"))).hide())
        .with_target(Query("B", replace(resolved, columns=(count_ids,))).hide())
        .with_target(Math("C", "$A / $B * 100"))
        .unit("percent")
        .thresholds(_thresholds((None, "green"), (20, "orange"), (50, "red"))),
        12, 9,
    )  # fmt: skip
    return dash


# -- Device fleet ------------------------------------------------------------------------


def fleet_dashboard(tr: Translator = _EN) -> board.Dashboard:
    _ = tr.gettext
    dash = _dashboard(
        FLEET_UID,
        _("Homecare: device fleet"),
        _("Every device of a site: online or not, batteries, firmware, messages refused at "
        "the edge, security events."),
        "now-7d",
        tr,
    )
    grid = Layout(dash)
    last_online = (
        select(Availability.name, _last(Availability.online))
        .where(SITE_IS, RECENT)
        .group_by(DEVICE)
    )
    online = Availability.online
    grid.add(
        stat.Panel()
        .title(_("Devices online / offline"))
        .description(_("By each device's last availability message (offline: its last will)."))
        .with_target(Query("A", select(last_online, call("count", online, alias="online"))
                                .where(compare(online, "=", True))))
        .with_target(Query("B", select(last_online, call("count", online, alias="offline"))
                                .where(compare(online, "=", False))))
        .override_by_name("offline", [_cfg("color", {"mode": "fixed", "fixedColor": "red"}),
                                      _cfg("displayName", _("offline"))])
        .override_by_name("online", [_cfg("color", {"mode": "fixed", "fixedColor": "green"}),
                                     _cfg("displayName", _("online"))]),
        8, 6,
    )  # fmt: skip
    grid.add(
        histogram.Panel()
        .title(_("Battery distribution"))
        .description(_("Last reported battery of every battery-powered device."))
        .with_target(Query("A", select(DeviceStatus.name, _last(DeviceStatus.battery))
                                .where(SITE_IS, NOT_BED, DAY).group_by(DEVICE)).table())
        .bucket_size(10)
        .combine(True)
        .unit("percent"),
        16, 6,
    )  # fmt: skip
    grid.add(
        _columns(table.Panel(), tr)
        .title(_("Devices"))
        .description(_("Each device's availability, model, vendor and firmware, as last "
                     "reported, and where a wearable is worn (empty: unknown, the fall "
                     "detector's most careful decision)."))
        .with_target(Query("A", select(Availability.name, _last(online))
                                .where(SITE_IS, RECENT).group_by(ELDER, DEVICE, KIND)).table())
        .with_target(Query("B", select(DeviceStatus.name, *(_last(f) for f in (
                                    DeviceStatus.model, DeviceStatus.vendor, DeviceStatus.firmware,
                                    DeviceStatus.battery, DeviceStatus.placement)))
                                .where(SITE_IS, RECENT).group_by(DEVICE)).table())
        .with_transformation(_transform("joinByField", {"byField": DEVICE, "mode": "outer"}))
        .with_transformation(_transform("organize", {
            "excludeByName": {"Time 1": True, "Time 2": True}}))
        .override_by_name(online, [_cfg("mappings", [
            {"type": "value", "options": {
                "true": {"text": _("online"), "color": "green", "index": 0},
                "false": {"text": _("offline"), "color": "red", "index": 1}}}]),
            _cfg("custom.cellOptions", {"type": "color-background"})]),
        24, 8,
    )  # fmt: skip
    grid.add(
        _columns(table.Panel(), tr)
        .title(_("Firmware versions"))
        .description(_("How many devices run each firmware, per model."))
        .with_target(Query("A", select(DeviceStatus.name, _last(DeviceStatus.firmware),
                                       _last(DeviceStatus.model))
                                .where(SITE_IS, RECENT).group_by(DEVICE)).table())
        .with_transformation(_transform("groupBy", {"fields": {
            DeviceStatus.model: {"operation": "groupby"},
            DeviceStatus.firmware: {"operation": "groupby"},
            DEVICE: {"operation": "aggregate", "aggregations": ["count"]}}}))
        .with_transformation(_transform("organize", {
            "renameByName": {f"{DEVICE} (count)": "devices"}}))
        .override_by_name("devices", [_cfg("displayName", _("devices"))]),
        12, 8,
    )  # fmt: skip
    grid.add(
        _columns(table.Panel(), tr, {"dead letters": N_("dead letters"), "devices": N_("devices")})
        .title(_("Dead letters per model and vendor"))
        .description(_("Messages refused at the edge in the range, attributed to the model "
                     "and vendor of the device that sent them; with the share per device."))
        .with_target(Query("A", select(DeadLetter.name, field(DeadLetter.device),
                                       field(DeadLetter.size))
                                .where(not_equal(DeadLetter.device, ""), TIME_FILTER)
                                .limit(10000)).table())
        .with_target(Query("B", select(DeviceStatus.name, _last(DeviceStatus.model),
                                       _last(DeviceStatus.vendor))
                                .where(SITE_IS, RECENT).group_by(DEVICE)).table())
        .with_transformation(_transform("joinByField", {"byField": DEVICE, "mode": "inner"}))
        .with_transformation(_transform("groupBy", {"fields": {
            DeviceStatus.model: {"operation": "groupby"},
            DeviceStatus.vendor: {"operation": "groupby"},
            DeadLetter.size: {"operation": "aggregate", "aggregations": ["count"]},
            DEVICE: {"operation": "aggregate", "aggregations": ["distinctCount"]}}}))
        .with_transformation(_transform("organize", {"renameByName": {
            f"{DeadLetter.size} (count)": "dead letters",
            f"{DEVICE} (distinctCount)": "devices"}})),
        12, 8,
    )  # fmt: skip
    grid.add(
        _bars(
            _("Dead letters by reason"),
            _("Messages refused at the edge per interval, by reason."),
            "none",
            Query("A", select(DeadLetter.name, call("count", DeadLetter.size))
                       .where(TIME_FILTER).group_by(time(INTERVAL), DeadLetter.reason)
                       .fill("none")).alias(f"$tag_{DeadLetter.reason}"),
        ),
        12, 8,
    )  # fmt: skip
    grid.add(
        _columns(table.Panel(), tr, {"events": N_("events")})
        .title(_("Security events per device"))
        .description(_("Messages a device published for another elder or device (its "
                     "credentials were used to speak for someone else)."))
        .with_target(Query("A", select(SecurityEvent.name,
                                       call("count", SecurityEvent.detail, alias="events"))
                                .where(SITE_IS, TIME_FILTER)
                                .group_by(ELDER, DEVICE, SecurityEvent.reason)).table())
        .override_by_name("Time", [_cfg("custom.hidden", True)]),
        12, 8,
    )  # fmt: skip
    return dash


# -- Proactive care ----------------------------------------------------------------------


def care_dashboard(tr: Translator = _EN) -> board.Dashboard:
    """The numbers programmes report, from the monthly points of ``homecare care report``
    (one per site and group, per worker, per site; at the month's first midnight)."""
    _ = tr.gettext
    dash = _dashboard(
        CARE_UID,
        _("Homecare: proactive care"),
        _("Monthly visit rate per group against its target, visits and calls per worker, "
          "open follow-ups and elders overdue for their visit or call."),
        "now-365d",
        tr,
    )
    grid = Layout(dash)
    rate = CareVisitRate
    grid.add(
        _columns(table.Panel(), tr, {
            CARE_GROUP: N_("group"), rate.elders_in_group: N_("elders in the group"),
            rate.elders_contacted: N_("visited or called"), rate.rate_pct: N_("visit rate"),
            rate.target_pct: N_("target")})
        .title(_("Visit rate by group, latest month"))
        .description(_("Of each group's elders, how many had the visit or call the policy "
                       "asks for this month, against the programme's target."))
        .with_target(Query("A", select(rate.name, _last(rate.elders_in_group),
                                       _last(rate.elders_contacted), _last(rate.rate_pct),
                                       _last(rate.target_pct), policy=HISTORY)
                                .where(SITE_IS, TIME_FILTER).group_by(CARE_GROUP)).table())
        .override_by_name("Time", [_cfg("displayName", _("month")),
                                   _cfg("unit", "dateTimeAsIso")])
        .override_by_regexp(f"{rate.rate_pct}|{rate.target_pct}", [_cfg("unit", "percent")]),
        14, 8,
    )  # fmt: skip
    for title, description, count in (
        (_("Open follow-ups"), _("Visits or calls after which something is still to be done."),
         CareFollowUps.follow_ups_open),
        (_("Elders overdue"), _("Elders whose visit or call is past its interval."),
         CareFollowUps.elders_overdue),
    ):
        grid.add(
            stat.Panel()
            .title(title)
            .description(description)
            .with_target(Query("A", select(CareFollowUps.name, call("last", count),
                                           policy=HISTORY)
                                    .where(SITE_IS, TIME_FILTER)))
            .thresholds(_thresholds((None, "green"), (1, "orange"), (10, "red"))),
            5, 8,
        )  # fmt: skip
    grid.add(
        _bars(
            _("Monthly visit rate by group"),
            _("Each month's rate per group (the target is in the table above)."),
            "percent",
            Query("A", select(rate.name, field(rate.rate_pct), policy=HISTORY)
                       .where(SITE_IS, TIME_FILTER).group_by(CARE_GROUP))
            .alias(f"$tag_{CARE_GROUP}"),
        ).min(0).max(100),
        14, 8,
    )  # fmt: skip
    grid.add(
        bargauge.Panel()
        .title(_("Visits per worker, latest month"))
        .description(_("Visits recorded by each community worker in the latest month."))
        .with_target(Query("A", select(CareWorkerVisits.name,
                                       call("last", CareWorkerVisits.visits_made),
                                       policy=HISTORY)
                                .where(SITE_IS, TIME_FILTER).group_by(WORKER))
                     .alias(f"$tag_{WORKER}"))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .orientation(common.VizOrientation.HORIZONTAL),
        10, 8,
    )  # fmt: skip
    grid.add(falls_per_month(tr), 24, 8)
    return dash


FALL_KINDS = matches(KIND, "^fall(_recovered)?$")
"""Falls on record: the critical ones and those the elder got up from (``fall_recovered``)."""


def falls_per_month(tr: Translator = _EN) -> table.Panel:
    """Falls per elder per 30 days, critical and recovered apart, from the alert history
    (``homecare rollup run`` copies alerts there; raw alerts are kept 30 days only)."""
    _ = tr.gettext
    panel: table.Panel = (
        _columns(table.Panel(), tr, {"falls": N_("falls")})
        .title(_("Falls per elder per month"))
        .description(_("Falls per elder in each 30 days: those after which the elder lay "
                       "still (an alarm) and those the elder got up from (recorded, the "
                       "family told). A fall is the strongest sign of the next one."))
        .with_target(Query("A", select(Alert.name, call("count", Alert.id, alias="falls"),
                                       policy=HISTORY)
                                .where(SITE_IS, FALL_KINDS, TIME_FILTER)
                                .group_by(time("30d"), ELDER, KIND).fill("none")).table())
        .with_transformation(_transform("merge", {}))
        .override_by_name("Time", [_cfg("displayName", _("month")),
                                   _cfg("unit", "dateTimeAsIso")])
        .sort_by([TableSortByFieldState().display_name(_("month")).desc(True)])
    )  # fmt: skip
    return panel


DASHBOARDS: list[tuple[str, Callable[..., board.Dashboard]]] = [
    (ELDER_UID, elder_dashboard),
    (SITE_UID, site_dashboard),
    (ALERTS_UID, alerts_dashboard),
    (FLEET_UID, fleet_dashboard),
    (CARE_UID, care_dashboard),
]
