"""The generated dashboard JSON holds together: stable uids, the committed files equal a
fresh build, every datasource reference, template variable and link resolves."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from cli.main import app
from dashboards.boards import ALERTS_UID, CARE_UID, ELDER_UID, FLEET_UID, SITE_UID, uid_for
from dashboards.influxql import DATASOURCE_UID, DATASOURCE_VAR
from dashboards.publish import build, build_all
from homecare.i18n import available

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "deploy" / "grafana" / "dashboards"
BUILT = {uid: json.loads(text) for uid, text in build_all().items()}
"""Every board in every shipped language."""
BUILTINS = {"timeFilter", "__interval", "__interval_ms", "__from", "__to", "__value",
            "__url_time_range", "__field", "__series", "__data", "col"}  # fmt: skip
"""Grafana's own macros and data-link variables; ``$tag_<key>`` is an alias of a tag."""
VARIABLE = re.compile(r"\$\{(\w+)(?:[:.][^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a JSON document, with where it is."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, f"{path}[{i}]")


def nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from nodes(v)
    elif isinstance(node, list):
        for v in node:
            yield from nodes(v)


def variables(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return dash.get("templating", {}).get("list", [])


def test_uids_are_fixed_and_unique():
    boards = [ELDER_UID, SITE_UID, ALERTS_UID, FLEET_UID, CARE_UID]
    assert sorted(BUILT) == sorted(uid_for(uid, lang) for uid in boards for lang in available())
    assert all(dash["uid"] == uid for uid, dash in BUILT.items())
    titles = [dash["title"] for dash in BUILT.values()]
    assert len(set(titles)) == len(titles)
    assert build_all() == build_all()  # the same code gives the same bytes


def test_committed_json_is_a_fresh_build(tmp_path):
    result = CliRunner().invoke(app, ["dashboards", "build", str(tmp_path)])
    assert result.exit_code == 0, result.output
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text() for p in COMMITTED.glob("*.json")}
    assert sorted(fresh) == sorted(f"{uid}.json" for uid in BUILT)
    assert committed == fresh, "run `homecare dashboards build` and commit the result"


def test_panels_have_unique_ids_and_fit_the_grid():
    for uid, dash in BUILT.items():
        ids = [p["id"] for p in dash["panels"]]
        assert len(set(ids)) == len(ids), uid
        for panel in dash["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0, (uid, panel["title"])
            assert pos["x"] + pos["w"] <= 24, (uid, panel["title"])
            assert pos["h"] > 0, (uid, panel["title"])


def test_every_datasource_reference_resolves():
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/influxdb.yml").read_text()
    )
    [source] = provisioned["datasources"]
    assert (source["uid"], source["type"]) == (DATASOURCE_UID, "influxdb")
    for uid, dash in BUILT.items():
        [ds_var] = [v for v in variables(dash) if v["type"] == "datasource"]
        assert ds_var["name"] == DATASOURCE_VAR
        assert ds_var["query"] == source["type"]
        assert ds_var["current"]["value"] == source["uid"]
        refs = [n["datasource"] for n in nodes(dash) if isinstance(n.get("datasource"), dict)]
        assert refs, uid
        for ref in refs:
            assert ref in ({"type": "influxdb", "uid": f"${{{DATASOURCE_VAR}}}"},
                           {"type": "__expr__", "uid": "__expr__"}), (uid, ref)  # fmt: skip


def test_every_template_variable_resolves():
    for uid, dash in BUILT.items():
        defined: list[str] = []
        for var in variables(dash):  # a variable may use only those defined before it
            used = {a or b or c for a, b, c in VARIABLE.findall(json.dumps(var.get("query", "")))}
            assert used <= set(defined) | BUILTINS, (uid, var["name"], used)
            defined.append(var["name"])
        for panel in dash["panels"]:
            refs = {t["refId"] for t in panel.get("targets", [])}
            for path, text in strings(panel):
                for a, b, c in VARIABLE.findall(text):
                    name = a or b or c
                    if path.endswith(".expression"):  # math over the panel's own queries
                        assert name in refs, (uid, panel["title"], name)
                    elif not name.startswith("tag_"):
                        assert name in set(defined) | BUILTINS, (uid, panel["title"], name)
        for anno in dash.get("annotations", {}).get("list", []):
            for _, text in strings(anno):
                assert {a or b or c for a, b, c in VARIABLE.findall(text)} <= (
                    set(defined) | BUILTINS
                )


def test_links_between_dashboards_resolve():
    found = 0
    for uid, dash in BUILT.items():
        for _, text in strings(dash):
            for target, query in re.findall(r"/d/([\w-]+)/[\w-]*\??([^\s\"]*)", text):
                found += 1
                assert target in BUILT, (uid, target)
                names = {v["name"] for v in variables(BUILT[target])}
                for name in re.findall(r"var-(\w+)=", query):
                    assert name in names, (uid, target, name)
        for link in dash.get("links", []):
            if link["type"] == "dashboards":
                assert any(set(link["tags"]) <= set(d["tags"]) for d in BUILT.values())
            else:  # the same board in another language
                target = link["url"].removeprefix("/d/")
                assert target in BUILT, (uid, link)
                assert target != uid, (uid, link)
    assert found >= 2  # the site board's elder column and its open-alerts table


def test_provisioning_reads_the_built_folder():
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/homecare.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["services"]["grafana"]
                  ["volumes"] if v.startswith("./"))  # fmt: skip
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_transformations_name_fields_the_queries_return():
    """Grafana is not run here: at least every field a transformation names must be a
    column (alias, selected field or grouping tag) of the panel's queries, or made earlier."""
    checked = 0
    for uid, dash in BUILT.items():
        for panel in dash["panels"]:
            names: set[str] = set()
            for target in panel.get("targets", []):
                query = target.get("query", "")
                names |= set(re.findall(r'AS "([^"]+)"', query))
                if query.startswith('SELECT "'):  # plain fields, no function
                    names |= set(re.findall(r'"(\w+)"', query.split(" FROM ")[0]))
                grouping = query.rsplit("GROUP BY", 1)[-1] if "GROUP BY" in query else ""
                names |= set(re.findall(r'"(\w+)"', grouping))
            for step in panel.get("transformations", []):
                checked += 1
                options = step["options"]
                match step["id"]:
                    case "joinByField":
                        assert options["byField"] in names, (uid, panel["title"], options)
                    case "calculateField":
                        if options["mode"] == "binary":
                            sides = (options["binary"]["left"], options["binary"]["right"])
                            used = [v["matcher"]["options"] for v in sides if "matcher" in v]
                        else:
                            used = options["reduce"]["include"]
                        assert set(used) <= names | {"Time 1", "Time 2"}, (uid, used)
                        names.add(options["alias"])
                    case "groupBy":
                        assert set(options["fields"]) <= names, (uid, panel["title"])
                        names |= {f"{name} ({agg})" for name, how in options["fields"].items()
                                  for agg in how.get("aggregations", [])}  # fmt: skip
                    case "organize":
                        renamed = options.get("renameByName", {})
                        assert {k for k in renamed if not k.startswith("Time")} <= names
                        names |= set(renamed.values())
                        assert set(options.get("indexByName", {})) <= names, (uid, options)
    assert checked >= 10


def test_activity_heatmap_rows_are_the_sites_local_hours():
    """Local hour h starts h - offset hours after UTC midnight (here UTC+5:30)."""
    elder = json.loads(build(utc_offset_h=5.5)["homecare-elder"])
    [panel] = [p for p in elder["panels"] if p.get("type") == "heatmap"]
    windows = {
        re.search(r'AS "(\d\d)"', t["query"]).group(1):
        re.search(r"GROUP BY time\(1d, (\d+)m\)", t["query"]).group(1)
        for t in panel["targets"]
    }  # fmt: skip
    assert len(windows) == 24
    assert windows["00"] == str(round(18.5 * 60))  # local midnight is 18:30 UTC
    assert windows["06"] == "30"  # 06:00 local is 00:30 UTC
    assert "UTC+5.5" in panel["description"]


REGISTRY = """
provider: {call_centre: arc}
contacts:
  - {id: arc, name: Alarm centre, role: call_centre,
     channels: [{kind: call_centre, address: "https://arc.example.org/alarm"}]}
  - {id: c-li, name: 李明, role: family, channels: [{kind: email, address: li@example.org}]}
elders:
  - {id: e1, display_name: 王芳, site: north, address: 1 Elm Road}
  - {id: e2, display_name: 王芳, site: north, address: 9 Oak Road}
  - {id: e11, display_name: "Smith, Ann", site: north, address: 3 Ash Road}
"""


def grafana_custom_options(query: str) -> list[tuple[str, str]]:
    """How Grafana reads a custom variable: items split on unescaped commas, each
    ``text : value``."""
    items = [i.replace("\\,", ",") for i in re.findall(r"(?:\\,|[^,])+", query)]
    return [tuple(part.strip() for part in re.split(r"\s:\s", i, maxsplit=1)) for i in items]


def test_boards_built_with_the_registry_name_people_where_the_data_has_ids(tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY, encoding="utf-8")
    out = tmp_path / "boards"
    result = CliRunner().invoke(app, ["dashboards", "build", str(out), "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    boards = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(boards) == sorted(BUILT)
    elders = {"e1": "王芳 (1 Elm Road)", "e2": "王芳 (9 Oak Road)", "e11": "Smith, Ann"}
    contacts = {"arc": "Alarm centre", "c-li": "李明"}
    tables = renamed = 0
    for _uid, dash in boards.items():
        [choice] = [v for v in variables(dash) if v["name"] == "elder"] or [None]
        if choice is not None:  # the elder board: pick a name, the queries get the id
            assert choice["type"] == "custom"
            assert {v: t for t, v in grafana_custom_options(choice["query"])} == elders
        for panel in dash["panels"]:
            queries = " ".join(t.get("query", "") for t in panel.get("targets", []))
            mapped = {o["matcher"]["options"]: o["properties"][0]["value"][0]["options"]
                      for o in panel.get("fieldConfig", {}).get("overrides", [])
                      if o["properties"] and o["properties"][0]["id"] == "mappings"
                      and o["matcher"]["options"] in ("elder", "who")}  # fmt: skip
            if panel["type"] == "table" and 'GROUP BY "elder"' in queries:
                tables += 1
                assert {k: v["text"] for k, v in mapped["elder"].items()} == elders, panel["title"]
            if 'GROUP BY "elder", "kind", "who"' in queries:
                assert {k: v["text"] for k, v in mapped["who"].items()} == contacts
            steps = [s["options"] for s in panel.get("transformations", [])
                     if s["id"] == "renameByRegex"]  # fmt: skip
            if any(t.get("alias", "").startswith("$tag_elder") for t in panel.get("targets", [])):
                renamed += 1
                shown = {}
                for series in ("e1 w7", "e11 w8", "e2 w9"):  # as Grafana applies each in turn
                    for step in steps:
                        pattern = re.fullmatch(r"/(.*)/", step["regex"]).group(1)
                        series = re.sub(pattern, step["renamePattern"], series)
                    shown[series.rsplit(" ", 1)[1]] = series
                assert shown == {"w7": "王芳 (1 Elm Road) w7", "w8": "Smith, Ann w8",
                                 "w9": "王芳 (9 Oak Road) w9"}  # fmt: skip
    assert tables >= 2 * 4
    assert renamed == 2
    # links open the elder's board by id and say the name shown
    site = boards["homecare-site"]
    links = [link for node in nodes(site) if node.get("id") == "links"
             for link in node["value"] if "var-elder" in link["url"]]  # fmt: skip
    assert links
    assert all("${__value.raw}" in x["url"] and "${__value.text}" in x["title"] for x in links)


def test_a_registry_that_cannot_be_read_stops_the_build_with_its_reason(tmp_path):
    bad = tmp_path / "registry.yaml"
    bad.write_text("elders: [{id: e1}]\n")
    result = CliRunner().invoke(app, ["dashboards", "build", str(tmp_path / "b"),
                                      "--registry", str(bad)])  # fmt: skip
    assert result.exit_code == 2
    assert "registry" in result.output
    assert not (tmp_path / "b").exists()
