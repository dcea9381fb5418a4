"""The collab HTML report: strategies compared per client, trust heat maps over rounds, bytes exchanged."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fairlora.collab.results import load_collab_results
from fairlora.report.plots import colour, to_png
from fairlora.storage import write_text_atomic

REPORT_FILE = "report.html"
MAX_PANELS = 8
_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
    "td:first-child{text-align:left}.worst{color:#b00;font-weight:bold}"
)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def trust_heatmaps(summary: dict[str, Any]) -> bytes:
    """Trust matrix W of every round (up to 8, evenly spaced) as heat maps side by side."""
    rounds = summary["rounds"]
    picked = sorted({int(i) for i in np.linspace(0, len(rounds) - 1, min(MAX_PANELS, len(rounds)))})
    figure = Figure(figsize=(2.2 * len(picked) + 0.6, 2.4), dpi=100)
    axes = figure.subplots(1, len(picked), squeeze=False)[0]
    image = None
    for axis, index in zip(axes, picked, strict=True):
        record = rounds[index]
        image = axis.imshow(np.array(record["trust"]), vmin=0.0, vmax=1.0, cmap="viridis")
        axis.set_title(f"round {record['round']} (it {record['iteration']})", fontsize=8)
        axis.set_xlabel("from client j", fontsize=7)
        axis.set_ylabel("client i", fontsize=7)
        axis.tick_params(labelsize=6)
    if image is not None:
        figure.colorbar(image, ax=list(axes), shrink=0.8)
    return to_png(figure)


def perplexity_curves(summaries: list[dict[str, Any]]) -> bytes:
    """Mean (solid) and worst (dashed) per-client validation perplexity after each round, per strategy."""
    figure = Figure(figsize=(6.5, 3.5), dpi=100)
    axis = figure.subplots()
    for index, summary in enumerate(summaries):
        iterations = [r["iteration"] for r in summary["rounds"]]
        ppl = np.array([[m["perplexity"] for m in r["metrics"]] for r in summary["rounds"]])
        axis.plot(iterations, ppl.mean(1), color=colour(index), label=summary["strategy"])
        axis.plot(iterations, ppl.max(1), color=colour(index), linestyle="--")
    axis.set_xlabel("iteration")
    axis.set_ylabel("validation perplexity")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return to_png(figure)


def _strategy_table(summaries: list[dict[str, Any]]) -> str:
    head = "<tr><th>strategy</th><th>mean ppl</th><th>worst ppl</th><th>worst client</th><th>client gap</th>"
    head += "<th>mean acc</th><th>worst acc</th><th>bytes / round</th><th>bytes total</th></tr>"
    rows = [
        f"<tr><td>{html.escape(s['strategy'])}</td><td>{s['mean_perplexity']:.3f}</td>"
        f"<td>{s['worst_perplexity']:.3f}</td><td>{html.escape(s['worst_client'])}</td>"
        f"<td>{s['client_gap_perplexity']:.3f}</td><td>{s['mean_accuracy']:.3f}</td>"
        f"<td>{s['worst_accuracy']:.3f}</td><td>{s['bytes_per_round']:,}</td><td>{s['bytes_total']:,}</td></tr>"
        for s in summaries
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _client_table(summaries: list[dict[str, Any]], metric: str) -> str:
    names = summaries[0]["clients"]
    head = "<tr><th>strategy</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    rows = []
    for s in summaries:
        values = [s["final"][n][metric] for n in names]
        worst = int(np.argmax(values) if metric == "perplexity" else np.argmin(values))
        cells = "".join(
            f'<td class="{"worst" if k == worst else ""}">{v:.3f}</td>' for k, v in enumerate(values)
        )
        rows.append(f"<tr><td>{html.escape(s['strategy'])}</td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _facts_table(facts: dict[str, Any]) -> str:
    rows = [
        f"<tr><td>{html.escape(name)}</td><td>{info['rows']}</td>"
        f"<td>{html.escape(', '.join(f'{k} {v:.2f}' for k, v in info['held'].items()))}</td></tr>"
        for name, info in facts["clients"].items()
    ]
    return (
        "<table><tr><th>client</th><th>rows</th><th>category proportions held</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def render_collab_html(results: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML page."""
    summaries, facts = results["strategies"], results["facts"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fairlora collab</title>",
        f"<style>{_STYLE}</style>",
        "</head><body><h1>Collaborative fine-tuning</h1>",
        f"<p>model {html.escape(facts['model'])}, method {html.escape(facts['method'])}, task "
        f"{html.escape(facts['task'])}, engine {html.escape(facts['engine'])}, "
        f"{len(facts['clients'])} clients, "
        f"split {html.escape(facts['collab']['split'])} of {html.escape(facts['collab']['corpus'])}.</p>",
        "<h2>Strategies</h2>",
        "<p>Metrics of each client on its own validation data after the last aggregation; "
        "bytes count the trainable tensors sent and received (uplink + downlink).</p>",
        _strategy_table(summaries),
        "<h2>Per-client perplexity</h2><p>The worst client of each strategy is marked.</p>",
        _client_table(summaries, "perplexity"),
        "<h2>Per-client accuracy</h2>",
        _client_table(summaries, "accuracy"),
        _img(perplexity_curves(summaries), "perplexity per round"),
        "<h2>Trust matrices over rounds</h2><p>Row i: the weights client i gives to each client j.</p>",
    ]
    for s in summaries:
        parts.append(f"<h3>{html.escape(s['strategy'])}</h3>")
        parts.append(_img(trust_heatmaps(s), f"trust of {s['strategy']}"))
    parts += ["<h2>Clients</h2>", _facts_table(facts), "</body></html>"]
    return "\n".join(parts)


def write_collab_report(collab_dir: Path) -> Path:
    """Write report.html next to collab.json; returns its path."""
    path = Path(collab_dir) / REPORT_FILE
    write_text_atomic(path, render_collab_html(load_collab_results(collab_dir)))
    return path
