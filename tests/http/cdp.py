"""A small Chrome DevTools Protocol client: headless Chromium on loopback, driven over aiohttp."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

# Flags that keep Chromium quiet and local: no first-run work, no background traffic, and
# every host name unresolvable, so the only thing it can reach is a loopback IP literal.
QUIET = [
    # The sandbox needs user namespaces, which containers and root often lack; the browser
    # loads only the test's own pages from loopback.
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]
_FLAGS = [
    "--headless",
    *QUIET,
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--no-pings",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class Chromium:
    """A headless Chromium process with its DevTools endpoint on loopback."""

    def __init__(self, binary: str, profile: Path) -> None:
        active = profile / "DevToolsActivePort"
        active.unlink(missing_ok=True)  # left by an earlier run on the same profile
        self._log = (profile.parent / "chromium.log").open("wb")
        self._proc = subprocess.Popen(
            [binary, *_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._log_path = profile.parent / "chromium.log"
        deadline = time.monotonic() + 30
        while not active.exists() or len(active.read_text().splitlines()) < 2:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"Chromium did not start: {self._log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        self.ws_url = f"ws://127.0.0.1:{port}{path}"

    def close(self) -> None:
        """Stop the browser."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


class CDPError(RuntimeError):
    """The browser answered a command with an error, or a script threw."""


class Browser:
    """One DevTools connection; pages are flat sessions on it."""

    def __init__(self, ws_url: str) -> None:
        self._ws_url = ws_url
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []

    async def __aenter__(self) -> Self:
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await self._http.ws_connect(self._ws_url, max_msg_size=0)
        except BaseException:
            await self._http.close()
            raise
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._reader.cancel()
        await self._ws.close()
        await self._http.close()

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            for waiter in list(self._waiters):
                method, session, fut = waiter
                if data.get("method") == method and session in (None, data.get("sessionId")):
                    self._waiters.remove(waiter)
                    if not fut.done():
                        fut.set_result(data.get("params", {}))
        for fut in self._pending.values():
            fut.set_exception(CDPError("DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its result."""
        msg: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg["id"]] = fut
        await self._ws.send_str(json.dumps(msg))
        reply = await asyncio.wait_for(fut, 60)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def expect(self, method: str, session: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """Return a future for the next event named method; call before causing it."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session, fut))
        return fut

    async def new_page(self, width: int, height: int, accept_language: str) -> Page:
        """Open a blank tab with a mobile viewport that sends accept_language."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Network.enable")
        await page.send(
            "Network.setExtraHTTPHeaders", {"headers": {"Accept-Language": accept_language}}
        )
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True},
        )
        return page


class Page:
    """One tab."""

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a command to this tab."""
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str) -> None:
        """Load url and wait for its load event."""
        loaded = self.browser.expect("Page.loadEventFired", self.session)
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigate {url}: {result['errorText']}")
        await asyncio.wait_for(loaded, 60)

    async def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression (promises awaited) and return its JSON value."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            raise CDPError(f"script threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def click(self, selector: str) -> None:
        """Click the middle of the first element matching selector, as a mouse would."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
            )

    async def fonts(self, selector: str) -> list[str]:
        """Return the families of the fonts that render the first element matching selector."""
        await self.send("DOM.enable")
        await self.send("CSS.enable")
        root = await self.send("DOM.getDocument")
        node = await self.send(
            "DOM.querySelector", {"nodeId": root["root"]["nodeId"], "selector": selector}
        )
        used = await self.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})
        return [f["familyName"] for f in used["fonts"]]

    async def screenshot(self) -> bytes:
        """Return a PNG of the viewport."""
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(shot["data"])

    async def close(self) -> None:
        """Close the tab."""
        await self.browser.send("Target.closeTarget", {"targetId": self.target})
