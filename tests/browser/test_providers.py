"""Model providers from the dashboard, in a real browser against the real stack started with no
provider key in its environment (so the built-in scripted model is in force): a job that is no
demo is flagged before it is sent and, once refused, says where a key goes; an admin enters an
Anthropic key and the address of a local server that speaks Anthropic's protocol in Settings,
tries it, and the next job runs every phase on it, with no restart; after saving, the key is
nowhere the browser holds it (the page, its storage, every API answer and live message it got).
Settings is photographed at desktop and phone width."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import create_database, drop_database
from playwright.sync_api import Page, Response, WebSocket, expect
from tests.browser.conftest import DESKTOP, PHONE, require_dashboard, shoot, sign_in
from tests.fakeprovider import FakeProvider
from tests.harness import WORD_COUNT, RunningStack, clean_environment, start_stack
from tests.test_provider_setup import responder

from vdo_cli.embedded import EmbeddedPostgres

pytestmark = pytest.mark.e2e

KEY = "sk-ant-browser-3e2d1c0b9a8f-never-shown"
# What the built-in scripted model refuses (it does the demo jobs only).
NOT_A_DEMO = "a markdown to HTML converter"
# Every call the browser's page sees: each API answer's body and each live message.
WATCH = "/api/"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture(scope="module")
def keyless_stack(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: EmbeddedPostgres,
    fake: FakeProvider,
) -> Iterator[RunningStack]:
    require_dashboard()
    url = create_database(postgres_server)
    running = start_stack(
        tmp_path_factory.mktemp("providers-dashboard"),
        url,
        environ=clean_environment(),
        model_backoff_seconds=0.05,
        model_timeout_seconds=30.0,
        model_max_output_tokens=4000,
    )
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


class Received:
    """What the page received from the gateway: API answers' bodies and live messages."""

    def __init__(self, page: Page) -> None:
        self.texts: list[tuple[str, str]] = []
        page.on("response", self._response)
        page.on("websocket", self._websocket)

    def _response(self, response: Response) -> None:
        if WATCH not in response.url or response.status in (204, 304):
            return
        try:
            self.texts.append((response.url, response.text()))
        except Exception as error:  # a body the browser no longer holds
            self.texts.append((response.url, f"(unread: {error})"))

    def _websocket(self, socket: WebSocket) -> None:
        def frame(payload: str | bytes) -> None:
            text = payload if isinstance(payload, str) else payload.decode(errors="replace")
            self.texts.append((socket.url, text))

        socket.on("framereceived", frame)

    def holding(self, secret: str) -> list[str]:
        return [url for url, text in self.texts if secret in text]


def no_wider_than_the_screen(page: Page) -> None:
    """At phone width the page scrolls only down, never sideways."""
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(250)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide at {PHONE['width']}px"
    page.set_viewport_size(DESKTOP)


def test_an_admin_adds_a_key_in_settings_and_the_next_job_runs_on_it(
    keyless_stack: RunningStack, fake: FakeProvider, page: Page
) -> None:
    stack = keyless_stack
    fake.reset()
    fake.set_responder(responder)
    fake.require_key("anthropic", KEY)
    received = Received(page)
    sign_in(page, stack)

    # A demo template: no warning, and a word on what it runs on.
    page.goto(f"{stack.gateway_url}/jobs/new")
    page.get_by_label("Start from a template").select_option("word-count")
    expect(page.get_by_text("it runs on the built-in scripted model, for free")).to_be_visible()
    expect(page.locator("#model-warning")).to_have_count(0)

    # A job that is no demo: warned of before it is sent, sent once confirmed, then refused.
    page.goto(f"{stack.gateway_url}/jobs/new")
    page.get_by_label("Title").fill("md")
    page.get_by_label("Description").fill(NOT_A_DEMO)
    warning = page.locator("#model-warning")
    expect(warning).to_contain_text("No AI model is configured: this job will be refused")
    expect(warning.get_by_role("link", name="Settings → Model providers")).to_have_attribute(
        "href", "/settings#model-providers"
    )
    page.get_by_role("button", name="Advanced: models, budget, attempts").click()
    expect(page.get_by_label("Model for the planner")).to_have_attribute(
        "placeholder", "built-in scripted model"
    )
    no_wider_than_the_screen(page)
    page.get_by_role("button", name="Submit job").click()
    anyway = page.get_by_role("button", name="Submit anyway")
    expect(anyway).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    expect(page.locator("[data-status]").first).to_have_attribute(
        "data-status", "failed", timeout=60_000
    )
    banner = page.get_by_role("note", name="Why this job was refused")
    expect(banner).to_contain_text("no AI model is configured")
    no_wider_than_the_screen(page)
    banner.get_by_role("link", name="Settings → Model providers").click()
    expect(page).to_have_url(f"{stack.gateway_url}/settings#model-providers")
    expect(page.locator("#model-providers")).to_be_focused()

    # Settings: no key anywhere yet.
    anthropic = page.get_by_role("region", name="Anthropic", exact=True)
    expect(anthropic.get_by_test_id("anthropic-state")).to_have_text("no key")
    expect(page.get_by_text("every phase runs on the built-in scripted model")).to_be_visible()
    field = anthropic.get_by_label("Anthropic API key")
    expect(field).to_have_attribute("type", "password")
    expect(field).to_have_attribute("autocomplete", "off")
    expect(field).to_have_value("")

    # The key and the local server's address, saved from the keyboard.
    field.fill(KEY)
    anthropic.get_by_label("Anthropic Base URL (optional)").fill(fake.url)
    field.press("Enter")
    expect(anthropic.get_by_text(f"Saved the key …{KEY[-4:]} and the base URL.")).to_be_visible()
    expect(field).to_have_value("")
    expect(page.get_by_text("Every AI service has taken the change")).to_be_visible(timeout=30_000)
    expect(anthropic.get_by_test_id("anthropic-state")).to_have_text("configured")
    expect(anthropic.get_by_test_id("anthropic-key")).to_contain_text(
        f"entered here: …{KEY[-4:]} by admin"
    )
    expect(anthropic).to_contain_text(fake.url)
    routes = page.locator("[data-phase-routes]")
    expect(routes).to_have_count(4)
    for line in routes.all():
        expect(line).to_contain_text("anthropic:claude-")
    expect(page.get_by_text("every phase runs on the built-in scripted model")).to_have_count(0)

    # Tried: one tiny request with the key the AI services now have.
    anthropic.get_by_role("button", name="Test the Anthropic key").click()
    tried = anthropic.get_by_test_id("provider-test")
    expect(tried).to_contain_text("answered in", timeout=45_000)
    expect(tried).to_contain_text("(key from Settings): “OK”")
    expect(tried).to_contain_text("claude-")
    shoot(page, "settings-providers")
    no_wider_than_the_screen(page)

    # The key is nowhere the browser holds it once saved.
    assert KEY not in page.content()
    stored = page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert KEY not in stored
    assert not received.holding(KEY), received.holding(KEY)

    # The next job that is no demo runs every phase on Anthropic, with no restart.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New job").click()
    page.get_by_label("Title").fill("wc")
    page.get_by_label("Description").fill(WORD_COUNT)
    page.get_by_role("button", name="Advanced: models, budget, attempts").click()
    expect(page.get_by_label("Model for the planner")).to_have_attribute(
        "placeholder", re.compile(r"^anthropic:claude-")
    )
    expect(page.locator("#model-warning")).to_have_count(0)
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("[data-status]").first).to_have_attribute(
        "data-status", "completed", timeout=180_000
    )
    expect(page.get_by_role("note", name="Why this job was refused")).to_have_count(0)
    page.get_by_role("tab", name="Model calls").click()
    expect(page.get_by_role("cell", name=re.compile(r"^anthropic:claude-")).first).to_be_visible()
    calls = [e["data"] for e in stack.events(job_id) if e["type"] == "ModelCallFinished"]
    assert calls
    assert {c["provider"] for c in calls} == {"anthropic"}, calls
    assert {c["step"] for c in calls} >= {"plan", "build", "write_tests", "review"}
    sent = fake.requests("anthropic")
    assert sent
    assert all(KEY in json.dumps(r.headers) for r in sent)
    assert {r.provider for r in fake.requests()} == {"anthropic"}

    # Removed (once confirmed), the key serves no more: the scripted model is back.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    anthropic.get_by_role("button", name="Remove the Anthropic key entered here").click()
    anthropic.get_by_role("button", name="Yes, remove it").click()
    expect(anthropic.get_by_text("Removed the key and base URL entered here.")).to_be_visible()
    expect(page.get_by_text("every phase runs on the built-in scripted model")).to_be_visible(
        timeout=30_000
    )
    expect(anthropic.get_by_test_id("anthropic-state")).to_have_text("no key")

    assert KEY not in page.content()
    leaks: list[Any] = received.holding(KEY)
    assert not leaks, leaks
    assert len(received.texts) > 20, "the page's answers were not recorded"
