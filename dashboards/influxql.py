"""InfluxQL targets, annotations and template variables for the typed dashboard builder.

The grafana-foundation-sdk has builders for every core panel but no InfluxDB query type,
so the InfluxQL target is defined here the way the SDK defines its own (a ``Dataquery``
with ``to_json`` and a builder). Every query is raw InfluxQL over the v1 API, so the
same text runs on InfluxDB 1.x, 2.x (DBRP mapping) and 3.x; Grafana substitutes its
macros (``$timeFilter``, ``$__interval``, ``${__from}``, ``$elder``, ``$site``) first.
Query text is built by :mod:`homecare.query` from the names of :mod:`homecare.schema`.

>>> from homecare.query import TIME_FILTER, call, select
>>> target = Query("A", select("bed", call("mean", "br")).where(TIME_FILTER)).build()
>>> target.to_json()["rawQuery"], target.to_json()["resultFormat"]
(True, 'time_series')
"""

from __future__ import annotations

from typing import Literal, Self

from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as model

from homecare.query import Select, equal, show_tag_values
from homecare.schema import ELDER, SITE, DeviceStatus

DATASOURCE_UID = "homecare-influxdb"
"""The uid the provisioned InfluxDB datasource gets (deploy/grafana/provisioning)."""
DATASOURCE_VAR = "datasource"
INFLUX = model.DataSourceRef(type_val="influxdb", uid="${" + DATASOURCE_VAR + "}")
"""Every panel reads through the ``$datasource`` variable: another InfluxDB datasource of
an existing Grafana can be chosen without editing the dashboards."""
EXPRESSIONS = model.DataSourceRef(type_val="__expr__", uid="__expr__")
"""Grafana's server-side expressions (math across two queries)."""

ResultFormat = Literal["time_series", "table"]


class InfluxQuery(cogvariants.Dataquery):
    """One raw InfluxQL target of a panel, as Grafana's InfluxDB datasource stores it."""

    def __init__(self, ref_id: str, query: str) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format: ResultFormat = "time_series"
        self.alias: str | None = None
        self.hide = False

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": INFLUX,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias:
            out["alias"] = self.alias
        if self.hide:
            out["hide"] = True
        return out


class Query(cogbuilder.Builder[InfluxQuery]):
    """Builder of an :class:`InfluxQuery`, in the SDK's style."""

    def __init__(self, ref_id: str, query: Select | str) -> None:
        self._internal = InfluxQuery(ref_id, str(query))

    def build(self) -> InfluxQuery:
        return self._internal

    def table(self) -> Self:
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        self._internal.alias = alias
        return self

    def hide(self) -> Self:
        self._internal.hide = True
        return self


class MathExpression(cogvariants.Dataquery):
    """A server-side math expression over other targets (``$A / $B``)."""

    def __init__(self, ref_id: str, expression: str) -> None:
        self.ref_id = ref_id
        self.expression = expression

    def to_json(self) -> dict[str, object]:
        return {"refId": self.ref_id, "datasource": EXPRESSIONS, "type": "math",
                "expression": self.expression}  # fmt: skip


class Math(cogbuilder.Builder[MathExpression]):
    def __init__(self, ref_id: str, expression: str) -> None:
        self._internal = MathExpression(ref_id, expression)

    def build(self) -> MathExpression:
        return self._internal


class AnnotationTarget:
    """The InfluxQL annotation query and which columns carry its text and tags."""

    def __init__(self, query: str, text: str, tags: str) -> None:
        self.query = query
        self.text = text
        self.tags = tags

    def to_json(self) -> dict[str, object]:
        # The shape Grafana's InfluxDB plugin gives annotation targets it creates.
        return {"refId": "Anno", "query": self.query, "rawQuery": True, "queryType": "tags",
                "fromAnnotations": True, "textColumn": self.text, "tagsColumn": self.tags}


class Annotation(cogbuilder.Builder[model.AnnotationTarget]):
    def __init__(self, query: Select | str, *, text: str, tags: str) -> None:
        self._internal = AnnotationTarget(str(query), text, tags)

    def build(self) -> model.AnnotationTarget:
        return self._internal  # type: ignore[return-value]  # duck-typed: to_json is enough


def annotation(
    name: str, query: Select | str, *, text: str, tags: str, color: str
) -> board.AnnotationQuery:
    """An annotation drawn from InfluxDB on every time-series panel of the dashboard."""
    return (
        board.AnnotationQuery()
        .name(name)
        .datasource(INFLUX)
        .enable(True)
        .icon_color(color)
        .target(Annotation(query, text=text, tags=tags))
    )


def datasource_variable() -> board.DatasourceVariable:
    return (
        board.DatasourceVariable(DATASOURCE_VAR)
        .label("InfluxDB")
        .type("influxdb")
        .current(model.VariableOption(selected=True, text=DATASOURCE_UID, value=DATASOURCE_UID))
    )


def tag_variable(name: str, label: str, query: str) -> board.QueryVariable:
    """A single-valued variable listing the values of a tag (``SHOW TAG VALUES``)."""
    return (
        board.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(INFLUX)
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.NATURAL_ASC)
    )


SITE_VAR = show_tag_values([DeviceStatus.name], SITE)
ELDER_VAR = show_tag_values([DeviceStatus.name], ELDER, equal(SITE, "$site"))
