"""What a strategy produced: per-client final metrics, the client gap, bytes, and its round history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fairlora.collab.engine import RoundRecord
from fairlora.errors import RunDirError
from fairlora.storage import write_text_atomic

SUMMARY_FILE = "summary.json"
COLLAB_RESULTS = "collab.json"


def strategy_summary(
    strategy: str, names: list[str], rounds: list[RoundRecord], sizes: list[int]
) -> dict[str, Any]:
    """Final per-client metrics with mean, worst and gap, bytes exchanged, and every round's record."""
    if not rounds:
        raise RunDirError(
            f"{strategy}: no aggregation round ran; raise collab.iterations or lower pretraining_rounds"
        )
    final = rounds[-1].metrics
    ppl = np.array([m["perplexity"] for m in final])
    acc = np.array([m["accuracy"] for m in final])
    return {
        "strategy": strategy,
        "clients": names,
        "sizes": sizes,
        "final": {name: m for name, m in zip(names, final, strict=True)},
        "mean_perplexity": float(ppl.mean()),
        "worst_perplexity": float(ppl.max()),
        "worst_client": names[int(ppl.argmax())],
        "client_gap_perplexity": float(ppl.max() - ppl.min()),
        "mean_accuracy": float(acc.mean()),
        "worst_accuracy": float(acc.min()),
        "bytes_total": int(sum(r.bytes["bytes_total"] for r in rounds)),
        "bytes_per_round": int(np.mean([r.bytes["bytes_total"] for r in rounds])),
        "rounds": [r.to_dict() for r in rounds],
    }


def save_summary(strategy_dir: Path, summary: dict[str, Any]) -> None:
    """Write `<strategy>/summary.json` atomically (a finished strategy)."""
    write_text_atomic(strategy_dir / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")


def load_summary(strategy_dir: Path) -> dict[str, Any] | None:
    """A finished strategy's summary, or None."""
    path = strategy_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path} is corrupt ({exc}); rerun with --overwrite") from None


def save_collab_results(collab_dir: Path, summaries: list[dict[str, Any]], facts: dict[str, Any]) -> Path:
    """collab.json: every strategy's summary plus run facts (clients, splits, proportions)."""
    path = collab_dir / COLLAB_RESULTS
    write_text_atomic(path, json.dumps({"facts": facts, "strategies": summaries}, indent=1) + "\n")
    return path


def load_collab_results(collab_dir: Path) -> dict[str, Any]:
    """Read collab.json of a finished collab run."""
    path = Path(collab_dir) / COLLAB_RESULTS
    if not path.is_file():
        raise RunDirError(f"{path} not found: the collab run has not finished; rerun it with --resume")
    return json.loads(path.read_text())
