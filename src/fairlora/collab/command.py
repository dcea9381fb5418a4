"""`fairlora collab CONFIG`: validate, split, train every strategy, write client runs, collab.json, report."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from transformers import set_seed

from fairlora.collab.client import reset_client
from fairlora.collab.config import CollabConfig, build_collab_config, load_collab_config
from fairlora.collab.engine import Session, aggregation_iterations, run_iterations
from fairlora.collab.plan import (
    Plan,
    build_session,
    collab_file,
    encode_clients,
    load_shared_model,
    make_plan,
)
from fairlora.collab.results import load_summary, save_collab_results, save_summary, strategy_summary
from fairlora.collab.runfolders import write_client_data, write_client_run
from fairlora.collab.state import Snapshot, load_state, restore_snapshot, save_state, take_snapshot
from fairlora.errors import ConfigError, RunDirError
from fairlora.storage import write_text_atomic


def check_run_dir(cfg: CollabConfig, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a collab folder; on --resume the saved config must match."""
    folder = cfg.run_dir
    if overwrite or not (folder.exists() and any(folder.iterdir())):
        return
    if not resume:
        raise RunDirError(
            f"{folder} already holds a collab run; pass --resume to continue it, --overwrite to replace it, "
            f"or choose another name (name=...)"
        )
    check_same_config(cfg)


def check_same_config(cfg: CollabConfig) -> None:
    """--resume: ConfigError unless `cfg` is the config saved in the collab folder (when one is saved)."""
    saved = collab_file(cfg)
    if saved.is_file():
        previous = build_collab_config(yaml.safe_load(saved.read_text()) or {})
        ignore = {"train": {"progress_bar"}}
        if previous.run.model_dump(exclude=ignore) != cfg.run.model_dump(exclude=ignore) or (
            previous.collab != cfg.collab
        ):
            raise ConfigError(
                f"--resume: the config differs from {saved}; use the same config or --overwrite"
            )


def prepare_folder(plan: Plan, overwrite: bool) -> None:
    """(Re)create the collab folder: resolved config and each client's data file."""
    cfg = plan.cfg
    if overwrite and cfg.run_dir.exists():
        shutil.rmtree(cfg.run_dir)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(collab_file(cfg), cfg.to_yaml())
    for split, frame in zip(plan.allocation.clients, plan.frames, strict=True):
        write_client_data(cfg.run_dir.resolve(), split.name, frame)


def warm_start(session: Session, warm: list[Snapshot]) -> int:
    """Clients after the local warm-up, which every strategy shares: run it once, then restore it."""
    cfg = session.cfg
    first = aggregation_iterations(
        cfg.collab.iterations, cfg.collab.pretraining_rounds, cfg.collab.trust_freq
    )
    start = first[0] if first else cfg.collab.iterations
    if warm:
        restore_snapshot(session.clients, warm[0])
        return start
    for client in session.clients:
        reset_client(client, cfg.run, cfg.collab.iterations, cfg.collab.shared_init)
    run_iterations(session, "warm-up", 0, [], lambda *_: None, cfg.run.train.progress_bar, stop=start)
    warm.append(take_snapshot(session.clients))
    return start


def run_strategy(
    plan: Plan, session: Session, strategy: str, resume: bool, tokenizer: Any, warm: list[Snapshot]
) -> dict[str, Any]:
    """Train all clients under one strategy (continuing from its saved state), then write client runs."""
    cfg = plan.cfg
    folder = cfg.run_dir / strategy
    if resume and (done := load_summary(folder)) is not None:
        return done
    restored = load_state(folder, session.clients) if resume else None
    start, rounds = (restored[0] + 1, restored[1]) if restored else (warm_start(session, warm), [])
    progress = cfg.run.train.progress_bar
    run_iterations(
        session, strategy, start, rounds, lambda it, rs: save_state(folder, session.clients, it, rs), progress
    )
    names = [c.name for c in session.clients]
    summary = strategy_summary(strategy, names, rounds, [c.size for c in session.clients])
    for client, run in zip(session.clients, plan.client_runs[strategy], strict=True):
        facts = {"collab_strategy": strategy, **summary["final"][client.name], "train_rows": client.size}
        if cfg.collab.client_runs:
            write_client_run(run, client, tokenizer, facts)
    save_summary(folder, summary)
    return summary


def run_facts(plan: Plan) -> dict[str, Any]:
    """Clients, their claimed and held category proportions, and the protocol settings."""
    return {
        "categories": plan.allocation.categories,
        "clients": {
            s.name: {"rows": len(s.rows), "claimed": s.claimed, "held": s.held}
            for s in plan.allocation.clients
        },
        "engine": plan.cfg.engine,
        "collab": plan.cfg.collab.model_dump(mode="json"),
        "model": plan.cfg.run.model.name,
        "method": plan.cfg.run.method,
        "task": plan.cfg.run.task,
    }


def print_summaries(console: Console, summaries: list[dict[str, Any]]) -> None:
    """A terminal table: one row per strategy."""
    table = Table(title="collab: final per-client validation metrics")
    for column in ("strategy", "mean ppl", "worst ppl", "worst client", "gap", "mean acc", "MB exchanged"):
        table.add_column(column)
    for s in summaries:
        table.add_row(
            s["strategy"],
            f"{s['mean_perplexity']:.3f}",
            f"{s['worst_perplexity']:.3f}",
            s["worst_client"],
            f"{s['client_gap_perplexity']:.3f}",
            f"{s['mean_accuracy']:.3f}",
            f"{s['bytes_total'] / 1e6:.2f}",
        )
    console.print(table)


def run_collab(cfg: CollabConfig, *, overwrite: bool, resume: bool, console: Console) -> list[dict[str, Any]]:
    """Run every configured strategy; returns their summaries (also in collab.json and report.html)."""
    check_run_dir(cfg, overwrite, resume)
    plan = make_plan(cfg)
    if cfg.engine == "flower":
        from fairlora.collab.flower_app import check_flower

        check_flower(cfg)
    set_seed(cfg.run.seed)
    loaded = load_shared_model(plan)
    data = encode_clients(plan, loaded.tokenizer)  # may raise DataError: still nothing written
    prepare_folder(plan, overwrite)
    if cfg.engine == "flower":
        from fairlora.collab.flower_sim import run_flower

        summaries = run_flower(plan, loaded, data, resume=resume, console=console)
    else:
        session = build_session(plan, loaded, data)
        warm: list[Snapshot] = []  # the local warm-up, run once for all strategies
        summaries = [
            run_strategy(plan, session, s, resume, loaded.tokenizer, warm) for s in cfg.collab.strategies
        ]
    save_collab_results(cfg.run_dir, summaries, run_facts(plan))
    from fairlora.collab.report import write_collab_report

    report = write_collab_report(cfg.run_dir)
    print_summaries(console, summaries)
    console.print(
        f"client runs: {cfg.run_dir}/<strategy>/<client> (fairlora audit reads them); report: {report}"
    )
    return summaries


def run_command(
    config: Path, overrides: list[str], *, overwrite: bool, resume: bool, console: Console
) -> None:
    """The `fairlora collab` command: load the YAML (+ key=value overrides) and run it."""
    if overwrite and resume:
        raise ConfigError("pass either --overwrite or --resume, not both")
    cfg = load_collab_config(config, overrides)
    run_collab(cfg, overwrite=overwrite, resume=resume, console=console)


def write_flower_app(config: Path, overrides: list[str], folder: Path, *, console: Console) -> Path:
    """`fairlora collab CONFIG --flower-app DIR`: the run as a Flower App that `flwr run DIR` starts."""
    from fairlora.collab.flower_appdir import write_app

    cfg = load_collab_config(config, overrides)
    make_plan(cfg)  # a bad model, method or split fails here, before anything is written
    write_app(cfg, folder)
    console.print(
        f"Flower App: {folder}/pyproject.toml; run it with\n"
        f'  flwr run {folder} <federation> --stream [--run-config "collab.iterations=80 resume=true"]\n'
        f"the ServerApp writes the run folder {cfg.run_dir.resolve()}"
    )
    return folder
