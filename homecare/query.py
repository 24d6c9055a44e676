"""InfluxQL built in one place, from the names of :mod:`homecare.schema`.

Readers (rollups, baselines, the weekly report, erasure, the demo, the dashboards) say
what they want: fields or aggregates of a measurement in a policy, tags equal to values,
a time range, a grouping; this module writes the text. Identifiers are always quoted
and string values always quoted as literals, so no reader can get either wrong. Grafana's
macros (:data:`TIME_FILTER`, :data:`INTERVAL`, ``${__from}``…) and template variables
(``$elder``) pass through unchanged, so dashboard panels are built the same way.

>>> from homecare.schema import HISTORY, Wearable, WearableRollup
>>> print(select(Wearable.name, call("mean", Wearable.hr, alias="hr"))
...       .equal(elder="e1").between(0, 60_000).group_by(time("1m"), "elder").fill("none"))
SELECT mean("hr") AS "hr" FROM "wearable" WHERE "elder" = 'e1' AND time >= 0ms AND \
time < 60000ms GROUP BY time(1m), "elder" fill(none)
>>> print(select(WearableRollup.at("1d"), field(WearableRollup.steps), policy=HISTORY)
...       .equal(elder="$elder").where(TIME_FILTER))
SELECT "steps" FROM "history"."wearable_1d" WHERE "elder" = '$elder' AND $timeFilter
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from homecare.influx import quote_ident, quote_literal
from homecare.schema import ELDER, HISTORY, INTERVALS, RAW, Rollup, duration, offset_s

__all__ = [
    "INTERVAL",
    "TIME_FILTER",
    "Select",
    "any_of",
    "call",
    "compare",
    "delete",
    "equal",
    "every_measurement",
    "field",
    "matches",
    "not_equal",
    "rollup_select",
    "select",
    "show_field_keys",
    "show_series",
    "show_tag_values",
    "source",
    "time",
]

TIME_FILTER = "$timeFilter"
"""Grafana's time-range condition on ``time``."""
INTERVAL = "$__interval"
"""Grafana's bucket for the panel's width."""


def field(name: str, *, alias: str | None = None, then: str = "") -> str:
    """A field or tag as a column: ``"hr"``, ``"hr" AS "pulse"``, ``"s" / 60 AS "min"``."""
    return _alias(quote_ident(name) + (f" {then}" if then else ""), alias)


def call(fn: str, name: str, *args: object, alias: str | None = None, then: str = "") -> str:
    """An aggregate or selector of a field: ``mean("hr")``, ``percentile("hr", 10) AS "low"``,
    with ``then`` arithmetic after it (``/ 60``)."""
    inner = ", ".join([quote_ident(name), *(str(a) for a in args)])
    return _alias(f"{fn}({inner})" + (f" {then}" if then else ""), alias)


def _alias(expr: str, alias: str | None) -> str:
    return f"{expr} AS {quote_ident(alias)}" if alias else expr


def time(every: str, offset: str | None = None) -> str:
    """A ``GROUP BY`` time bucket: ``time(1h)``, ``time($__interval)``, ``time(1d, 330m)``."""
    return f"time({every}" + (f", {offset})" if offset else ")")


def equal(tag: str, value: str) -> str:
    """A tag (or string field) equal to a value: ``"elder" = 'e1'`` (``$elder`` passes)."""
    return f"{quote_ident(tag)} = {quote_literal(value)}"


def not_equal(tag: str, value: str) -> str:
    """A tag (or string field) other than a value: ``"kind" != 'bed'``."""
    return f"{quote_ident(tag)} != {quote_literal(value)}"


def compare(name: str, op: str, value: str | float | bool) -> str:
    """A field compared to a number or boolean: ``"mag_std" >= 0.05``, ``"opened" = true``."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value  # already InfluxQL (as the server prints it back)
    else:
        text = repr(value)
    return f"{quote_ident(name)} {op} {text}"


def any_of(tag: str, values: Iterable[str]) -> str:
    """The tag equal to one of the values: ``("elder" = 'e1' OR "elder" = 'e2')``."""
    return "(" + " OR ".join(equal(tag, v) for v in values) + ")"


def matches(name: str, regex: str, *, negate: bool = False) -> str:
    """A tag or string field matching a regular expression: ``"state" =~ /^open$/``."""
    return f"{quote_ident(name)} {'!~' if negate else '=~'} /{regex}/"


def source(measurement: str, policy: str | None = None, database: str | None = None) -> str:
    """A measurement, qualified by its policy (and database) where given."""
    parts = [p for p in (database, policy) if p is not None]
    if database is not None and policy is None:
        parts.append("")  # db..measurement: the default policy
    return ".".join([*(quote_ident(p) if p else "" for p in parts), quote_ident(measurement)])


@dataclass(frozen=True, slots=True)
class Select:
    """One ``SELECT`` statement; each method returns a new one with a clause added."""

    columns: tuple[str, ...]
    source: str
    """A quoted, qualified measurement (:func:`source`) or ``(subquery)``."""
    conditions: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    fill_value: str | None = None
    into_target: str | None = None
    newest: bool = False
    limit_n: int | None = None

    def where(self, *conditions: str) -> Select:
        """Conditions joined by ``AND`` (already written by :func:`equal`, :func:`any_of`…)."""
        return replace(self, conditions=self.conditions + conditions)

    def equal(self, **tags: str) -> Select:
        """Each tag equal to its value (a literal, or a template variable like ``$site``)."""
        return self.where(*(equal(k, v) for k, v in tags.items()))

    def between(self, start_ms: int, end_ms: int) -> Select:
        """``time`` in ``[start_ms, end_ms)``."""
        return self.where(f"time >= {start_ms}ms", f"time < {end_ms}ms")

    def group_by(self, *terms: str) -> Select:
        """Group by time buckets (:func:`time`), tag names (quoted here) or ``*``."""
        quoted = tuple(t if t == "*" or t.startswith("time(") else quote_ident(t) for t in terms)
        return replace(self, groups=self.groups + quoted)

    def fill(self, value: str) -> Select:
        return replace(self, fill_value=value)

    def into(self, measurement: str, policy: str, database: str) -> Select:
        return replace(self, into_target=source(measurement, policy, database))

    def newest_first(self) -> Select:
        """``ORDER BY time DESC``."""
        return replace(self, newest=True)

    def limit(self, n: int) -> Select:
        """At most ``n`` rows (per series)."""
        return replace(self, limit_n=n)

    def __str__(self) -> str:
        text = f"SELECT {', '.join(self.columns)}"
        if self.into_target:
            text += f" INTO {self.into_target}"
        text += f" FROM {self.source}"
        if self.conditions:
            text += f" WHERE {' AND '.join(self.conditions)}"
        if self.groups:
            text += f" GROUP BY {', '.join(self.groups)}"
        if self.fill_value is not None:
            text += f" fill({self.fill_value})"
        if self.newest:
            text += " ORDER BY time DESC"
        if self.limit_n is not None:
            text += f" LIMIT {self.limit_n}"
        return text


def every_measurement(policy: str | None = None) -> str:
    """Every measurement (of a policy), as a source: ``"raw"./.*/``."""
    return (f"{quote_ident(policy)}." if policy else "") + "/.*/"


def show_series(policy: str | None = None, *conditions: str) -> str:
    """``SHOW SERIES`` of every measurement (of a policy), where the conditions hold.

    >>> print(show_series("raw", equal("elder", "e1")))
    SHOW SERIES FROM "raw"./.*/ WHERE "elder" = 'e1'
    """
    text = f"SHOW SERIES FROM {every_measurement(policy)}"
    return text + (f" WHERE {' AND '.join(conditions)}" if conditions else "")


def show_field_keys(measurement: str) -> str:
    """``SHOW FIELD KEYS`` of a measurement: each field's name and type."""
    return f"SHOW FIELD KEYS FROM {quote_ident(measurement)}"


def delete(measurement: str, *conditions: str) -> str:
    """``DELETE`` a measurement's points where the conditions hold (in every policy).

    >>> print(delete("dead_letter", equal("reason", "schema"), "time = 5"))
    DELETE FROM "dead_letter" WHERE "reason" = 'schema' AND time = 5
    """
    return f"DELETE FROM {quote_ident(measurement)} WHERE {' AND '.join(conditions)}"


def select(
    measurement: str | Select,
    *columns: str,
    policy: str | None = None,
    database: str | None = None,
) -> Select:
    """``SELECT columns FROM`` a measurement (of a policy), a subquery, or every measurement
    (:func:`every_measurement`, passed as ``Select(columns, source)``); ``*`` without columns.

    >>> print(select(select("bed", call("max", "hr", alias="hr")).group_by(time("1m")),
    ...              call("mean", "hr")))
    SELECT mean("hr") FROM (SELECT max("hr") AS "hr" FROM "bed" GROUP BY time(1m))
    """
    src = (
        f"({measurement})"
        if isinstance(measurement, Select)
        else source(measurement, policy, database)
    )
    return Select(columns or ("*",), src)


def show_tag_values(measurements: Iterable[str], key: str, *conditions: str) -> str:
    """``SHOW TAG VALUES`` of a tag over measurements, where the conditions hold.

    >>> print(show_tag_values(["bed"], "elder", equal("site", "$site")))
    SHOW TAG VALUES FROM "bed" WITH KEY = "elder" WHERE "site" = '$site'
    """
    text = (
        f"SHOW TAG VALUES FROM {', '.join(quote_ident(m) for m in measurements)} "
        f"WITH KEY = {quote_ident(key)}"
    )
    return text + (f" WHERE {' AND '.join(conditions)}" if conditions else "")


def rollup_select(
    rollup: Rollup,
    interval: str,
    *,
    database: str,
    utc_offset_h: float = 0.0,
    into: bool = True,
    start_ms: int | None = None,
    end_ms: int | None = None,
    elder: str | None = None,
) -> Select:
    """The rollup's ``SELECT … INTO`` history from ``raw`` (what its continuous query runs),
    or without ``into``: the same rows from the default policy, to fetch (and write
    elsewhere, or show).

    >>> from homecare.schema import ROLLUPS
    >>> print(rollup_select(ROLLUPS[-1], "1h", database="homecare"))
    SELECT count("seq") AS "opens" INTO "homecare"."history"."door_1h" FROM \
"homecare"."raw"."door" WHERE "opened" = true GROUP BY time(1h), "site", "elder", "role" fill(none)
    """
    size, _ = INTERVALS[interval]
    columns = [call(fn, src, alias=alias) for alias, fn, src in rollup.aggregates]
    if into:
        q = select(rollup.source.name, *columns, policy=RAW, database=database).into(
            rollup.target.at(interval), HISTORY, database
        )
    else:
        q = select(rollup.source.name, *columns)
    if rollup.where is not None:
        q = q.where(compare(*rollup.where))
    if elder is not None:
        q = q.equal(**{ELDER: elder})
    if start_ms is not None and end_ms is not None:
        q = q.between(start_ms, end_ms)
    shift = offset_s(size, utc_offset_h)
    bucket = time(interval, duration(shift) if shift else None)
    return q.group_by(bucket, *rollup.tags).fill("none")
