"""A real browser (Debian's headless Chromium, driven by Selenium) uses the visit
register's page as a community worker would, on a phone-sized window."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp import web
from care_site import PASSWORDS, make_register, registry, serving
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

pytestmark = pytest.mark.integration  # starts chromedriver and Chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium, "Debian's chromium package is missing (scripts/setup.sh installs it)"
    assert driver_path, "Debian's chromium-driver package is missing (scripts/setup.sh)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=390,844"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(20)  # an element of the next page is waited for (a loaded CI)
    try:
        yield driver
    finally:
        driver.quit()


def _log_in(driver: WebDriver, url: str, name: str) -> None:
    driver.get(f"{url}/login")
    driver.delete_all_cookies()
    driver.get(f"{url}/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[name])
    driver.find_element(By.ID, "login").click()
    assert driver.find_element(By.ID, "site").text


def _plan(driver: WebDriver) -> list[str]:
    return [li.get_attribute("id") or "" for li in
            driver.find_elements(By.CSS_SELECTOR, "#plan > li")]  # fmt: skip


def _rate(driver: WebDriver, group: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#rate-{group} .contacted").text


class Forger:
    """Another site on another port: its page posts a visit form to the register."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.port = 0

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=(
            f'<form id="f" method="post" action="{self.target}/visits">'
            '<input name="elder" value="ben"><input name="kind" value="visit">'
            '<input name="outcome" value="all_well"><input name="csrf" value="guessed"></form>'
            "<script>document.getElementById('f').submit()</script>"))  # fmt: skip

    def __enter__(self) -> Forger:
        app = web.Application()
        app.router.add_get("/", self._page)
        runner = web.AppRunner(app, access_log=None)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = int(runner.addresses[0][1])
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(runner.cleanup())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_a_worker_records_a_visit_and_the_page_follows(browser, tmp_path, travel):
    reg = make_register(tmp_path / "care.db", time.time())
    try:
        with serving(reg, registry()) as url:
            _log_in(browser, url, "maria")
            assert _plan(browser) == ["elder-anna", "elder-ben"]  # overdue first, then signs
            anna = browser.find_element(By.ID, "elder-anna")
            assert "visit overdue by 10 days" in anna.text
            assert "walks" in browser.find_element(By.ID, "elder-ben").text
            assert _rate(browser, "alone_high_need") == "0 of 1"
            # a phone-sized window: nothing wider than the screen
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= browser.execute_script("return window.innerWidth")

            anna.find_element(By.TAG_NAME, "summary").click()
            form = anna.find_element(By.TAG_NAME, "form")
            Select(form.find_element(By.NAME, "kind")).select_by_value("visit")
            Select(form.find_element(By.NAME, "outcome")).select_by_value("concern")
            form.find_element(By.NAME, "notes").send_keys("eats little; GP to call")
            form.find_element(By.NAME, "follow_up").click()
            form.find_element(By.CLASS_NAME, "save").click()

            assert browser.find_element(By.ID, "flash").text == "Recorded."
            assert _plan(browser) == ["elder-ben"]  # Anna has left the due list
            assert _rate(browser, "alone_high_need") == "1 of 1"
            assert "eats little; GP to call" in browser.find_element(By.ID, "follow-ups").text
            [visit, _] = reg.history("north", "anna")
            assert (visit.worker, visit.outcome, visit.follow_up) == ("maria", "concern", True)

            # A page of another origin posts a visit with the worker's cookie: refused.
            with Forger(url) as forger:
                browser.get(f"http://127.0.0.1:{forger.port}/")
                WebDriverWait(browser, 30).until(
                    lambda d: "did not come from this page" in d.page_source
                )
            assert reg.history("north", "ben") == []

            # The worker of another site sees none of it.
            _log_in(browser, url, "sam")
            assert browser.find_element(By.ID, "site").text == "south"
            assert _plan(browser) == ["elder-dora"]
            text = browser.page_source
            for name in ("Anna Berg", "Ben Cole", "eats little"):
                assert name not in text
            browser.get(f"{url}/?q=anna")
            assert browser.find_element(By.ID, "count").text == "Showing 0 of 0."
    finally:
        reg.close()
