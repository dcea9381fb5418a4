"""A client: a named adapter on the ONE shared base, its own AdamW + LR schedule, data and RNG stream."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers.trainer_pt_utils import LengthGroupedSampler

from fairlora.config import RunConfig
from fairlora.methods import MethodSetup, apply_method
from fairlora.models import LoadedModel
from fairlora.tasks import IGNORE_INDEX, get_task
from fairlora.training.step import StepState, make_optimizer, train_step

State = dict[str, torch.Tensor]


@dataclass
class ClientData:
    """A client's train and validation frames and their encoded examples."""

    train: pd.DataFrame
    val: pd.DataFrame
    train_examples: list[dict[str, Any]]
    val_examples: list[dict[str, Any]]


@dataclass
class Client:
    """One participant: its adapter (`setup`), optimizer/schedule (`step_state`), data and RNG state."""

    index: int
    name: str
    setup: MethodSetup
    step_state: StepState
    data: ClientData
    rng: torch.Tensor
    initial: State = field(default_factory=dict)
    initial_extra: tuple[State, dict[str, Any]] = field(default_factory=lambda: ({}, {}))
    own_keys: dict[str, str] = field(default_factory=dict, repr=False)
    last_good: State = field(default_factory=dict, repr=False)  # kept when a round excludes this client

    def get_state(self) -> State:
        """The trainable tensors, keyed without the adapter name (so clients' keys match)."""
        return {shared_key(k, self.name): v for k, v in self.setup.trainable_state().items()}

    def set_state(self, state: State) -> None:
        """Load tensors keyed as `get_state` gives them (this client's or another's)."""
        if not self.own_keys:  # shared key -> this adapter's key; fixed, so worked out once
            self.own_keys = {shared_key(k, self.name): k for k in self.setup.trainable_state()}
        own = self.own_keys
        self.setup.load_trainable_state({own.get(k, k): v for k, v in state.items()})

    def receive(self, mixture: State) -> None:
        """Take this client's personal mixture; tensors its method has frozen (AFLoRA) keep their values."""
        frozen = {shared_key(k, self.name) for k in self.setup.frozen_keys()}
        current = self.get_state() if frozen else {}
        self.set_state({k: current[k] if k in frozen else v for k, v in mixture.items()})

    @property
    def size(self) -> int:
        """Number of training rows (FedAvg weights by it)."""
        return len(self.data.train_examples)


def shared_key(key: str, adapter_name: str) -> str:
    """A parameter key without a trailing adapter name (VeRA's lambdas end with it)."""
    suffix = "." + adapter_name
    return key[: -len(suffix)] if key.endswith(suffix) else key


def client_seed(seed: int, index: int, shared_init: bool) -> int:
    """The seed a client's adapter init and dropout stream start from."""
    return seed if shared_init else seed + 1 + index


def rng_state(seed: int) -> torch.Tensor:
    """The CPU RNG state a client's dropout stream starts from (independent of the other clients)."""
    return torch.Generator().manual_seed(seed + 7919).get_state()


def new_step_state(setup: MethodSetup, run: RunConfig, total_steps: int) -> StepState:
    """A fresh AdamW + LR schedule for `setup` (never shared, never aggregated)."""
    setup.activate()
    optimizer, scheduler = make_optimizer(setup, run.train, total_steps)
    return StepState(
        setup, optimizer, scheduler, total_steps, run.train.max_grad_norm, precision=run.train.precision
    )


def make_client(
    run: RunConfig, loaded: LoadedModel, index: int, data: ClientData, total_steps: int, shared_init: bool
) -> Client:
    """Add client `index`'s adapter to the shared base (seeded init) with its own optimizer."""
    seed = client_seed(run.seed, index, shared_init)
    torch.manual_seed(seed)
    name = f"client-{index}"
    setup = apply_method(run, loaded, name)
    setup.model.train()
    state = new_step_state(setup, run, total_steps)
    client = Client(index, name, setup, state, data, rng_state(seed))
    client.initial = client.get_state()
    client.last_good = client.initial
    client.initial_extra = setup.method_state()
    return client


def reset_client(client: Client, run: RunConfig, total_steps: int, shared_init: bool) -> None:
    """Back to the initial adapter with a fresh optimizer, schedule and RNG (the next strategy starts)."""
    client.setup.load_method_state(*client.initial_extra)  # before the optimizer: it sets what trains
    client.set_state(client.initial)
    client.last_good = client.initial
    client.step_state = new_step_state(client.setup, run, total_steps)
    client.rng = rng_state(client_seed(run.seed, client.index, shared_init))


@functools.lru_cache(maxsize=8)
def _order(
    seed: int, index: int, epoch: int, count: int, lengths: tuple[int, ...] | None = None, group: int = 1
) -> np.ndarray:
    rng = np.random.default_rng([seed % 2**32, index, epoch])
    if lengths is None:
        return rng.permutation(count)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return np.asarray(list(LengthGroupedSampler(group, lengths=list(lengths), generator=generator)))


def batch_indices(
    seed: int, index: int, batch: int, batch_size: int, count: int, lengths: tuple[int, ...] | None = None
) -> list[int]:
    """Rows of global batch number `batch`: consecutive slices of a seeded permutation per epoch.

    With `lengths` (train.group_by_length) the permutation is HF's LengthGroupedSampler's, as in training.
    """
    rows = []
    for position in range(batch * batch_size, (batch + 1) * batch_size):
        epoch, offset = divmod(position, count)
        rows.append(int(_order(seed, index, epoch, count, lengths, batch_size)[offset]))
    return rows


def local_step(client: Client, run: RunConfig, collate: Any) -> dict[str, float]:
    """One optimizer step on the client's own data (train.grad_accum micro-batches), its RNG restored."""
    accum, size = run.train.grad_accum, run.train.batch_size
    step = client.step_state.step
    micro = []
    lengths = (
        tuple(len(row["input_ids"]) for row in client.data.train_examples)
        if run.train.group_by_length
        else None
    )
    for m in range(accum):
        rows = batch_indices(run.seed, client.index, step * accum + m, size, client.size, lengths)
        micro.append(collate([client.data.train_examples[r] for r in rows]))
    torch.set_rng_state(client.rng)
    losses = train_step(client.step_state, micro)
    client.rng = torch.get_rng_state()
    return losses


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode, then back; a no-op when it already is (no walk over every module)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


@torch.inference_mode()
def evaluate_examples(
    model: nn.Module, examples: list[dict[str, Any]], collate: Any, task: str, batch_size: int
) -> dict[str, float]:
    """loss, perplexity and accuracy (next-token for causal_lm, class for classification) on `examples`."""
    with eval_mode(model):
        return _evaluate(model, examples, collate, task, batch_size)


def _evaluate(
    model: nn.Module, examples: list[dict[str, Any]], collate: Any, task: str, batch_size: int
) -> dict[str, float]:
    nll, correct, count = 0.0, 0, 0
    causal = not get_task(task).classifies
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size])
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        if causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        mask = labels != IGNORE_INDEX
        picked, targets = logits[mask], labels[mask]
        nll += float(torch.nn.functional.cross_entropy(picked, targets, reduction="sum"))
        correct += int((picked.argmax(-1) == targets).sum())
        count += int(mask.sum())
    loss = nll / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "accuracy": correct / max(count, 1)}


def evaluate_client(
    client: Client, run: RunConfig, collate: Any, limit: int | None = None
) -> dict[str, float]:
    """The client's metrics on its OWN validation data."""
    client.setup.activate()
    examples = client.data.val_examples
    if limit is not None:
        examples = examples[: limit * run.eval.batch_size]
    return evaluate_examples(client.setup.model, examples, collate, run.task, run.eval.batch_size)


@torch.inference_mode()
def reference_logits(
    client: Client, batches: list[dict[str, torch.Tensor]], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k logits of the client's model at every real position of the shared reference batches."""
    from fairlora.collab.trust import top_logits

    client.setup.activate()
    model = client.setup.model
    values, indices = [], []
    with eval_mode(model):
        for batch in batches:
            inputs = {key: value for key, value in batch.items() if key != "labels"}
            logits = model(**inputs).logits
            mask = inputs["attention_mask"] if logits.dim() == 3 else torch.ones(logits.shape[0])
            top = top_logits(logits, mask, k)
            values.append(top[0])
            indices.append(top[1])
    return torch.cat(values), torch.cat(indices)
