"""A headless Chromium driven over the DevTools protocol through ``--remote-debugging-pipe`` (standard library
only: the protocol's JSON messages, each ended by a NUL byte, on file descriptors 3 and 4 of the browser).

Used by the review page's browser test and its load benchmark; install the browser with ``make setup``
(Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

#: browser executables tried in this order
EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, EXECUTABLES) if p), None)


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Chromium:
    """One headless browser with one page (``with Chromium() as b: b.open(url)``)."""

    def __init__(self, executable: str | None = None, *, size: tuple[int, int] = (1400, 900),
                 download_dir: str | Path | None = None, timeout: float = 60.0):
        exe = executable or find_chromium()
        if exe is None:
            raise FileNotFoundError("no chromium executable on PATH")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="review-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the browser's ends move above 9, so that the redirections below never close fd 3 or 4 themselves
        to_browser_r, from_browser_w = _above_nine(to_browser_r), _above_nine(from_browser_w)
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
                "--no-first-run", "--disable-extensions", "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}", f"--window-size={size[0]},{size[1]}", "about:blank"]
        # the browser reads the protocol on fd 3 and writes on fd 4
        shell = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.proc = subprocess.Popen(["bash", "-c", shell, *args], pass_fds=(to_browser_r, from_browser_w),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None
        target = self.call("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 browser=True)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1], "deviceScaleFactor": 1,
                                                          "mobile": False})
        if download_dir is not None:
            self.call("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir),
                                                      "eventsEnabled": True}, browser=True)

    # -- protocol -----------------------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, *, browser: bool = False) -> dict:
        """Send one command (to the page's session unless ``browser``) and return its result."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, predicate=lambda params: True, timeout: float | None = None) -> dict:
        """The first event ``method`` (already received or coming) whose params satisfy ``predicate``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method and predicate(ev.get("params", {})):
                    return self.events.pop(i)["params"]
            reply = self._read_message(deadline)
            if "method" in reply:
                self.events.append(reply)

    # -- page -----------------------------------------------------------------------------------------------
    def open(self, url: str) -> float:
        """Navigate and wait for the load event; returns the seconds it took."""
        self.events.clear()
        t0 = time.perf_counter()
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")
        return time.perf_counter() - t0

    def js(self, expression: str):
        """The value of a JavaScript expression (awaited when it is a promise)."""
        out = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A left click at viewport CSS pixels (x, y)."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 0 if kind == "mouseMoved" else 1})

    def click_selector(self, selector: str) -> tuple[float, float]:
        """Scroll the element into view and click its centre; returns the point clicked."""
        x, y = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                       "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                       "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        self.click(x, y)
        return x, y

    def key(self, char: str) -> None:
        """Press and release a letter key."""
        code = ord(char.upper())
        self.call("Input.dispatchKeyEvent", {"type": "keyDown", "key": char, "text": char, "code": f"Key{char.upper()}",
                                             "windowsVirtualKeyCode": code})
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": char, "code": f"Key{char.upper()}",
                                             "windowsVirtualKeyCode": code})

    def screenshot(self, path: str | Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.call("Browser.close", browser=True)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
