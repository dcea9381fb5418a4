"""The HTML report in a real browser: headless Chromium loads it, every figure decodes, the table is there."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fairlora.report.html import write_report
from test_report import make_audit

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--allow-file-access-from-files",
    "--virtual-time-budget=5000",
)
# Loads report.html in a same-origin iframe and writes what it finds into <pre id="result"> as JSON.
PROBE_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><script>
function inspect(frame) {
  var out = {};
  try {
    var doc = frame.contentDocument;
    var images = Array.prototype.slice.call(doc.images);
    out.images = images.length;
    out.loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    var table = doc.getElementById("main-table");
    out.table = table !== null;
    out.rows = table ? table.tBodies[0].rows.length : 0;
    out.runs = table ? Array.prototype.map.call(table.querySelectorAll("th.run"),
      function (th) { return th.textContent; }) : [];
  } catch (error) {
    out.error = String(error);
  }
  document.getElementById("result").textContent = JSON.stringify(out);
}
</script></head><body><pre id="result">not loaded</pre>
<iframe src="report.html" width="1200" height="800" onload="inspect(this)"></iframe>
</body></html>
"""


def _browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _probe(browser: str, page: Path, profile: Path) -> dict[str, Any]:
    """Dump the DOM of the probe page after the report loaded and return its JSON result."""
    command = [browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no result in the dumped DOM (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_report_loads_in_headless_chromium(tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}); install chromium")
    audit = make_audit()
    paths = write_report(audit, tmp_path / "report")
    page = paths["html"].with_name("probe.html")
    page.write_text(PROBE_PAGE)
    result = _probe(browser, page, tmp_path / "profile")
    assert "error" not in result, result
    assert result["images"] == paths["html"].read_text().count("<img ")
    assert result["images"] >= 5
    assert result["loaded"] == result["images"]
    assert result["table"] is True
    assert result["rows"] >= len(audit.runs)
    assert result["runs"] == [run.name for run in audit.runs]
