"""The browser tests' fixtures: a whole stack on the scripted model (slowed a little, so a
person could follow each phase), and Debian's Chromium driven by Playwright; and what every
browser test does: sign in, and photograph a page at desktop and phone width."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import create_database, drop_database
from playwright.sync_api import Browser, Page, Playwright, ViewportSize, expect, sync_playwright
from tests.harness import RunningStack, start_stack

from vdo_cli.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "web" / "dist"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Long enough to see each phase run (and to cancel a running job), short enough for a test.
SCRIPTED_DELAY_SECONDS = 0.6
SCREENSHOTS = ROOT / "docs" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


def require_dashboard() -> None:
    """Fail at once, saying how, when the dashboard has not been built."""
    if not (DIST / "index.html").is_file():
        pytest.fail(
            f"the dashboard is not built ({DIST} has no index.html): run `make web` "
            "(`make test` does it first)",
            pytrace=False,
        )


def shoot(page: Page, name: str) -> None:
    """The page as it is, at desktop and at phone width."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(250)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def sign_in(page: Page, stack: RunningStack) -> None:
    page.goto(f"{stack.gateway_url}/")
    expect(page.get_by_role("heading", name="Sign in to VDO")).to_be_visible()
    page.get_by_label("API token").fill(stack.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()


@pytest.fixture(scope="module")
def dashboard_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: EmbeddedPostgres
) -> Iterator[RunningStack]:
    require_dashboard()
    url = create_database(postgres_server)
    running = start_stack(
        tmp_path_factory.mktemp("dashboard"), url, scripted_delay_seconds=SCRIPTED_DELAY_SECONDS
    )
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium "
            "(apt-get install chromium)",
            pytrace=False,
        )
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, accept_downloads=True, locale="en-GB"
    )
    context.set_default_timeout(20_000)
    opened = context.new_page()
    yield opened
    context.close()
