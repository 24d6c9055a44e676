"""Every text a person reads, in each shipped language: the catalogues are complete, and
each family message, email, SMS and acknowledgement page follows the reader's language."""

from __future__ import annotations

import importlib
import re
import shutil
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from escalation.api import AckServer
from escalation.channels.email import email_message
from escalation.channels.webhook import webhook_message
from escalation.engine import Escalation, ManualClock
from escalation.ladder import AckResult, EscalationPolicy
from escalation.messages import _WHAT, family_message, sms_segments, what_happened
from escalation.notification import (
    ChannelKind,
    ElderCard,
    MessageType,
    Notification,
    Recipient,
)
from escalation.registry import Registry, RegistryError, ack_token, load_registry
from escalation.store import Store, store_path
from homecare import i18n
from homecare.catalogues import add_language, problems, template
from homecare.contract import Alert, AlertState, Severity
from homecare.i18n import translator

T0 = 1_700_000_000.0  # Tuesday 14 November 2023 22:13 UTC; Wednesday 06:13 in Shanghai
HAN = re.compile(r"[\u4e00-\u9fff]")
WANG = ElderCard(id="e1", site="east", display_name="王秀英", address="朝阳区幸福里3号楼2单元501",
                 timezone="Asia/Shanghai", language="zh-CN", hotline="12349")  # fmt: skip
INTERNAL = re.compile(r"\b(fall|sos|not_up|bed_exit|low_spo2|mqtt|http|call_centre|"
                      r"acknowledged|notified|resolved|cancelled|e1|a-\w+)\b")  # fmt: skip
"""Words of the code (kinds, states, protocols, ids) that a family must never read."""


def alert(kind: str = "fall", severity: Severity = Severity.CRITICAL, **kw: Any) -> Alert:
    fields: dict[str, Any] = {"id": f"a-{kind}", "site": "east", "elder": "e1", "device": "w1",
                              "kind": kind, "severity": severity, "ts": T0,
                              "updated": T0}  # fmt: skip
    return Alert(**{**fields, **kw})


def note(lang: str | None = "zh-CN", **kw: Any) -> Notification:
    fields: dict[str, Any] = {
        "ref": "r1", "type": MessageType.ALARM, "elder": WANG, "alert": alert(), "created": T0,
        "ack_url": "https://care.example.cn/alerts/a-fall/ack?contact=li&token=" + "0" * 32,
        "recipient": Recipient(id="li", name="李明", role="family", channel=ChannelKind.EMAIL,
                               address="liming@example.cn", language=lang),
    }  # fmt: skip
    return Notification(**{**fields, **kw})


# -- the catalogues ----------------------------------------------------------------------


def test_every_word_the_code_says_is_translated_in_every_shipped_language():
    assert {"en", "zh-CN"} <= set(i18n.available())
    assert problems() == []


@pytest.fixture
def locales(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped catalogues the test may spoil, in place of the real ones."""
    folder = tmp_path / "locales"
    shutil.copytree(i18n.LOCALES_DIR, folder)
    monkeypatch.setattr(i18n, "LOCALES_DIR", folder)
    i18n._translator.cache_clear()
    yield folder
    i18n._translator.cache_clear()


def test_an_untranslated_or_missing_entry_is_found(locales):
    pot = template()
    po = locales / "zh_CN" / "LC_MESSAGES" / "homecare.po"
    text = po.read_text()
    spoiled = text.replace('msgstr "{name}可能摔倒了"', 'msgstr ""')
    spoiled = spoiled.replace('msgid "{name} pressed the help button"\nmsgstr "{name}按了求助按钮"',
                              "")  # fmt: skip
    spoiled = spoiled.replace('msgstr "地点：{address}"', 'msgstr "地点：{where}"')
    assert spoiled != text
    po.write_text(spoiled)
    found = problems(pot)
    assert "zh-CN: untranslated '{name} may have fallen'" in found
    assert any(line.startswith("zh-CN: missing '{name} pressed the help button'") for line in found)
    assert any("placeholders differ in 'Where: {address}'" in line for line in found)
    # an untranslated word falls back to English rather than failing a message
    assert i18n.translator("zh-CN").gettext("{name} may have fallen") == "{name} may have fallen"


def test_a_third_language_is_a_dropped_in_catalogue(locales):
    with pytest.raises(i18n.LanguageError, match="shipped: en, zh-CN"):
        i18n.translator("fr")
    path = add_language("fr")
    assert path == locales / "fr" / "LC_MESSAGES" / "homecare.po"
    assert "fr" in i18n.available()
    assert any(line.startswith("fr: untranslated") for line in problems())
    po = path.read_text().replace('msgid "Urgent"\nmsgstr ""', 'msgid "Urgent"\nmsgstr "Urgent !"')
    path.write_text(po)
    fr = i18n.translator("fr")
    assert fr.gettext("Urgent") == "Urgent !"
    assert fr.date(T0, "Europe/Paris", "full") == "mardi 14 novembre 2023"


def test_dates_and_numbers_follow_the_locale_and_the_site_time_zone():
    zh, en = i18n.translator("zh-CN"), i18n.translator("en")
    assert zh.date(T0, "Asia/Shanghai", "full") == "2023年11月15日星期三"
    assert en.date(T0, "Europe/London", "full") == "Tuesday, 14 November 2023"
    assert zh.time(T0, "Asia/Shanghai") == "06:13"
    assert zh.join(["周一", "周三", "周五"]) == "周一、周三和周五"
    assert en.number(12345.6, "#,##0.#") == "12,345.6"


# -- family messages ---------------------------------------------------------------------

SEVERITY = {"fall": Severity.CRITICAL, "sos": Severity.CRITICAL, "inactivity": Severity.CRITICAL,
            "battery_low": Severity.INFO, "offline": Severity.INFO,
            "not_worn": Severity.INFO}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(_WHAT))
def test_every_chinese_alarm_is_chinese_and_one_sms(kind):
    severity = SEVERITY.get(kind, Severity.WARNING)
    for sev in {severity, Severity.CRITICAL}:
        raised = alert(kind, sev, evidence={"gap_s": 9000.0, "out_s": 2400.0})
        for type_, state in [(MessageType.ALARM, AlertState.OPEN),
                             (MessageType.UPDATE, AlertState.NOTIFIED),
                             (MessageType.UPDATE, AlertState.ACKNOWLEDGED),
                             (MessageType.RESET, AlertState.RESOLVED)]:  # fmt: skip
            now = raised.model_copy(update={"state": state})
            words = family_message(note(type=type_, alert=now, outcomes={raised.id: "visit"}))
            assert sms_segments(words.short) == 1, (len(words.short), words.short)
            for text in (words.subject, words.body, words.short):
                assert HAN.search(text), text
                assert not INTERNAL.search(text.replace(note().ack_url or "", "")), text
                assert not re.search(r"\b(the|is|has|Please|Urgent|alert)\b", text), text


def test_a_chinese_family_alarm_says_what_when_where_and_whom_to_call():
    words = family_message(note())
    assert words.subject == "紧急：王秀英可能摔倒了"
    assert (
        words.short == "紧急：王秀英可能摔倒了（06:13）。请马上给王秀英打电话。联系不上请拨12349。"
    )
    assert "时间：11月15日星期三 06:13" in words.body
    assert "地点：朝阳区幸福里3号楼2单元501" in words.body
    assert "请拨打养老服务热线12349" in words.body
    assert words.ack == "我来处理：" + note().ack_url
    english = family_message(note(lang="en"))
    assert english.subject == "Urgent: 王秀英 may have fallen"
    assert "elders' services line on 12349" in english.body
    site_default = family_message(note(lang=None))
    assert site_default.subject == words.subject, "no language of their own: the site's"


def test_a_language_whose_catalogue_is_gone_still_gets_its_message(caplog):
    words = family_message(note(lang="xx-YY"))
    assert words.subject == "Urgent: 王秀英 may have fallen"
    assert "no catalogue for language 'xx-YY'" in caplog.text


def test_a_chinese_daily_digest_lists_each_alert_with_its_outcome():
    night = alert("wandering", Severity.WARNING, evidence={"out_s": 1500.0}, ts=T0 - 3600,
                  id="a-night", state=AlertState.RESOLVED)  # fmt: skip
    words = family_message(note(type=MessageType.DIGEST, alert=None, created=T0 + 3 * 3600,
                                batch=(night,), outcomes={"a-night": "visit"}))  # fmt: skip
    assert words.subject == "王秀英的每日小结：1条报警"
    assert (
        "- 11月15日星期三 05:13：王秀英夜里出了门，已经约25分钟没有回家——已有人上门查看。"
        in words.body
    )
    calm = family_message(note(type=MessageType.DIGEST, alert=None, created=T0))
    assert calm.subject == "王秀英的每日小结：没有报警"


def test_a_chinese_email_has_encoded_headers_and_a_utf8_body():
    raw = email_message(note(), "报警服务 <alarm@example.cn>").as_bytes()
    assert raw.isascii(), "headers as RFC 2047 encoded words, the body as base64"
    assert b"Subject: =?utf-8?" in raw
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "紧急：王秀英可能摔倒了"
    assert parsed["To"].addresses[0].display_name == "李明"
    assert parsed["Content-Language"] == "zh-CN"
    assert "王秀英可能摔倒了。" in parsed.get_content()
    with pytest.raises(ValueError, match="no valid To header"):
        email_message(note(recipient=note().recipient.model_copy(update={"name": "李\r\nBcc: x"})),
                      "a@b.c")  # fmt: skip


def test_the_call_centre_operator_reads_what_happened_in_their_language():
    from escalation.channels.callcentre import scaip_message

    centre = note().recipient.model_copy(update={"role": "call_centre", "language": None,
                                                 "channel": ChannelKind.CALL_CENTRE})  # fmt: skip
    body = scaip_message(note(recipient=centre), "homecare", now=T0)
    assert body["words"] == {"language": "zh-CN", "text": "王秀英可能摔倒了"}
    assert body["status"]["text"] == "fall detected", "the protocol's text stays"


def test_the_sms_gateway_gets_one_segment_then_the_link():
    body = webhook_message(note(recipient=note().recipient.model_copy(
        update={"channel": ChannelKind.WEBHOOK, "address": "https://sms.example.cn/send"}
    )))  # fmt: skip
    assert body["language"] == "zh-CN"
    alarm, link = body["sms"]
    assert sms_segments(alarm) == 1
    assert link.endswith("token=" + "0" * 32)
    assert body["text"] == f"{alarm} {link}"


# -- registry and acknowledgement pages --------------------------------------------------

REGISTRY: dict[str, Any] = {
    "provider": {"call_centre": "arc", "language": "en"},
    "sites": {"east": {"language": "zh-CN", "timezone": "Asia/Shanghai", "hotline": "12349"}},
    "contacts": [
        {"id": "arc", "name": "ARC", "role": "call_centre",
         "channels": [{"kind": "call_centre", "address": "http://127.0.0.1:9/alarm"}]},
        {"id": "li", "name": "李明", "role": "family",
         "channels": [{"kind": "email", "address": "li@example.cn"}]},
        {"id": "jo", "name": "Jo", "role": "family", "language": "en",
         "channels": [{"kind": "webhook", "address": "http://127.0.0.1:9/sms"}]},
    ],
    "elders": [{"id": "e1", "display_name": "王秀英", "site": "east", "address": "幸福里3号",
                "contacts": ["li", "jo"]}],
}  # fmt: skip


def test_the_registry_holds_a_language_per_contact_and_a_default_per_site():
    reg = Registry.model_validate(REGISTRY)
    card = reg.card(reg.elders[0])
    assert (card.language, card.timezone, card.hotline) == ("zh-CN", "Asia/Shanghai", "12349")
    assert reg.provider_for("east").call_centre == "arc", "what a site leaves out is the provider's"
    assert reg.contact("jo").recipients()[0].language == "en"  # type: ignore[union-attr]
    assert reg.contact("li").recipients()[0].language is None  # type: ignore[union-attr]
    assert not reg.may_acknowledge("12349", "e1", "east"), "a hotline is not a contact"


def test_the_weekly_picture_is_for_a_contact_in_their_language_or_the_sites():
    reg = Registry.model_validate(REGISTRY)
    assert reg.reader("e1", "jo") == ("王秀英", "en")
    assert reg.reader("e1", "li") == ("王秀英", "zh-CN"), "li named none: the site's"
    assert reg.reader("e1") == ("王秀英", "zh-CN")
    with pytest.raises(KeyError):
        reg.reader("e1", "nobody")


def test_the_report_command_takes_name_and_language_from_the_registry(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    import dashboards.report
    from cli.main import app

    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    asked: dict[str, Any] = {}
    # the registry part only: gathering the week needs InfluxDB (tests/test_report.py)
    monkeypatch.setattr(dashboards.report, "write_report", lambda **kw: asked.update(kw))
    env = {"HOMECARE_REGISTRY": str(path)}
    runner = CliRunner()
    assert runner.invoke(app, ["report", "e1", "--for", "jo"], env=env).exit_code == 0
    assert (asked["name"], asked["lang"]) == ("王秀英", "en")
    assert runner.invoke(app, ["report", "e1"], env=env).exit_code == 0
    assert (asked["name"], asked["lang"]) == ("王秀英", "zh-CN")
    unknown = runner.invoke(app, ["report", "e9"], env=env)
    assert unknown.exit_code == 2
    assert "'e9' is not in the registry" in unknown.output
    alone = runner.invoke(app, ["report", "e1", "--for", "jo"], env={"HOMECARE_REGISTRY": None})
    assert "--for needs the registry" in alone.output


def test_a_language_without_a_catalogue_is_refused_naming_the_field(tmp_path):
    bad = {**REGISTRY, "sites": {"east": {"language": "xx-YY"}}}
    path = tmp_path / "registry.yaml"
    import yaml

    path.write_text(yaml.safe_dump(bad, allow_unicode=True))
    shipped = r"no catalogue for language 'xx-YY' \(shipped: en, zh-CN\)"
    with pytest.raises(RegistryError, match=r"sites\.east\.language: .*" + shipped):
        load_registry(path)


def test_the_ladder_tells_each_contact_in_their_language_and_the_page_follows(tmp_path):
    reg = Registry.model_validate(REGISTRY)
    policy = EscalationPolicy(secret=b"s", ack_base="http://127.0.0.1:8480")
    clock = ManualClock(T0 + 1)
    esc = Escalation(Store(store_path(tmp_path)), lambda: reg, policy, clock=clock)
    esc.receive(alert("sos"))
    words = {}
    for _ in range(2):  # the first contact at once, the next a minute later
        esc.advance()
        words |= {n.recipient.id: family_message(n) for n in esc.due()
                  if n.recipient.role == "family"}  # fmt: skip
        clock.advance(61)
    assert words["li"].subject == "紧急：王秀英按了求助按钮"
    assert words["jo"].subject == "Urgent: 王秀英 pressed the help button"
    said = esc.describe("a-sos", "li", ack_token(b"s", "li"))
    assert (said.message, said.language) == ("王秀英按了求助按钮", "zh-CN")

    def acknowledge(alert_id: str, fields: dict[str, str], channel: str) -> AckResult:
        return esc.acknowledge(alert_id, fields["contact"], fields["token"], channel=channel,
                               outcome=fields.get("outcome"))  # fmt: skip

    server = AckServer(acknowledge, esc.describe, dict)
    link = f"/alerts/a-sos/ack?contact=li&token={ack_token(b's', 'li')}"
    status, page = server.route("GET", link, b"")
    assert status == 200
    assert isinstance(page, str)
    assert '<html lang="zh-CN">' in page
    assert "<h1>王秀英按了求助按钮</h1>" in page
    assert "目前状态：还没有人回应。" in page
    assert ">我来处理</button>" in page
    assert not INTERNAL.search(re.sub(r'action="[^"]*"', "", page)), page
    status, done = server.route("POST", link, b"", browser=True)
    assert status == 200
    assert "谢谢，其他联系人已经知道由您来处理。" in str(done)
    status, answer = server.route("POST", link, b"")
    assert (status, answer) == (200, {"result": "acknowledged", "state": "acknowledged"})
    forged = "/alerts/a-sos/ack?contact=li&token=" + "f" * 32
    status, refused = server.route("GET", forged, b"", browser=True)
    assert status == 403
    assert "这个链接不是发给您的" in str(refused)
    assert server.route("GET", forged, b"")[1] == {
        "result": "invalid token for this contact and alert"
    }, "a program gets JSON"
    resolve = f"/alerts/a-sos/resolve?contact=jo&token={ack_token(b's', 'jo')}"
    status, page = server.route("GET", resolve, b"")
    assert "How did it end?" in str(page)
    assert "someone went round" in str(page)


# -- the weekly picture ------------------------------------------------------------------

MONDAY = 1_700_438_400.0  # Monday 20 November 2023, 00:00 UTC


def _week(language: str, name: str = "王秀英") -> Any:
    from dashboards import report

    days = [
        report.Day(
            MONDAY + i * 86400,
            steps=3000 + 400 * i,
            active_min=90.0,
            hr=(72.0, 58.0, 96.0),
            door_opens={"front": 3},
            bed_readings=500,
            in_bed_h=8.5,
            exits=i % 2,
            bedtime_h=22.5,
            rise_h=31.0,
        )
        for i in range(6)
    ] + [report.Day(MONDAY + 6 * 86400)]  # a Sunday without readings
    alerts = [
        report.AlertLine(MONDAY + 86400 + 3600 * 9, "fall", "critical", "resolved",
                         outcome="handled_at_home", ack_s=42.0, channel="mqtt"),
        report.AlertLine(MONDAY + 2 * 86400, "sos", "critical", "cancelled"),
        report.AlertLine(MONDAY + 3 * 86400, "smoke_x", "warning", "acknowledged",
                         ack_s=300.0, channel="http"),
        report.AlertLine(MONDAY + 4 * 86400, "bed_exit", "warning", "notified"),
    ]  # fmt: skip
    usual = {"steps": 4000.0, "hr": 70.0, "in_bed_h": 8.0, "front": 3.0}
    return report.Picture("e1", name, 8.0, days, usual, True, alerts, language)


def _uncovered(fig: Any) -> list[str]:
    """Every character of the figure's texts that no font of its family chain has."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font
    from matplotlib.text import Text

    charmaps: dict[str, set[int]] = {}
    missing = []
    for text in fig.findobj(Text):
        chain = []
        for family in text.get_fontfamily():
            prop = text.get_fontproperties().copy()
            prop.set_family(family)
            path = font_manager.findfont(prop, fallback_to_default=False)
            if path not in charmaps:
                charmaps[path] = set(FT2Font(path).get_charmap())
            chain.append(charmaps[path])
        for char in text.get_text():
            if not char.isspace() and not any(ord(char) in cmap for cmap in chain):
                missing.append(f"{char!r} in {text.get_text()!r}")
    return missing


@pytest.mark.slow  # matplotlib or eight dashboards: seconds of CPU
@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_the_weekly_picture_draws_every_glyph_in_a_real_font(language, recwarn):
    from dashboards import report

    picture = _week(language)
    with report._in_font(picture.tr):
        fig = report.render_page(picture)
        png = report._png(fig)  # drawing makes the tick labels too
    assert png.startswith(b"\x89PNG")
    glyphs = [w for w in recwarn.list if "missing from font" in str(w.message)]
    assert glyphs == [], "matplotlib drew an empty box"
    assert _uncovered(fig) == []
    texts = " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
    assert not re.search(r"\b(mqtt|http|smoke_x|bed_exit|e1|notified)\b", texts), texts
    if language == "zh-CN":
        assert report.families(picture.tr)[0] == "Noto Sans CJK SC"
        for said in ("王秀英的一周", "每天步数", "心率（次/分钟）", "通过手机应用在42秒内回应",
                     "11月20日星期一至2023年11月26日星期日", "周日\n26日"):  # fmt: skip
            assert said in texts, said


def test_an_empty_box_is_caught(recwarn):
    """The check above can fail: Chinese drawn in a font without it warns."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        fig = Figure()
        fig.text(0.1, 0.5, "王秀英")
        from dashboards.report import _png

        _png(fig)
    assert any("missing from font" in str(w.message) for w in recwarn.list)
    assert _uncovered(fig) == ["'王' in '王秀英'", "'秀' in '王秀英'", "'英' in '王秀英'"]


@pytest.mark.slow  # matplotlib or eight dashboards: seconds of CPU
@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_the_weekly_html_is_in_the_readers_language(language):
    from dashboards import report

    page = report.render_html(_week(language))
    assert f'<html lang="{language}">' in page
    words = re.sub(r'src="data:[^"]*"', "", page)
    assert not re.search(r"\b(mqtt|http|smoke_x|bed_exit|notified)\b", words)
    if language == "zh-CN":
        assert "<title>王秀英的一周</title>" in page
        assert "活动：一般每天约4,000步，和平时差不多。" in page
        assert "睡眠：每晚在床上约8小时30分，通常从22:30到07:00；每晚起床0.5次。" in page
        assert "26日（周日）没有数据" in page
        assert "已取消：老人按了“我没事”。" in page
    else:
        assert "Answered in 42 seconds in the app; handled at home." in page
        assert "No readings on Sun 26: the sensors" in page
        assert "Another alert" in page


# -- the certification report ------------------------------------------------------------


def test_the_certificate_is_in_the_readers_language_and_the_json_stays_english(tmp_path):
    import json

    from certify.checks import CHECKS, CheckResult
    from certify.report import Report, write_report

    checks = [
        CheckResult(id=c.id, title=c.title, status="pass", summary="ok") for c in CHECKS[:3]
    ] + [CheckResult(id="qos", title="Everything at QoS 1", status="fail",
                     summary="2 events at QoS 0", fix="publish events at QoS 1")]  # fmt: skip
    report = Report(device="w1", kind="wearable", site="east", elder="e1", model="W-2",
                    vendor="Acme", firmware="1.4", contract_version="1", date="2026-12-07",
                    broker="mqtt://127.0.0.1:1883", mode="local", settings={"duration_s": 60},
                    result="fail", notes=[], checks=checks)  # fmt: skip
    json_path, html_path = write_report(report, tmp_path, "zh-CN")
    page = html_path.read_text()
    assert '<html lang="zh-CN">' in page
    for said in ("认证未通过", "主题格式", "所有消息均为QoS 1", "修改建议：", "接口规范版本",
                 "未通过"):  # fmt: skip
        assert said in page, said
    assert "NOT CERTIFIED" not in page
    assert json.loads(json_path.read_text())["checks"][3]["title"] == "Everything at QoS 1"
    assert "NOT CERTIFIED" in write_report(report, tmp_path / "en")[1].read_text()


def _quoted(text: Any) -> list[str]:
    """What a check quotes as the device sent it (or ids): the ``str`` values, nested."""
    out: list[str] = []
    for value in text.values.values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out += [q for t in value for q in _quoted(t)]
        elif hasattr(value, "msgid"):
            out += _quoted(value)
    return out


_ENGLISH = re.compile(r"[A-Za-z]{2,}(?:[ ,;:]+[A-Za-z]{2,})+")
"""Two English words in a row: a sentence left untranslated (units and ids stand alone)."""
_TERMS = ("UTC Unix", "JSON Schema", "homecare contract export DIR")
"""Technical names a Chinese sentence keeps as they are."""


def test_a_chinese_certificate_says_every_check_in_chinese(tmp_path):
    import html
    import json

    from support import frame, topic

    from certify.kit import CertifyOptions, Evidence
    from certify.observer import Observed
    from certify.report import build_report, write_report
    from homecare.contract import DeviceKind

    t0 = 1_800_000_000.0
    messages = []
    for k in range(8):  # in m/s², stamped 10 s behind, ts 3 and 4 swapped: failures with evidence
        data = json.loads(frame("e1", "w1", t0 + (7 - k if k in (3, 4) else k)))
        data["accel"] = [[x * 9.80665 for x in row] for row in data["accel"]]
        messages.append(Observed(topic("e1", "wearable", "w1", "frame"), json.dumps(data).encode(),
                                 0, False, t0 + k + 11))  # fmt: skip
    options = CertifyOptions(device="w1", kind=DeviceKind.WEARABLE, duration_s=0)
    ev = Evidence(options, "mqtt://test", "non-interactive", t0, t0 + 30, messages)
    ev.skipped["availability"] = "skipped by the operator"  # the kit's own words
    report = build_report(ev)
    assert report.checks[-5].summary == "skipped by the operator"
    assert {c.status for c in report.checks} >= {"fail", "skipped"}
    json_path, html_path = write_report(report, tmp_path, "zh-CN")
    page = html.unescape(html_path.read_text())
    zh = i18n.translator("zh-CN")
    said = 0
    for check in report.checks:
        assert check.wording is not None
        summary, evidence, fix = check.words(zh)
        assert summary in page
        assert fix in page
        texts = [(check.wording.summary, summary),
                 *zip(check.wording.evidence, evidence, strict=True)]  # fmt: skip
        if check.wording.fix is not None:
            texts.append((check.wording.fix, fix))
        for text, shown in texts:
            if text.msgid == "{quote}":  # the device's own words
                assert shown == text.values["quote"]
                continue
            left = shown
            for quote in sorted([*_quoted(text), *_TERMS], key=len, reverse=True):
                left = left.replace(quote, "")
            assert re.search(r"[\u4e00-\u9fff]", left), (check.id, shown)
            assert not _ENGLISH.search(left), (check.id, shown)
            said += 1
    assert said > len(report.checks) + sum(1 for c in report.checks if c.fix)
    on_file = json.loads(json_path.read_text())["checks"]
    assert [c["summary"] for c in on_file] == [c.summary for c in report.checks]
    assert all(not re.search(r"[\u4e00-\u9fff]", c["summary"] + c["fix"]) for c in on_file)


# -- Grafana dashboards ------------------------------------------------------------------


def _shown_texts(node: Any, key: str = "") -> list[tuple[str, str]]:
    """Every text Grafana shows: titles, descriptions, display names, mapped values."""
    if isinstance(node, str):
        return [(key, node)] if key in {"title", "description", "displayName", "text"} else []
    if isinstance(node, dict):
        if node.get("id") == "displayName":  # an override's property
            return [("displayName", node["value"])]
        return [t for k, v in node.items() for t in _shown_texts(v, k)]
    if isinstance(node, list):
        return [t for v in node for t in _shown_texts(v, key)]
    return []


@pytest.mark.slow  # matplotlib or eight dashboards: seconds of CPU
def test_a_care_monitor_can_switch_the_dashboards_to_chinese(tmp_path):
    import json

    from typer.testing import CliRunner

    from cli.main import app
    from dashboards.publish import build

    result = CliRunner().invoke(app, ["dashboards", "build", str(tmp_path), "--lang", "zh-CN"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "homecare-alerts-zh-cn.json", "homecare-care-zh-cn.json", "homecare-elder-zh-cn.json",
        "homecare-fleet-zh-cn.json", "homecare-site-zh-cn.json",
    ]  # fmt: skip
    for path in tmp_path.iterdir():
        board = json.loads(path.read_text())
        shown = _shown_texts({k: v for k, v in board.items() if k != "templating"})
        shown += [("label", v["label"]) for v in board["templating"]["list"] if v.get("label")]
        assert len(shown) > 20
        names = ("English", "InfluxDB")  # a language's own name, a product's
        english = [(k, t) for k, t in shown if not HAN.search(t) and t not in names]
        assert english == [], path.name
        [switch] = [link for link in board["links"] if link["type"] == "link"]
        assert switch["title"] == "English"
        assert switch["url"] == f"/d/{board['uid'].removesuffix('-zh-cn')}"
    elder = json.loads((tmp_path / "homecare-elder-zh-cn.json").read_text())
    assert elder["title"] == "居家养老：老人"
    assert ("displayName", "平时下限") in _shown_texts(elder)
    site = json.loads((tmp_path / "homecare-site-zh-cn.json").read_text())
    assert "/d/homecare-elder-zh-cn/" in json.dumps(site), "the site board opens Chinese boards"
    english_elder = json.loads(build()["homecare-elder"])
    assert any(link["title"] == "中文" for link in english_elder["links"])
    bad = CliRunner().invoke(app, ["dashboards", "build", str(tmp_path), "--lang", "xx"])
    assert bad.exit_code != 0
    assert "no catalogue for language 'xx'" in bad.output


def _raised_kinds() -> set[str]:
    """Every alert kind the detectors and proactive care can raise, read from the code."""
    import inspect

    import detectors
    from care import texts
    from detectors import device_health, vitals
    from detectors.base import Detector

    kinds = {texts.OVERDUE_KIND, texts.FOLLOW_UP_KIND, "fall_candidate"}
    kinds |= {k for s in vitals.SIGNALS for k in (s.high_kind, s.low_kind) if k}
    kinds |= set(re.findall(r'_found\("(\w+)"', inspect.getsource(device_health)))
    for path in Path(detectors.__file__).parent.glob("*.py"):
        module = importlib.import_module(f"detectors.{path.stem}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            kind = getattr(cls, "kind", None)
            if isinstance(kind, str) and cls is not Detector and cls.__module__ == module.__name__:
                kinds.add(kind)
    return kinds - {"vitals", "device_health"}  # these raise the kinds of their signals


def test_every_alert_kind_raised_has_words_in_every_language():
    kinds = _raised_kinds()
    assert {"bathroom", "fall", "placement_unknown", "tachycardia", "offline"} <= kinds
    missing = sorted(kinds - set(_WHAT))
    assert not missing, f"no family or operator wording for {missing}"
    for kind in kinds:
        zh = what_happened(alert(kind, Severity.WARNING), "王秀英", translator("zh-CN"))
        assert HAN.search(zh.replace("王秀英", "")), zh
        assert not re.search(r"[a-z]{3,}", zh), zh
