"""The week's list, the visit policy, the register and its HTTP API (a real aiohttp server
on loopback, driven with httpx)."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest
from care_site import DAY, PASSWORDS, make_register, registry, serving

from care.policy import PolicyError, VisitPolicy, load_policy
from care.register import Register, RegisterError
from care.report import month_bounds, month_report, to_csv
from care.service import due_notices, send_notices, site_plan
from harness.standins import HttpStandIn, Reply
from homecare.i18n import translator
from homecare.settings import Settings


@pytest.fixture
def site(tmp_path, travel):
    reg = make_register(tmp_path / "care.db", time.time())
    yield reg, registry()
    reg.close()


def test_plan_ranks_overdue_first_then_signs_with_plain_reasons(site):
    reg, reg_file = site
    rows = site_plan(reg, reg_file, VisitPolicy(), "north", now=time.time())
    week = [r for r in rows if r.this_week]
    assert [r.elder for r in week] == ["anna", "ben"]  # Carl was called two days ago
    anna, ben = week
    assert anna.overdue_days == 10
    assert anna.reasons == ["visit overdue by 10 days (monthly; last 40 days ago)"]
    assert anna.contact == "visit"
    # about half as much, with the numbers
    assert re.fullmatch(r"walks (4[5-9]|5[0-5]) % less than in the four weeks before "
                        r"\(\d,\d{3} steps a day, was (3,9|4,0)\d\d\)", ben.reasons[0])  # fmt: skip
    assert ben.signs[0]["sign"] == "activity"
    assert ben.signs[0]["z"] > 4
    assert "call due (monthly; never yet)" in ben.reasons
    assert {r.elder for r in rows} == {"anna", "ben", "carl"}  # never another site's


def test_policy_file_is_validated(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("groups:\n  - {name: all, contact: visit, every_days: 7, colour: red}\n")
    with pytest.raises(PolicyError, match=r"groups\.0\.colour"):
        load_policy(path)
    path.write_text("groups:\n  - {name: all, contact: visit, every_days: 7}\n")
    assert load_policy(path).groups[0].every_days == 7


def test_register_refuses_bad_records_and_weak_passwords(site):
    reg, _ = site
    with pytest.raises(RegisterError, match="outcome"):
        reg.record(site="north", elder="anna", worker="maria", kind="visit", outcome="meh")
    with pytest.raises(RegisterError, match="future"):
        reg.record(site="north", elder="anna", worker="maria", kind="visit",
                   outcome="all_well", at=time.time() + DAY)  # fmt: skip
    with pytest.raises(RegisterError, match="10 characters"):
        reg.add_worker("x", "north", "short")
    row = reg._db.execute("SELECT password FROM workers WHERE name = 'maria'").fetchone()
    assert row[0].startswith("$argon2id$")
    assert PASSWORDS["maria"] not in row[0]


def test_register_survives_a_restart(tmp_path, site):
    reg, _ = site
    reg.record(site="north", elder="ben", worker="maria", kind="call", outcome="concern",
               notes="sounded tired", follow_up=True)  # fmt: skip
    again = Register(reg.path)
    try:
        [latest, *_] = again.history("north", "ben")
        assert (latest.notes, latest.follow_up) == ("sounded tired", True)
    finally:
        again.close()


def test_api_login_session_csrf_and_site_isolation(site):
    reg, reg_file = site
    with serving(reg, reg_file) as url, httpx.Client(base_url=url) as http:
        assert http.get("/api/plan").status_code == 401
        bad = http.post("/api/login", json={"name": "maria", "password": "wrong password"})
        assert bad.status_code == 401
        login = http.post("/api/login", json={"name": "maria", "password": PASSWORDS["maria"]})
        assert login.status_code == 200
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        csrf = login.json()["csrf"]
        plan = http.get("/api/plan").json()
        assert [r["elder"] for r in plan["rows"]] == ["anna", "ben"]
        visit = {"elder": "anna", "kind": "visit", "outcome": "all_well", "notes": "tea"}
        assert http.post("/api/visits", json=visit).status_code == 403  # no CSRF header
        forged = http.post("/api/visits", json=visit, headers={"X-CSRF-Token": "x" * 43})
        assert forged.status_code == 403
        done = http.post("/api/visits", json=visit, headers={"X-CSRF-Token": csrf})
        assert done.status_code == 201
        assert [r["elder"] for r in http.get("/api/plan").json()["rows"]] == ["ben"]  # Anna done
        history = http.get("/api/elders/anna/visits").json()["visits"]
        assert [v["notes"] for v in history][:1] == ["tea"]
        theirs = {**visit, "elder": "dora"}
        assert http.post("/api/visits", json=theirs, headers={"X-CSRF-Token": csrf}
                         ).status_code == 404  # fmt: skip
        assert http.get("/api/elders/dora/visits").status_code == 404
        odd = {**visit, "outcome": "meh"}
        assert http.post("/api/visits", json=odd, headers={"X-CSRF-Token": csrf}
                         ).status_code == 400  # fmt: skip
        # the page's form: a same-origin post must carry the session's token too
        form = {"elder": "ben", "kind": "call", "outcome": "all_well", "csrf": "guessed"}
        assert http.post("/visits", data=form).status_code == 403
        assert http.post("/visits", data={**form, "csrf": csrf}).status_code == 303
        elsewhere = {"Origin": "http://elsewhere.example"}
        assert http.post("/visits", data={**form, "csrf": csrf}, headers=elsewhere
                         ).status_code == 403  # fmt: skip
        rate = {g["group"]: g for g in http.get("/api/rate").json()["groups"]}
        assert (rate["alone_high_need"]["contacted"], rate["alone_high_need"]["elders"]) == (1, 1)
        assert rate["alone_high_need"]["rate_pct"] == 100.0
        assert http.get("/api/rate", params={"month": "2026-13"}).status_code == 400
    with serving(reg, reg_file) as url, httpx.Client(base_url=url) as http:
        http.post("/api/login", json={"name": "sam", "password": PASSWORDS["sam"]})
        rows = http.get("/api/plan", params={"all": "1"}).json()["rows"]
        assert [r["elder"] for r in rows] == ["dora"]
        assert http.get("/api/elders/anna/visits").status_code == 404


def test_sessions_expire_and_failed_logins_lock_the_name(site):
    reg, reg_file = site
    with serving(reg, reg_file, ttl_s=1.0) as url, httpx.Client(base_url=url) as http:
        http.post("/api/login", json={"name": "maria", "password": PASSWORDS["maria"]})
        assert http.get("/api/plan").status_code == 200
        time.sleep(1.2)
        assert http.get("/api/plan").status_code == 401
        for _ in range(5):
            http.post("/api/login", json={"name": "sam", "password": "not sam's password"})
        right = http.post("/api/login", json={"name": "sam", "password": PASSWORDS["sam"]})
        assert right.status_code == 401  # locked for a minute, even with the right password


def test_overdue_visits_and_open_follow_ups_reach_the_coordinator(tmp_path, site):
    reg, _ = site
    now = time.time()
    reg.record(site="north", elder="carl", worker="maria", kind="visit", outcome="concern",
               follow_up=True, at=now - 8 * DAY)  # fmt: skip
    with HttpStandIn(default=Reply(status=None), path="/hook") as coordinator:
        reg_file = registry(coordinator.url)
        settings = Settings(_env_file=None, state_dir=tmp_path,  # type: ignore[call-arg]
                            escalate={"webhook": {"attempts": 1, "timeout_s": 5.0}})  # fmt: skip
        due = {n.ref.rsplit("-", 1)[0] for n in due_notices(reg, reg_file, VisitPolicy(),
                                                            now=now)}  # fmt: skip
        assert due == {"care-overdue-north-anna", "care-overdue-north-ben",
                       "care-overdue-south-dora", "care-follow-up-north-carl"}  # fmt: skip
        sent = asyncio.run(send_notices(settings, reg, reg_file, VisitPolicy(), now=now))
        assert [d.status for d in sent] == ["ok"] * 4
        bodies = [r.body.decode() for r in coordinator.wait(4)]
        assert any("Anna Berg is overdue for a visit or call" in b for b in bodies)
        assert any("follow-up after a visit to Carl Dahl is still open" in b for b in bodies)
        again = asyncio.run(send_notices(settings, reg, reg_file, VisitPolicy(), now=now))
        assert again == []  # each told once


def test_monthly_report_and_csv(site):
    reg, reg_file = site
    now = time.time()
    start, _, month = month_bounds(None, now)
    report = month_report(reg, reg_file, VisitPolicy(), month=month, now=now)
    rates = {(r.site, r.group): r for r in report.rates}
    carl_called = start <= now - 2 * DAY
    assert rates["north", "everyone"].contacted == int(carl_called)
    assert rates["north", "everyone"].elders == 2
    assert rates["north", "alone_high_need"].contacted == 0
    assert rates["south", "alone_high_need"].elders == 1
    text = to_csv(report)
    assert text.splitlines()[0].startswith("month,site,group,elders,contacted,rate_pct")
    assert f"{month},north,alone_high_need,1,0,0.0,100.0,no" in text


def test_the_commands_plan_add_workers_and_export(tmp_path, monkeypatch, travel):
    import yaml
    from typer.testing import CliRunner

    from cli.main import app

    reg_path = tmp_path / "registry.yaml"
    reg_path.write_text(yaml.safe_dump(registry().model_dump(mode="json", exclude_defaults=True)))
    monkeypatch.chdir(tmp_path)  # no developer's .env
    monkeypatch.setenv("HOMECARE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HOMECARE_REGISTRY", str(reg_path))
    monkeypatch.delenv("HOMECARE_INFLUX__URL", raising=False)
    (tmp_path / "pw").write_text("a long enough passphrase\n")
    cli = CliRunner()
    added = cli.invoke(app, ["care", "worker", "add", "maria", "--site", "north",
                             "--password-file", str(tmp_path / "pw")])  # fmt: skip
    assert added.exit_code == 0, added.output
    weak = tmp_path / "weak"
    weak.write_text("short")
    refused = cli.invoke(app, ["care", "worker", "add", "x", "--site", "north",
                               "--password-file", str(weak)])  # fmt: skip
    assert refused.exit_code == 2
    assert "10 characters" in refused.output
    planned = cli.invoke(app, ["care", "plan", "--site", "north"])
    assert planned.exit_code == 0, planned.output
    assert "1. Anna Berg (anna): visit" in planned.output
    assert "call due (monthly; never yet)" in planned.output
    for lang, code in (("zh-CN", 0), ("xx-YY", 2)):
        worker = cli.invoke(app, ["care", "worker", "add", "li", "--site", "north", "--lang", lang,
                                  "--password-file", str(tmp_path / "pw")])  # fmt: skip
        assert worker.exit_code == code, worker.output
    chinese = cli.invoke(app, ["care", "plan", "--site", "north", "--lang", "zh-CN"])
    assert "1. Anna Berg (anna): 上门探访" in chinese.output, chinese.output
    assert "该电话问候了（每月一次；尚未联系过）" in chinese.output
    headed = cli.invoke(app, ["care", "report", "--lang", "zh-CN"])
    assert headed.output.startswith("月份,站点,分组"), headed.output
    out = tmp_path / "month.csv"
    done = cli.invoke(app, ["care", "report", "--csv", str(out)])
    assert done.exit_code == 0, done.output
    assert ",north,alone_high_need,1,0,0.0,100.0,no" in out.read_text()
    bad = cli.invoke(app, ["care", "report", "--month", "2026-13"])
    assert bad.exit_code == 2


HAN = re.compile(r"[\u4e00-\u9fff]")


def _chinese_site(reg_file):
    """The same registry with Chinese as the site's default language."""
    data = reg_file.model_dump(mode="json", exclude_defaults=True)
    data["provider"]["language"] = "zh-CN"
    return type(reg_file).model_validate(data)


def test_plan_reasons_and_the_csv_in_chinese(site):
    reg, reg_file = site
    zh = translator("zh-CN")
    rows = site_plan(reg, reg_file, VisitPolicy(), "north", now=time.time(), tr=zh)
    anna, ben = [r for r in rows if r.this_week]
    assert anna.reasons == ["上门探访已逾期10天（每月一次；上次在40天前）"]
    assert re.fullmatch(r"步行比前四周少(4[5-9]|5[0-5])%（每天\d,\d{3}步，之前(3,9|4,0)\d\d步）",
                        ben.reasons[0])  # fmt: skip
    assert "该电话问候了（每月一次；尚未联系过）" in ben.reasons
    report = month_report(reg, reg_file, VisitPolicy(), month=None, now=time.time())
    lines = to_csv(report, zh).splitlines()
    assert lines[0].startswith("月份,站点,分组,老人,已联系,联系率（%）")
    assert any(line.endswith(",否,,,,,") for line in lines)


def test_a_chinese_worker_reads_the_page_and_the_api_in_chinese(site):
    reg, reg_file = site
    reg.add_worker("li", "north", "li's long passphrase", language="zh_cn")
    with pytest.raises(RegisterError, match="no catalogue"):
        reg.add_worker("jo", "north", "jo's long passphrase", language="xx-YY")
    with serving(reg, reg_file) as url, httpx.Client(base_url=url) as http:
        login = http.get("/login", headers={"Accept-Language": "zh;q=0.9, en;q=0.8"})
        assert '<html lang="zh-CN">' in login.text
        assert "登录" in login.text
        assert "Log in" in http.get("/login").text  # no preference: the provider's (English)
        http.post("/api/login", json={"name": "li", "password": "li's long passphrase"})
        page = http.get("/")
        assert '<html lang="zh-CN">' in page.text
        for words in ("主动关怀", "本周需要探访或致电的老人", "上门探访已逾期10天",
                      "步行比前四周少", "记录探访或电话", "一切安好", "退出登录"):  # fmt: skip
            assert words in page.text, words
        assert "Proactive care" not in page.text
        year, month = month_bounds(None, time.time())[2].split("-")
        assert f"本月探访情况 ({year}年{int(month)}月)" in page.text
        plan = http.get("/api/plan").json()
        assert all(HAN.search(reason) for r in plan["rows"] for reason in r["reasons"])
        assert all(HAN.search(s["reason"]) for r in plan["rows"] for s in r["signs"])
        assert any(r["signs"] for r in plan["rows"])
        csrf = http.post("/api/login", json={"name": "li", "password": "li's long passphrase"}
                         ).json()["csrf"]  # fmt: skip
        odd = {"elder": "anna", "kind": "visit", "outcome": "meh"}
        refused = http.post("/api/visits", json=odd, headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 400
        assert refused.json()["error"].startswith("结果必须是")
    # a worker who named no language reads their site's
    with serving(reg, _chinese_site(reg_file)) as url, httpx.Client(base_url=url) as http:
        http.post("/api/login", json={"name": "maria", "password": PASSWORDS["maria"]})
        assert "本周需要探访或致电的老人" in http.get("/").text


def test_the_coordinator_is_told_in_the_sites_language(tmp_path, site):
    reg, _ = site
    reg.record(site="north", elder="carl", worker="maria", kind="visit", outcome="concern",
               follow_up=True, at=time.time() - 8 * DAY)  # fmt: skip
    with HttpStandIn(default=Reply(status=None), path="/hook") as coordinator:
        reg_file = _chinese_site(registry(coordinator.url))
        settings = Settings(_env_file=None, state_dir=tmp_path,  # type: ignore[call-arg]
                            escalate={"webhook": {"attempts": 1, "timeout_s": 5.0}})  # fmt: skip
        sent = asyncio.run(send_notices(settings, reg, reg_file, VisitPolicy(), now=time.time()))
        told = [json.loads(r.body) for r in coordinator.wait(len(sent))]
        assert any("Anna Berg的上门探访或电话问候已逾期" in t["subject"] for t in told)
        assert any("探访Carl Dahl后的跟进事项尚未完成" in t["body"] for t in told)
        for t in told:  # names aside, no English word reaches the coordinator
            words = t["subject"] + t["body"]
            for name in ("Anna Berg", "Ben Cole", "Dora Eng", "Carl Dahl", "Elm Row", "Oak Lane"):
                words = words.replace(name, "")
            assert not re.search(r"[A-Za-z]{3,}", words), t["body"]
