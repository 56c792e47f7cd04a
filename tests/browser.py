"""Headless Chromium for the page tests: Debian's `chromium` driven by
selenium through Debian's `chromedriver` (given by path, so selenium downloads
nothing). `.ci/run` installs both. Selenium blocks, so a trio test calls it on
a thread (`await browser.load(url)`) while its nodes serve on the event loop.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# the machine has no network: without these Chromium tries to reach out (and waits for it)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-default-apps", "--disable-extensions"]
PAGE_TIMEOUT = 30.0


@dataclass
class Loaded:
    url: str  # where the browser ended up
    title: str
    errors: list[str]  # console messages of level SEVERE: script errors, CSP violations, failed loads


class Browser:
    def __init__(self, width: int = 1280, height: int = 900):
        if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
            raise RuntimeError(f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver "
                               "(.ci/run does)")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="pithnode-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in [*FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(PAGE_TIMEOUT)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def _errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def _load(self, url: str) -> Loaded:
        self._errors()  # forget what earlier pages said
        self.driver.get(url)
        return Loaded(self.driver.current_url, self.driver.title, self._errors())

    async def load(self, url: str) -> Loaded:
        with trio.fail_after(PAGE_TIMEOUT + 10):
            return await trio.to_thread.run_sync(self._load, url)

    async def click(self, css: str) -> Loaded:
        """Click the first element matching `css` and wait for the page it opens."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        def go() -> Loaded:
            self._errors()
            old = self.driver.find_element(By.TAG_NAME, "html")
            self.driver.find_element(By.CSS_SELECTOR, css).click()
            WebDriverWait(self.driver, PAGE_TIMEOUT).until(expected_conditions.staleness_of(old))
            return Loaded(self.driver.current_url, self.driver.title, self._errors())

        with trio.fail_after(PAGE_TIMEOUT + 10):
            return await trio.to_thread.run_sync(go)

    async def js(self, script: str, *args: Any) -> Any:
        """Run `script` (a function body: `return ...`) in the page, through WebDriver (not the page's CSP)."""
        with trio.fail_after(PAGE_TIMEOUT):
            return await trio.to_thread.run_sync(lambda: self.driver.execute_script(script, *args))

    async def screenshot(self, path: Path) -> None:
        with trio.fail_after(PAGE_TIMEOUT):
            await trio.to_thread.run_sync(self.driver.save_screenshot, str(path))

    async def resize(self, width: int, height: int) -> None:
        with trio.fail_after(PAGE_TIMEOUT):
            await trio.to_thread.run_sync(self.driver.set_window_size, width, height)
