"""Everything a collab run decides before it writes: the validated config, splits and client configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from fairlora.collab.client import Client, ClientData, make_client
from fairlora.collab.clientdata import client_frame, encode_frames, reference_frame
from fairlora.collab.config import CollabConfig
from fairlora.collab.corpora import load_corpus
from fairlora.collab.engine import Session
from fairlora.collab.runfolders import client_run_config
from fairlora.collab.splits import Allocation, allocate, check_proportions
from fairlora.config import RunConfig
from fairlora.errors import ConfigError, DataError
from fairlora.methods import validate_method
from fairlora.models import LoadedModel, linear_module_names, load_model, model_type
from fairlora.tasks import get_task

UNSHARED_METHODS = {
    "full": "it trains every base weight",
    "none": "it trains no adapter",
}


@dataclass
class Plan:
    """A validated collab run: config, the allocation, each client's frame and run config per strategy."""

    cfg: CollabConfig
    allocation: Allocation
    frames: list[pd.DataFrame]
    client_runs: dict[str, list[RunConfig]]

    @property
    def num_labels(self) -> int:
        """Classes of the shared head (categories), at least 2."""
        return max(len(self.allocation.categories), 2)


def check_method(cfg: CollabConfig) -> None:
    """ConfigError for methods whose clients cannot share one base model."""
    why = UNSHARED_METHODS.get(cfg.run.method)
    if why:
        raise ConfigError(
            f"method: {cfg.run.method!r} cannot give each client its own adapter on one shared base ({why}); "
            f"use an adapter method (lora, pissa, ba-lora, vera, aflora)"
        )


def make_plan(cfg: CollabConfig, categories: list[str] | None = None) -> Plan:
    """Validate everything that needs no model weights and split the data; writes nothing."""
    check_method(cfg)
    collab = cfg.collab
    val_rows = collab.examples_per_client * collab.val_share
    if val_rows < 1 or collab.examples_per_client - val_rows < 1:
        raise ConfigError(
            f"collab.val_share={collab.val_share} leaves no train or validation row of "
            f"{collab.examples_per_client}; raise collab.examples_per_client"
        )
    corpus = load_corpus(collab.corpus, collab.data_path, cfg.run.seed)
    allocation = allocate(
        corpus,
        collab.split,
        collab.clients,
        collab.examples_per_client,
        alpha=collab.dirichlet_alpha,
        reference=collab.reference_examples,
        categories=collab.categories or categories,
        seed=cfg.run.seed,
    )
    for split in allocation.clients:
        check_proportions(split)
    classifies = get_task(cfg.run.task).classifies
    frames = [client_frame(s, allocation.categories, classifies) for s in allocation.clients]
    runs = {
        strategy: [
            client_run_config(cfg.run, cfg.run_dir.resolve(), strategy, s.name, collab.val_share)
            for s in allocation.clients
        ]
        for strategy in collab.strategies
    }
    plan = Plan(cfg, allocation, frames, runs)
    names = linear_module_names(cfg.run.model, cfg.run.task, plan.num_labels)  # a bad model.name fails here
    validate_method(client_steps(cfg), names, model_type(cfg.run.model))
    return plan


def client_steps(cfg: CollabConfig) -> RunConfig:
    """The run config with train.max_steps = collab.iterations: the optimizer steps each client takes."""
    run = cfg.run.model_copy(deep=True)
    run.train.max_steps = cfg.collab.iterations
    return run


def encode_clients(plan: Plan, tokenizer: object) -> list[ClientData]:
    """Each client's train/validation split (seeded like `load_task_data`) encoded for the task."""
    first = next(iter(plan.client_runs.values()))
    data = [
        encode_frames(run, tokenizer, frame, run.seed) for run, frame in zip(first, plan.frames, strict=True)
    ]
    for run, part in zip(first, data, strict=True):
        if not part.val_examples or not part.train_examples:
            raise DataError(f"{run.name}: no validation or train rows; raise collab.examples_per_client")
    return data


def load_shared_model(plan: Plan) -> LoadedModel:
    """The ONE base model every client of this process shares."""
    return load_model(plan.cfg.run.model, plan.cfg.run.task, plan.num_labels)


def reference_batches(plan: Plan, loaded: LoadedModel) -> list[dict[str, torch.Tensor]]:
    """The shared public reference rows, encoded and collated in eval.batch_size batches."""
    run = plan.cfg.run
    task = get_task(run.task)
    frame = reference_frame(plan.allocation.reference, task.classifies)
    examples = task.encode(frame, loaded.tokenizer, run.model.max_length)
    collate = task.collator(loaded.tokenizer)
    size = run.eval.batch_size
    return [collate(examples[i : i + size]) for i in range(0, len(examples), size)]


def build_session(
    plan: Plan, loaded: LoadedModel, data: list[ClientData], indices: list[int] | None = None
) -> Session:
    """Clients (all, or `indices`) as named adapters on `loaded`, each with its own optimizer."""
    cfg = plan.cfg
    chosen = range(len(data)) if indices is None else indices
    clients: list[Client] = [
        make_client(cfg.run, loaded, i, data[i], cfg.collab.iterations, cfg.collab.shared_init)
        for i in chosen
    ]
    collate = get_task(cfg.run.task).collator(loaded.tokenizer)
    return Session(cfg, clients, plan.allocation, collate, reference_batches(plan, loaded))


def collab_file(cfg: CollabConfig) -> Path:
    """The resolved collab config inside the collab folder."""
    return cfg.run_dir / "collab.yaml"
