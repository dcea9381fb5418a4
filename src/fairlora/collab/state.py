"""Resume: after every round each client's adapter, AdamW, LR schedule and RNG go to disk (safetensors +
JSON, no pickle), with the round history; a killed run continues from its last completed round."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fairlora.collab.client import Client
from fairlora.collab.engine import RoundRecord
from fairlora.errors import RunDirError
from fairlora.storage import write_dir_atomic

STATE_DIR = "state"
PROGRESS_FILE = "progress.json"
ClientState = tuple[dict[str, torch.Tensor], dict[str, Any]]  # client_tensors: tensors and JSON facts


def _flatten_optimizer(optimizer: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    saved = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, values in saved["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{name}"] = value.contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": saved["param_groups"], "scalars": scalars}


def client_tensors(client: Client) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A client's whole training state as tensors (adapter, AdamW moments, RNG) and JSON-ready facts."""
    tensors = {f"w.{k}": v.contiguous() for k, v in client.get_state().items()}
    opt_tensors, opt_meta = _flatten_optimizer(client.step_state.optimizer)
    extra_tensors, extra_meta = client.setup.method_state()
    tensors |= opt_tensors | {f"x.{k}": v for k, v in extra_tensors.items()} | {"rng": client.rng}
    tensors |= {f"g.{k}": v.contiguous() for k, v in client.last_good.items()}  # after an exclusion
    meta = {
        "step": client.step_state.step,
        "optimizer": opt_meta,
        "scheduler": client.step_state.scheduler.state_dict(),
        "method_state": extra_meta,
    }
    return tensors, meta


def restore_client(client: Client, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of `client_tensors`."""
    extra = {k[2:]: v for k, v in tensors.items() if k.startswith("x.")}
    client.setup.load_method_state(extra, meta["method_state"])
    client.set_state({k[2:]: v for k, v in tensors.items() if k.startswith("w.")})
    _restore_optimizer(client, tensors, meta["optimizer"])
    client.step_state.scheduler.load_state_dict(meta["scheduler"])
    client.step_state.step = int(meta["step"])
    client.rng = tensors["rng"].to(torch.uint8)
    client.last_good = {k[2:]: v for k, v in tensors.items() if k.startswith("g.")} or client.initial


def save_states(
    strategy_dir: Path, states: dict[str, ClientState], iteration: int, rounds: list[RoundRecord]
) -> None:
    """Write each named client's state and the round history atomically (the whole folder or nothing):
    `<name>.safetensors` + `<name>.json` per client and progress.json, under `<strategy>/state/`."""

    def writer(folder: Path) -> None:
        for name, (tensors, meta) in states.items():
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / f"{name}.safetensors"))
            (folder / f"{name}.json").write_text(json.dumps(meta))
        progress = {"iteration": iteration, "rounds": [r.to_dict() for r in rounds]}
        (folder / PROGRESS_FILE).write_text(json.dumps(progress))

    write_dir_atomic(strategy_dir / STATE_DIR, writer)


def save_state(strategy_dir: Path, clients: list[Client], iteration: int, rounds: list[RoundRecord]) -> None:
    """Write every client's state and the round history atomically (the whole folder or nothing)."""
    save_states(strategy_dir, {c.name: client_tensors(c) for c in clients}, iteration, rounds)


def _restore_optimizer(client: Client, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    client.step_state.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _damaged(folder: Path, exc: Exception) -> RunDirError:
    return RunDirError(f"{folder}: the saved collab state is damaged ({exc}); rerun with --overwrite")


def read_states(
    strategy_dir: Path, names: list[str]
) -> tuple[int, list[RoundRecord], dict[str, ClientState]] | None:
    """The last completed round as saved: (iteration, rounds, state per client name), or None if none."""
    folder = strategy_dir / STATE_DIR
    if not (folder / PROGRESS_FILE).is_file():
        return None
    try:
        progress = json.loads((folder / PROGRESS_FILE).read_text())
        states = {
            name: (
                load_file(str(folder / f"{name}.safetensors")),
                json.loads((folder / f"{name}.json").read_text()),
            )
            for name in names
        }
        rounds = [RoundRecord.from_dict(r) for r in progress["rounds"]]
        return int(progress["iteration"]), rounds, states
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(folder, exc) from None


def load_state(strategy_dir: Path, clients: list[Client]) -> tuple[int, list[RoundRecord]] | None:
    """Restore clients from the last completed round: (iteration, rounds), or None when none was saved."""
    saved = read_states(strategy_dir, [c.name for c in clients])
    if saved is None:
        return None
    iteration, rounds, states = saved
    try:
        for client in clients:
            restore_client(client, *states[client.name])
    except (ValueError, KeyError) as exc:
        raise _damaged(strategy_dir / STATE_DIR, exc) from None
    return iteration, rounds


@dataclass
class Snapshot:
    """Every client's adapter, optimizer, schedule, step and RNG in memory (the shared local warm-up)."""

    states: list[dict[str, torch.Tensor]]
    optimizers: list[dict[str, Any]]
    schedulers: list[dict[str, Any]]
    steps: list[int]
    rngs: list[torch.Tensor]
    extras: list[tuple[dict[str, torch.Tensor], dict[str, Any]]]
    last_goods: list[dict[str, torch.Tensor]]


def take_snapshot(clients: list[Client]) -> Snapshot:
    """Copy every client's training state."""
    return Snapshot(
        [c.get_state() for c in clients],
        [copy.deepcopy(c.step_state.optimizer.state_dict()) for c in clients],
        [copy.deepcopy(c.step_state.scheduler.state_dict()) for c in clients],
        [c.step_state.step for c in clients],
        [c.rng.clone() for c in clients],
        [c.setup.method_state() for c in clients],
        [dict(c.last_good) for c in clients],
    )


def restore_snapshot(clients: list[Client], snapshot: Snapshot) -> None:
    """Put every client back to `snapshot` (its optimizer and schedule included)."""
    for k, client in enumerate(clients):
        client.setup.load_method_state(*snapshot.extras[k])
        client.set_state(snapshot.states[k])
        client.step_state.optimizer.load_state_dict(copy.deepcopy(snapshot.optimizers[k]))
        client.step_state.scheduler.load_state_dict(copy.deepcopy(snapshot.schedulers[k]))
        client.step_state.step = snapshot.steps[k]
        client.rng = snapshot.rngs[k].clone()
        client.last_good = dict(snapshot.last_goods[k])
