"""People by name on the boards: the registry's names over the pseudonymous ids.

Telemetry carries only ids (``e0001``, ``c-anna``); names live in the registry. A board
built for a deployment (``homecare dashboards build --registry``) shows a care monitor
"Margaret Smith" where the data says ``e0001``, without a name ever entering InfluxDB:

- a table column of ids (elder, who) gets a value mapping id → name;
- a legend or bar label made from a tag alias (``$tag_elder $tag_device``) is renamed
  by one ``renameByRegex`` per id (Grafana applies it to the series' display name);
- the elder drop-down becomes a custom variable of ``name : id`` pairs, so a monitor
  picks a name and the queries still get the id.

The committed boards are built without a registry and show ids. Links keep the raw id
(``${__value.raw}``) and say the displayed text (``${__value.text}``).

>>> by_elder = 'SELECT count("id") FROM "alert" GROUP BY "elder"'
>>> doc = {"templating": {"list": [{"name": "elder", "type": "query"}]}, "panels": [
...     {"type": "table", "targets": [{"query": by_elder}],
...      "fieldConfig": {"overrides": [
...         {"matcher": {"id": "byName", "options": "elder"}, "properties": []}]}},
...     {"type": "bargauge", "targets": [{"alias": "$tag_elder $tag_device"}]}]}
>>> named = with_names(doc, {"elder": {"e1": "Wang Fang"}})
>>> named["panels"][0]["fieldConfig"]["overrides"][-1]["properties"][0]["value"][0]["options"]
{'e1': {'text': 'Wang Fang', 'index': 0}}
>>> named["panels"][1]["transformations"]
[{'id': 'renameByRegex', 'options': {'regex': '/^e1(?= |$)/', 'renamePattern': 'Wang Fang'}}]
>>> named["templating"]["list"][0]["query"]
'Wang Fang : e1'
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from homecare.schema import ELDER

Names = Mapping[str, Mapping[str, str]]
"""Per column (a tag: ``elder``, ``who``), each id's name as a person should read it."""


def distinct(named: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """Each id's name, told apart where two share one: ``{id: (name, detail)}`` gives
    ``name`` alone when it is unique, else ``name (detail)``.

    >>> distinct({"e1": ("Wang Fang", "north"), "e2": ("Wang Fang", "east"),
    ...           "e3": ("Li Wei", "north")})
    {'e1': 'Wang Fang (north)', 'e2': 'Wang Fang (east)', 'e3': 'Li Wei'}
    """
    count: dict[str, int] = {}
    for name, _ in named.values():
        count[name] = count.get(name, 0) + 1
    return {key: name if count[name] == 1 else f"{name} ({detail})"
            for key, (name, detail) in named.items()}  # fmt: skip


def _panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its own


def _mapping(ids: Mapping[str, str]) -> dict[str, Any]:
    options = {key: {"text": name, "index": i} for i, (key, name) in enumerate(sorted(ids.items()))}
    return {"id": "mappings", "value": [{"type": "value", "options": options}]}


def _renames(column: str, ids: Mapping[str, str]) -> list[dict[str, Any]]:
    # The alias starts with the tag (``$tag_elder $tag_device``): rename the id where it
    # stands as a word at the start. ``$`` in a replacement is special to JavaScript.
    return [{"id": "renameByRegex",
             "options": {"regex": f"/^{key}(?= |$)/", "renamePattern": name.replace("$", "$$")}}
            for key, name in sorted(ids.items())]  # fmt: skip


def _named_column(panel: dict[str, Any], column: str) -> bool:
    """A column of the tag: a query groups by it, and the panel shows it by that name."""
    grouped = any(f'"{column}"' in str(t.get("query", "")).rpartition("GROUP BY")[2]
                  for t in panel.get("targets", []))  # fmt: skip
    overrides = panel.get("fieldConfig", {}).get("overrides", [])
    return grouped and any(o.get("matcher") == {"id": "byName", "options": column}
                           for o in overrides)  # fmt: skip


def _labelled_by(panel: dict[str, Any], column: str) -> bool:
    return any(str(t.get("alias", "")).startswith(f"$tag_{column}")
               for t in panel.get("targets", []))  # fmt: skip


def _escaped(name: str) -> str:
    return name.replace(",", "\\,")


def _elder_choice(variable: dict[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    """The elder drop-down as ``name : id`` pairs (a comma in a name escaped, as Grafana
    splits the list on commas)."""
    pairs = sorted(ids.items(), key=lambda item: (item[1], item[0]))
    options = [{"text": name, "value": key, "selected": i == 0}
               for i, (key, name) in enumerate(pairs)]  # fmt: skip
    return {
        "name": variable["name"],
        "label": variable.get("label", variable["name"]),
        "type": "custom",
        "query": ",".join(f"{_escaped(name)} : {key}" for key, name in pairs),
        "options": options,
        "current": {k: v for k, v in options[0].items() if k != "selected"} if options else {},
        "hide": variable.get("hide", 0),
        "multi": False,
        "includeAll": False,
    }


def with_names(doc: dict[str, Any], names: Names) -> dict[str, Any]:
    """A copy of a dashboard's JSON that shows each id of ``names`` by its name."""
    out = copy.deepcopy(doc)
    for column, ids in names.items():
        if not ids:
            continue
        for panel in _panels(out):
            if _named_column(panel, column):
                overrides = panel["fieldConfig"]["overrides"]
                overrides.append({"matcher": {"id": "byName", "options": column},
                                  "properties": [_mapping(ids)]})  # fmt: skip
            if _labelled_by(panel, column):
                panel["transformations"] = [*panel.get("transformations", []),
                                            *_renames(column, ids)]  # fmt: skip
    elders = names.get(ELDER)
    if elders:
        chosen = out.get("templating", {}).get("list", [])
        for i, variable in enumerate(chosen):
            if variable.get("name") == ELDER:
                chosen[i] = _elder_choice(variable, elders)
    return out
