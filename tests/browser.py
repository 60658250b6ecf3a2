"""A Snakemake report in a real browser: Debian's headless Chromium.

``ensure_chromium()`` finds the ``chromium`` binary, installing Debian's package with apt-get when it
is missing and we are root; it raises :class:`BrowserUnavailable` with the reason otherwise.
``report_in_browser(html, workdir)`` loads a copy of the report with a probe script appended: once the
page (the report's own React app included) has loaded, the probe decodes every image the report
embeds (its ``results`` variable: one data URI per file) and writes what it found into the DOM,
which ``chromium --dump-dom`` hands back.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

PROBE = """
<script>
window.addEventListener("load", function () {
  var keys = Object.keys(results);
  var found = {files: {}, categories: categories};
  var pending = 0;
  function finish() {
    var pre = document.createElement("pre");
    pre.id = "browser-probe";
    pre.textContent = JSON.stringify(found);
    document.body.appendChild(pre);
  }
  keys.forEach(function (key) {
    var entry = results[key];
    var record = {name: entry.name, mime: (entry.data_uri || "").split(";")[0], width: null, height: null};
    found.files[key] = record;
    if (record.mime !== "data:image/png") { return; }
    pending += 1;
    var img = new Image();
    img.onload = function () {
      record.width = img.naturalWidth; record.height = img.naturalHeight;
      if (--pending === 0) { finish(); }
    };
    img.onerror = function () { if (--pending === 0) { finish(); } };
    img.src = entry.data_uri;
  });
  if (pending === 0) { finish(); }
});
</script>
"""


class BrowserUnavailable(RuntimeError):
    """No headless Chromium here; the message says why."""


def ensure_chromium() -> str:
    """The path of Debian's chromium, installed with apt-get when missing (needs root)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        raise BrowserUnavailable("chromium is not installed and installing Debian's package needs root (apt-get)")
    if not shutil.which("apt-get"):
        raise BrowserUnavailable("chromium is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            raise BrowserUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
    found = shutil.which("chromium")
    if not found:
        raise BrowserUnavailable("apt-get installed chromium, but no chromium binary is on PATH")
    return found


def report_in_browser(html: Path, workdir: Path, chromium: str, timeout: float = 120) -> dict:
    """What headless Chromium sees of a Snakemake report: ``files`` (report path -> name, data URI
    mime type, and for a PNG its decoded width and height, None if the browser could not decode it),
    ``categories`` (as the report groups its files) and ``app`` (the text the report's own app rendered
    into its ``#app`` element, as the final DOM holds it)."""
    text = html.read_text()
    end = text.rfind("</body>")
    if end < 0:
        raise AssertionError(f"{html}: no </body>; not an HTML report")
    probe = workdir / "report_probe.html"
    probe.write_text(text[:end] + PROBE + text[end:])
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={workdir / 'chromium-profile'}", "--virtual-time-budget=30000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=timeout)  # fmt: skip
    match = re.search(r'<pre id="browser-probe">(.*?)</pre>', done.stdout, re.S)
    if done.returncode != 0 or not match:
        raise AssertionError(f"chromium did not render {html} (exit {done.returncode}): {done.stderr[-2000:]}")
    found = json.loads(html_lib.unescape(match.group(1)))
    app = re.search(r'<div id="app"[^>]*>(.*?)<script', done.stdout, re.S)
    found["app"] = " ".join(re.sub(r"<[^>]+>", " ", app.group(1)).split()) if app else ""
    return found
