"""Reporting: run results (results.json), terminal tables, plots, and the audit report (HTML, Markdown)."""
