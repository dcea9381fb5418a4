"""What the long quality benchmarks share: resumable units, a time budget, paired t-intervals, verdicts.

A benchmark is a list of units (part, variant, seed). Each finished unit is appended to a JSONL file
next to the --out JSON (`<out>.units.jsonl`), whose first line holds the settings it was run with;
`--resume` skips the units found there and refuses a file written with other settings. A `Budget`
(`--max-minutes`) stops before a unit that would not fit, estimated from the units done so far.
`--shard K/N` runs every N-th planned unit from the K-th: N invocations with K = 0..N-1 share one
units file and split the work between them (e.g. two 1-thread processes on two cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy import stats

# settings that do not change a unit's figures: a resumed run may change them
RUNTIME_SETTINGS = ("resume", "max_minutes", "threads", "out", "output_dir", "shard")


def units_file(out: str | Path) -> Path:
    """The JSONL of finished units that belongs to the --out JSON."""
    out = Path(out)
    return out.with_name(out.stem + ".units.jsonl")


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` -> (K, N): this invocation runs the planned units whose index is K modulo N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/2")
    return index, count


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed invocation must share with the stored ones (JSON round-tripped)."""
    kept = {key: value for key, value in settings.items() if key not in RUNTIME_SETTINGS}
    return json.loads(json.dumps(kept))


class UnitStore:
    """Finished units on disk: one JSON line each, written as soon as the unit finishes."""

    def __init__(self, path: Path, settings: dict[str, Any], resume: bool) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        self.wanted = comparable(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"settings": self.wanted}) + "\n"
        if not resume:
            path.write_text(header)
            return
        try:  # exclusive: a shard starting at the same moment keeps the other's header
            with path.open("x") as handle:
                handle.write(header)
        except FileExistsError:
            self.refresh()

    def refresh(self) -> None:
        """Read the units finished so far, by this invocation or another shard."""
        lines = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        stored = lines[0].get("settings") if lines else None
        if stored != self.wanted:
            changed = sorted(
                k for k in {*(stored or {}), *self.wanted} if (stored or {}).get(k) != self.wanted.get(k)
            )
            raise SystemExit(
                f"--resume: {self.path} was written with other settings (differ: {', '.join(changed)}); "
                f"resume with the same settings, or run without --resume to start over"
            )
        self.done = {line["unit"]: line for line in lines[1:]}

    def add(self, unit: str, record: dict[str, Any]) -> dict[str, Any]:
        """Persist one finished unit (appended and flushed to disk at once)."""
        line = {"unit": unit, **record}
        with self.path.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.done[unit] = line
        return line


class Budget:
    """--max-minutes: start a unit only if the time spent plus its estimated duration fits."""

    def __init__(self, max_minutes: float | None) -> None:
        self.max_seconds = None if max_minutes is None else max_minutes * 60
        self.started = time.perf_counter()
        self.stopped: str | None = None

    def elapsed(self) -> float:
        """Seconds since this invocation started."""
        return time.perf_counter() - self.started

    def allows(self, estimate_s: float | None) -> bool:
        """Whether a unit estimated at `estimate_s` seconds (None: unknown, taken as 0) still fits."""
        if self.max_seconds is None:
            return True
        if self.elapsed() + (estimate_s or 0.0) <= self.max_seconds:
            return True
        self.stopped = (
            f"--max-minutes {self.max_seconds / 60:g}: {self.elapsed() / 60:.1f} min spent, the next unit "
            f"needs about {(estimate_s or 0.0) / 60:.1f} min; rerun with --resume to continue"
        )
        return False


def estimate(records: Sequence[dict[str, Any]]) -> float | None:
    """The mean duration of finished units (None before the first)."""
    seconds = [r["seconds"] for r in records if r.get("seconds") is not None]
    return statistics.fmean(seconds) if seconds else None


def t_interval(
    values: Sequence[float | None], bounds: tuple[float, float] = (-math.inf, math.inf)
) -> dict[str, Any]:
    """Mean with a 95% t-interval over seeds, clipped to `bounds` (`ci` None from fewer than two values)."""
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return {"mean": None, "ci": None, "n": 0}
    mean = statistics.fmean(clean)
    if len(clean) < 2:
        return {"mean": mean, "ci": None, "n": 1}
    half = stats.t.ppf(0.975, len(clean) - 1) * statistics.stdev(clean) / math.sqrt(len(clean))
    return {"mean": mean, "ci": [max(mean - half, bounds[0]), min(mean + half, bounds[1])], "n": len(clean)}


def paired(a: dict[Any, float | None], b: dict[Any, float | None], scale: float = 1.0) -> dict[str, Any]:
    """a - b paired by seed (seeds both have), times `scale`, with its 95% t-interval."""
    seeds = [s for s in a if s in b and a[s] is not None and b[s] is not None]
    return {**t_interval([(a[s] - b[s]) * scale for s in seeds]), "seeds": seeds}


def greater_verdict(diff: dict[str, Any]) -> bool | None:
    """Rule "a > b": True when the CI of a - b lies above 0, False when below 0, None when it spans 0."""
    if diff.get("ci") is None:
        return None
    low, high = diff["ci"]
    return True if low > 0 else False if high < 0 else None


def within_verdict(diff: dict[str, Any], margin: float) -> bool | None:
    """Rule "|a - b| <= margin": True when the CI lies in [-margin, margin], False when wholly outside."""
    if diff.get("ci") is None:
        return None
    low, high = diff["ci"]
    if -margin <= low and high <= margin:
        return True
    return False if low > margin or high < -margin else None


def fmt_ci(figure: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    """'mean [low, high]' (or the mean alone, or n/a)."""
    if figure.get("mean") is None:
        return "n/a"
    text = f"{figure['mean'] * scale:.{digits}f}"
    if figure.get("ci") is None:
        return text
    low, high = (v * scale for v in figure["ci"])
    return f"{text} [{low:.{digits}f}, {high:.{digits}f}]"


def verdict_word(confirmed: bool | None) -> str:
    """The README wording of a verdict."""
    return {True: "confirmed", False: "not confirmed (contradicted)", None: "undecided"}[confirmed]


def claims_markdown(claims: list[dict[str, Any]]) -> str:
    """The README table rows of the claims: claim | setting | result (mean [CI]) | verdict."""
    lines = ["| claim | setting | result (mean [95% CI]) | here |", "|---|---|---|---|"]
    for claim in claims:
        result = f"{fmt_ci(claim['difference'], claim.get('scale', 1.0))} {claim.get('unit', '')}".strip()
        lines.append(
            f"| {claim['claim']} | {claim['setting']} | {result} | {verdict_word(claim['confirmed'])} |"
        )
    return "\n".join(lines)


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write JSON through a temporary file and a rename (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    temporary.replace(path)
    return path
