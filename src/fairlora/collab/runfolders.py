"""Per-client run folders: each client's adapter as a normal fairlora run that `fairlora audit` reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from fairlora.collab.client import Client
from fairlora.collab.clientdata import client_data_config
from fairlora.config import RunConfig, build_config
from fairlora.errors import RunDirError
from fairlora.metrics.utility import utility_table
from fairlora.runs import CONFIG_FILE, PREDICTIONS_FILE, RunResult, weights_dir
from fairlora.storage import write_dir_atomic, write_parquet_atomic, write_text_atomic
from fairlora.tasks.predict import predict_frame

CLIENT_DATA_DIR = "clients"
BOOTSTRAP_SEED = 0


def client_run_config(
    run: RunConfig, collab_dir: Path, strategy: str, client: str, val_share: float
) -> RunConfig:
    """The RunConfig of one client's run folder: `<collab>/<strategy>/<client>`, its own data file."""
    data_file = collab_dir / CLIENT_DATA_DIR / f"{client}.jsonl"
    data = client_data_config(data_file, val_share).model_dump()
    fields = run.model_dump() | {"name": client, "output_dir": str(collab_dir / strategy), "data": data}
    splits = [s for s in run.eval.splits if s != "val"] or ["test"]  # a client's validation rows = test
    fields["eval"] = fields["eval"] | {"splits": splits}
    return build_config(fields)


def write_client_data(collab_dir: Path, name: str, frame: pd.DataFrame) -> Path:
    """Write a client's rows (id, text, label, category groups) as JSON lines; returns the file."""
    path = collab_dir / CLIENT_DATA_DIR / f"{name}.jsonl"
    write_text_atomic(path, frame.to_json(orient="records", lines=True))
    return path


def write_client_files(cfg: RunConfig, files: dict[str, bytes]) -> Path:
    """A client's run folder from the files its ClientApp sent back, with this side's config.yaml."""
    run_dir = cfg.run_dir
    for relative, content in files.items():
        path = (run_dir / relative).resolve()
        if run_dir.resolve() not in path.parents:
            raise RunDirError(f"{cfg.name}: a client sent a file outside its run folder ({relative!r})")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(content)
        os.replace(partial, path)
    write_text_atomic(run_dir / CONFIG_FILE, cfg.to_yaml())
    return run_dir


def _predictions(
    cfg: RunConfig, client: Client, tokenizer: Any, groups: list[str]
) -> dict[str, pd.DataFrame]:
    frames = {"test": client.data.val, "train": client.data.train}
    frames = {split: frames[split] for split in cfg.eval.splits}
    return {
        split: predict_frame(
            client.setup.model,
            tokenizer,
            frame,
            cfg.task,
            cfg.model.max_length,
            cfg.eval.batch_size,
            split,
            groups,
            progress=False,
        )
        for split, frame in frames.items()
    }


def write_client_run(cfg: RunConfig, client: Client, tokenizer: Any, facts: dict[str, Any]) -> RunResult:
    """config.yaml, the adapter, predictions and results.json of one client after collaboration."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG_FILE, cfg.to_yaml())
    client.setup.activate()
    write_dir_atomic(weights_dir(run_dir, cfg.method), client.setup.save)
    groups = [c for c in client.data.val.columns if c.startswith("cat_")]
    tables = _predictions(cfg, client, tokenizer, groups)
    write_parquet_atomic(run_dir / PREDICTIONS_FILE, pd.concat(tables.values(), ignore_index=True))
    splits = {
        split: utility_table(
            table, groups, min_group_size=cfg.eval.min_group_size, n_boot=cfg.eval.n_boot, seed=BOOTSTRAP_SEED
        )
        for split, table in tables.items()
    }
    method_facts = client.setup.facts() if client.setup.facts is not None else {}  # AFLoRA's freeze steps
    result = RunResult(
        cfg.name,
        cfg.method,
        cfg.model.name,
        Path(cfg.data.name).stem,
        cfg.task,
        splits,
        facts | method_facts,
        run_dir,
    )
    result.save(run_dir)
    return result
