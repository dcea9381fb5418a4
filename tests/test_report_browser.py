"""The HTML report in a real browser: headless Chromium loads it, every figure decodes, the table is there."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from conftest import skip_or_fail
from fairlora.report.html import write_report
from test_report import make_audit
from test_report_findings import CONSTANT, findings_audit

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
    out.sections = Array.prototype.map.call(doc.querySelectorAll("body > section"),
      function (s) { return s.id || s.getAttribute("data-section"); });
    var findings = doc.getElementById("findings");
    out.findings_text = findings ? findings.innerText : "";
    out.findings_top = findings ? findings.getBoundingClientRect().top : -1;
    out.table_top = table ? table.getBoundingClientRect().top : -1;
    out.findings_images = findings ? findings.querySelectorAll("img").length : 0;
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
        skip_or_fail(f"no headless browser found (looked for {', '.join(BROWSERS)}); install chromium")
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


def _screenshot(browser: str, report: Path, profile: Path, out: Path) -> None:
    """Render the top of `report` to a PNG at `out`, as a reader's 1400-pixel-wide window shows it."""
    flags = [*FLAGS, "--hide-scrollbars", "--window-size=1400,1600", f"--screenshot={out}"]
    command = [browser, *flags, f"--user-data-dir={profile}", report.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert out.is_file(), f"no screenshot (rc {done.returncode}): {done.stderr[-2000:]}"


def test_report_opens_with_the_findings_in_headless_chromium(tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        skip_or_fail(f"no headless browser found (looked for {', '.join(BROWSERS)}); install chromium")
    paths = write_report(findings_audit(), tmp_path / "report")
    page = paths["html"].with_name("probe.html")
    page.write_text(PROBE_PAGE)
    result = _probe(browser, page, tmp_path / "profile")
    assert "error" not in result, result
    assert result["sections"][:3] == ["findings", "runs", "comparison"]
    assert 0 <= result["findings_top"] < result["table_top"]
    assert result["findings_images"] == 1 and result["loaded"] == result["images"]
    text = " ".join(result["findings_text"].split())
    assert text.index("lora") < text.index("flat")
    assert "Worst group by accuracy: religion_muslim 0.812 [0.740, 0.870], n=96" in text
    assert "four-fifths rule violated" in text and f"utility/test: {CONSTANT}" in text
    assert "Below min_group_size = 20: tiny (n=5)" in text
    shot = tmp_path / "findings.png"
    _screenshot(browser, paths["html"], tmp_path / "profile-shot", shot)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 20_000
