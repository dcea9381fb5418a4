"""Number and text formatting shared by the reports: values, CIs, estimates and Markdown escaping."""

from __future__ import annotations

from fairlora.metrics.table import Estimate

MISSING = "–"
MARKDOWN_SPECIALS = "\\`*_[]<>|#"


def fmt_value(value: float | None) -> str:
    """A number to 3 decimals; None as '–'."""
    return MISSING if value is None else f"{value:.3f}"


def fmt_ci(estimate: Estimate | None) -> str:
    """'[low, high]' of an estimate, or '' when it has no CI."""
    if estimate is None or (estimate.low is None and estimate.high is None):
        return ""
    return f"[{fmt_value(estimate.low)}, {fmt_value(estimate.high)}]"


def fmt_estimate(estimate: Estimate | None) -> str:
    """'value [low, high]' (the CI only where known); a missing estimate as '–'."""
    if estimate is None:
        return MISSING
    ci = fmt_ci(estimate)
    return f"{fmt_value(estimate.value)} {ci}" if ci else fmt_value(estimate.value)


def md_escape(text: str) -> str:
    """Backslash-escape Markdown specials (pipes included, so text is safe inside a table cell)."""
    text = " ".join(str(text).split())
    return "".join(f"\\{c}" if c in MARKDOWN_SPECIALS else c for c in text)
