"""/docs and /redoc in a real browser: headless Chromium loads them from the real server and they draw every
operation of /openapi.json, show no error, and break none of their own Content-Security-Policy.

Needs Chromium (see tests/browser.py: HOW_TO_GET_IT); without it these tests fail, saying how to get it. A
failing test leaves a screenshot of the page in its temp directory.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import Browser, Page, chromium

# What each UI draws per operation, as [METHOD, path-or-operationId] pairs, and the texts of its errors.
SWAGGER_OPERATIONS = """[...document.querySelectorAll('.opblock')].map((b) => [
  b.querySelector('.opblock-summary-method').textContent.trim(),
  b.querySelector('.opblock-summary-path').getAttribute('data-path')])"""
SWAGGER_ERRORS = """[...document.querySelectorAll('.errors-wrapper, .loading-container .errors')]
  .map((e) => e.innerText).concat(
    /Unable to render|Failed to load API definition/.test(document.body.innerText) ? ['render error'] : [])"""
REDOC_OPERATIONS = """[...document.querySelectorAll('[data-section-id^="operation/"]')].map((s) =>
  s.getAttribute('data-section-id').slice('operation/'.length))"""
REDOC_ERRORS = """/Something went wrong|Error downloading|Invalid/.test(document.body.innerText)
  ? [document.body.innerText.slice(0, 500)] : []"""
SWAGGER = (SWAGGER_OPERATIONS, SWAGGER_ERRORS)
REDOC = (REDOC_OPERATIONS, REDOC_ERRORS)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(tmp_path_factory.mktemp("chromium")) as running:
        yield running


@pytest.fixture(scope="module")
def spec(live_server: str) -> dict[str, Any]:
    response = httpx.get(f"{live_server}/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


@contextmanager
def screenshot_on_failure(page: Page, path: Path) -> Iterator[None]:
    try:
        yield
    except AssertionError as failure:
        shot = page.screenshot(path)
        raise AssertionError(f"{failure}\nscreenshot: {shot}") from None


# Redoc's sidebar credit shows Redocly's logo from their CDN: the policy refuses it (nothing leaves the
# service's origin) and Redoc drops the image when it fails to load. Anything else refused is a bug.
REFUSED_AS_INTENDED = {"img-src refused https://cdn.redoc.ly/redoc/logo-mini.svg"}


def assert_clean(page: Page) -> None:
    refused = set(page.evaluate("window.__cspViolations")) - REFUSED_AS_INTENDED
    assert refused == set(), "the page broke its Content-Security-Policy"
    reported = [e for e in page.errors if not any(url.split()[-1] in e for url in REFUSED_AS_INTENDED)]
    assert reported == []


def drawn(
    browser: Browser, url: str, shot: Path, ui: tuple[str, str], expected: list[Any], timeout: float = 30
) -> Page:
    """Opens `url` and checks that the UI drew the `expected` operations, shows no error and broke no rule."""
    operations, errors = ui
    page = browser.new_page()
    with screenshot_on_failure(page, shot):
        page.navigate(url)
        page.wait_for(f"({operations}).length >= {len(expected)}", timeout)
        assert sorted(page.evaluate(operations)) == expected
        assert page.evaluate(errors) == []
        assert_clean(page)
    return page


def test_swagger_ui_draws_every_operation_without_an_error(browser, live_server, spec, tmp_path):
    expected = sorted([m.upper(), path] for path, item in spec["paths"].items() for m in item)
    page = drawn(browser, f"{live_server}/docs", tmp_path / "docs.png", SWAGGER, expected)
    assert page.evaluate("document.querySelector('.info .title').innerText").startswith("orders-svc")
    # The bearer scheme is offered: "Authorize" opens the dialog that sets the Authorization header.
    assert page.evaluate("!!document.querySelector('.auth-wrapper .authorize')")


def test_redoc_draws_every_operation_without_an_error(browser, live_server, spec, tmp_path):
    expected = sorted(op["operationId"] for item in spec["paths"].values() for op in item.values())
    drawn(browser, f"{live_server}/redoc", tmp_path / "redoc.png", REDOC, expected)


def test_a_page_that_does_not_draw_fails_the_check_with_a_screenshot(browser, live_server, tmp_path):
    """The checks can fail: a page of the service that is not the docs draws no operation."""
    shot = tmp_path / "not-docs.png"
    with pytest.raises(AssertionError, match="screenshot"):
        drawn(browser, f"{live_server}/healthz", shot, SWAGGER, [["GET", "/healthz"]], timeout=1)
    assert shot.read_bytes().startswith(b"\x89PNG")
