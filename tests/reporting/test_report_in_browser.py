"""The browser probe of the e2e report test can fail: on a hand-made page it decodes a real PNG and
reports a corrupt one as undecodable (headless Chromium; skipped with the reason where it cannot be
installed)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.browser import BrowserUnavailable, ensure_chromium, report_in_browser


def test_probe_tells_a_decodable_png_from_a_corrupt_one(tmp_path: Path) -> None:
    try:
        chromium = ensure_chromium()
    except BrowserUnavailable as exc:
        pytest.skip(str(exc))
    buffer = io.BytesIO()
    Image.new("RGB", (7, 5), (200, 30, 30)).save(buffer, format="PNG")
    good = base64.b64encode(buffer.getvalue()).decode()
    corrupt = base64.b64encode(buffer.getvalue()[:40]).decode()  # the header, then nothing
    results = {"a.png": {"name": "a.png", "data_uri": f"data:image/png;charset=utf8;filename=a.png;base64,{good}"},
               "b.png": {"name": "b.png", "data_uri": f"data:image/png;charset=utf8;filename=b.png;base64,{corrupt}"},
               "c.csv": {"name": "c.csv", "data_uri": "data:text/csv;charset=utf8;filename=c.csv;base64,YQo="}}
    page = tmp_path / "report.html"
    page.write_text(f"<html><body><div id=\"app\"><p>rendered</p></div><script>var results = {json.dumps(results)};"
                    f" var categories = {{\"Figures\": {{\"Other\": [\"a.png\", \"b.png\"]}}}};</script></body></html>")
    found = report_in_browser(page, tmp_path, chromium)
    assert found["files"]["a.png"] == {"name": "a.png", "mime": "data:image/png", "width": 7, "height": 5}
    assert found["files"]["b.png"]["width"] is None
    assert found["files"]["c.csv"]["mime"] == "data:text/csv"
    assert found["categories"] == {"Figures": {"Other": ["a.png", "b.png"]}} and found["app"] == "rendered"
