"""A headless Chromium for the docs pages' tests, driven over its DevTools protocol (CDP).

The protocol is JSON over one WebSocket; the few commands the tests need (open a page, evaluate an
expression, take a screenshot) fit in this module, with `websockets` (already installed with uvicorn) as the
only library. Chromium itself is Debian's `chromium` package, or any Chrome named by ORDERS_TEST_CHROMIUM.
"""

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

HOW_TO_GET_IT = (
    "the docs browser test needs Chromium: `sudo apt-get install -y chromium` (Debian/Ubuntu; .ci/run does "
    "this), `brew install --cask chromium` (macOS), or set ORDERS_TEST_CHROMIUM to a Chrome/Chromium binary"
)
# As the machines this runs on need: no sandbox as root, no GPU, and no traffic of Chromium's own.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1280,1600",
    "--remote-debugging-port=0",
)
# Collected in every page before its own scripts run: what the Content-Security-Policy refused.
_WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(`${e.violatedDirective} refused ${e.blockedURI}`));
"""


# Where macOS installs them (`brew install --cask chromium` or Google Chrome), off the PATH.
_MACOS = (
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
)


def chromium_binary() -> str:
    """The Chromium to run; fails the test (never skips it) with how to install one."""
    named = os.environ.get("ORDERS_TEST_CHROMIUM")
    candidates = (
        [named] if named else [*map(shutil.which, ("chromium", "chromium-browser", "google-chrome")), *_MACOS]
    )
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(HOW_TO_GET_IT, pytrace=False)


class Page:
    """One tab, attached with a CDP session; collects the page's errors as they are reported."""

    def __init__(self, browser: "Browser", session: str) -> None:
        self.browser = browser
        self.session = session
        self.errors: list[str] = []  # uncaught exceptions, console errors, failed requests
        self.requests: dict[str, str] = {}  # request id → URL

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, self.session, **params)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """The expression's value once it is truthy; AssertionError if it is not within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert value, f"not true within {timeout}s: {expression}; page errors: {self.errors}"
        return value

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def on_event(self, event: dict[str, Any]) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(f"exception: {details.get('exception', {}).get('description') or details}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(f"console.error: {[a.get('value') for a in params.get('args', [])]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry']['source']}: {params['entry']['text']}")
        elif method == "Network.requestWillBeSent":
            self.requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed":
            why = params.get("blockedReason") or params.get("errorText")
            self.errors.append(f"request failed ({why}): {self.requests.get(params['requestId'])}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            self.errors.append(f"{params['response']['status']} for {params['response']['url']}")


class Browser:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pages: dict[str, Page] = {}

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; events that arrive meanwhile go to their page."""
        call_id = next(self.ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            page = self.pages.get(reply.get("sessionId", ""))
            if page is not None and "method" in reply:
                page.on_event(reply)

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = self.pages[session] = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        page.send("Page.addScriptToEvaluateOnNewDocument", source=_WATCH_CSP)
        return page


@contextmanager
def chromium(profile: Path) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile in `profile`, stopped on exit."""
    binary = chromium_binary()
    log = profile / "chromium.log"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "data" / "DevToolsActivePort").unlink(missing_ok=True)  # a previous run's, in a reused profile
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile / 'data'}", "about:blank"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ws_url = _devtools_url(profile / "data" / "DevToolsActivePort", proc, log)
        with connect(ws_url, max_size=None, open_timeout=30) as ws:
            yield Browser(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _devtools_url(active_port: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> str:
    """Chromium writes its DevTools port and browser path into the profile once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}: {log.read_text(errors='replace')}")
        lines = active_port.read_text().split() if active_port.exists() else []
        if len(lines) == 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.1)
    raise RuntimeError(f"chromium did not listen within {timeout}s: {log.read_text(errors='replace')}")
