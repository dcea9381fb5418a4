"""The Flower ClientApp: one collab client per SuperNode (node config `partition-id`, optionally its own
`data-path`), keeping adapter, AdamW, LR schedule and RNG between rounds in `Context.state`. It needs no
file of the submitter: the resolved config comes in the first message, results go back in replies."""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fairlora.collab.client import (
    Client,
    evaluate_client,
    local_step,
    make_client,
    reference_logits,
    reset_client,
)
from fairlora.collab.clientdata import encode_frames
from fairlora.collab.config import CollabConfig, build_collab_config
from fairlora.collab.plan import Plan, load_shared_model, make_plan, reference_batches
from fairlora.collab.runfolders import client_run_config, write_client_run
from fairlora.collab.state import ClientState, client_tensors, restore_client
from fairlora.errors import ConfigError
from fairlora.models import LoadedModel
from fairlora.runs import CONFIG_FILE, weights_dir
from fairlora.tasks import get_task

logger = logging.getLogger(__name__)
PARTITION_KEY = "partition-id"  # node config: which client this SuperNode is
DATA_PATH_KEY = "data-path"  # node config (optional): this machine's corpus folder (collab.data_path)
CONFIG_STATE = "collab-config"  # Context.state: the resolved collab YAML the hello message brought


@dataclass
class NodeClient:
    """One live client with what it needs to train, evaluate and answer trust queries."""

    plan: Plan
    client: Client
    collate: Any
    tokenizer: Any
    reference: list[dict[str, torch.Tensor]]
    handled: int = 0  # messages this client has answered (matches Context.state when it is current)


def node_config(text: str, context: Context) -> CollabConfig:
    """The collab config the hello message brought, with this node's own `data-path` when it has one."""
    cfg = build_collab_config(yaml.safe_load(text) or {})
    if DATA_PATH_KEY in context.node_config:
        cfg.collab.data_path = str(context.node_config[DATA_PATH_KEY])
    return cfg


class ClientRuntimes:
    """The clients this process serves (a SuperNode's ClientApp process or one Ray actor of Flower's
    simulation engine), rebuilt from `Context.state` when another process answered their last message."""

    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}
        self._models: dict[str, LoadedModel] = {}
        self._live: dict[tuple[str, int], NodeClient] = {}

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return process_runtimes, ()  # sent to a Ray actor: that process's own runtimes

    def get(self, context: Context) -> NodeClient:
        """The live client of this node, current with `context.state`."""
        if CONFIG_STATE not in context.state:
            raise ConfigError("flower: this SuperNode got no collab config (the hello message comes first)")
        text = str(context.state[CONFIG_STATE]["yaml"])
        partition = int(context.node_config[PARTITION_KEY])
        key = (text, partition)
        node = self._live.get(key)
        if node is None:
            node = self._live[key] = self._build(text, partition, context)
        saved = int(context.state["client-meta"]["handled"]) if "client-meta" in context.state else 0
        if saved == 0:  # a new run: its first train message resets the client
            node.handled = 0
        elif node.handled != saved:
            meta = json.loads(str(context.state["client-meta"]["json"]))
            restore_client(node.client, context.state["client-state"].to_torch_state_dict(), meta)
            node.handled = saved
        return node

    def _build(self, text: str, partition: int, context: Context) -> NodeClient:
        if text not in self._plans:
            self._plans[text] = make_plan(node_config(text, context))
            self._models[text] = load_shared_model(self._plans[text])
        plan, loaded = self._plans[text], self._models[text]
        cfg = plan.cfg
        run = next(iter(plan.client_runs.values()))[partition]
        data = encode_frames(run, loaded.tokenizer, plan.frames[partition], run.seed)
        client = make_client(cfg.run, loaded, partition, data, cfg.collab.iterations, cfg.collab.shared_init)
        collate = get_task(cfg.run.task).collator(loaded.tokenizer)
        return NodeClient(plan, client, collate, loaded.tokenizer, reference_batches(plan, loaded))


@functools.cache
def process_runtimes() -> ClientRuntimes:
    """The one ClientRuntimes of this process (what a pickled ClientRuntimes becomes in a Ray actor)."""
    return ClientRuntimes()


def _persist(node: NodeClient, context: Context) -> ClientState:
    tensors, meta = client_tensors(node.client)
    node.handled += 1
    context.state["client-state"] = ArrayRecord(torch_state_dict=tensors)
    context.state["client-meta"] = ConfigRecord({"json": json.dumps(meta), "handled": node.handled})
    return tensors, meta


def state_records(state: ClientState) -> dict[str, ArrayRecord | ConfigRecord]:
    """A client's whole training state (`client_tensors`) as message records: tensors + JSON facts."""
    tensors, meta = state
    return {
        "client-state": ArrayRecord(torch_state_dict=tensors),
        "client-meta": ConfigRecord({"json": json.dumps(meta)}),
    }


def state_from(content: RecordDict) -> ClientState:
    """Inverse of `state_records`."""
    return content["client-state"].to_torch_state_dict(), json.loads(str(content["client-meta"]["json"]))


def _load_mixture(node: NodeClient, message: Message, aggregation: bool = False) -> None:
    """Take the personal mixture; at an aggregation round without one (this client was excluded) go
    back to the last good state. After a round the client's state is its last good one (as in process)."""
    if "mixture" in message.content:
        node.client.receive(message.content["mixture"].to_torch_state_dict())
    elif aggregation:
        node.client.set_state(node.client.last_good)
    if aggregation:
        node.client.last_good = node.client.get_state()


def handle_train(runtimes: ClientRuntimes, message: Message, context: Context) -> Message:
    """Reset (a new strategy) or load a mixture, take `steps` local steps, send the trainable tensors."""
    node = runtimes.get(context)
    settings = message.content["cfg"]
    cfg = node.plan.cfg
    if bool(settings["reset"]):
        reset_client(node.client, cfg.run, cfg.collab.iterations, cfg.collab.shared_init)
    _load_mixture(node, message)
    losses = [
        local_step(node.client, cfg.run, node.collate)["task_loss"] for _ in range(int(settings["steps"]))
    ]
    _persist(node, context)
    content = RecordDict(
        {
            "state": ArrayRecord(torch_state_dict=node.client.get_state()),
            "metrics": MetricRecord(
                {"loss": float(np.mean(losses)) if losses else 0.0, "size": node.client.size}
            ),
        }
    )
    return Message(content, reply_to=message)


def run_files(node: NodeClient, strategy: str, facts: dict[str, Any], adapter: bool) -> dict[str, bytes]:
    """This client's run folder (predictions, results.json, the adapter when asked) as relative path ->
    bytes, written in a temporary folder: the submitter writes it into its own run folder."""
    cfg = node.plan.cfg
    with tempfile.TemporaryDirectory(prefix="fairlora-client-") as tmp:
        run = client_run_config(cfg.run, Path(tmp), strategy, node.client.name, cfg.collab.val_share)
        write_client_run(run, node.client, node.tokenizer, facts)
        skipped = {run.run_dir / CONFIG_FILE} | (
            {weights_dir(run.run_dir, run.method)} if not adapter else set()
        )
        return {
            str(path.relative_to(run.run_dir)): path.read_bytes()
            for path in sorted(run.run_dir.rglob("*"))
            if path.is_file() and not any(path == s or s in path.parents for s in skipped)
        }


def handle_evaluate(runtimes: ClientRuntimes, message: Message, context: Context) -> Message:
    """Load this client's personal mixture, evaluate on its own validation data; the final evaluation
    sends back this client's run folder."""
    node = runtimes.get(context)
    settings = message.content["cfg"]
    cfg = node.plan.cfg
    _load_mixture(node, message, aggregation=bool(settings["checkpoint"]))
    metrics = evaluate_client(node.client, cfg.run, node.collate, cfg.collab.eval_batches)
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if bool(settings["final"]) and cfg.collab.client_runs:
        facts = {"collab_strategy": str(settings["strategy"]), **json.loads(str(settings["final_metrics"]))}
        facts |= {"engine": "flower", "train_rows": node.client.size}
        files = run_files(node, str(settings["strategy"]), facts, cfg.flower.return_adapters)
        content["files"] = ConfigRecord(files)  # type: ignore[arg-type]
    state = _persist(node, context)
    if bool(settings["checkpoint"]):  # after an aggregation round: the ServerApp saves it for --resume
        for key, record in state_records(state).items():
            content[key] = record
    return Message(content, reply_to=message)


def handle_hello(message: Message, context: Context) -> Message:
    """Keep the collab config the ServerApp sent; answer with this node's partition and versions."""
    from fairlora.collab.flower_appdir import versions

    settings = message.content["cfg"]
    context.state[CONFIG_STATE] = ConfigRecord({"yaml": str(settings["config"])})
    partition = int(context.node_config[PARTITION_KEY])
    return Message(
        RecordDict({"hello": ConfigRecord({"partition": partition} | versions())}), reply_to=message
    )


def handle_restore(node: NodeClient, message: Message, context: Context) -> Message:
    """--resume: reset this client, then take the whole training state the ServerApp saved for it."""
    cfg = node.plan.cfg
    reset_client(node.client, cfg.run, cfg.collab.iterations, cfg.collab.shared_init)
    restore_client(node.client, *state_from(message.content))
    _persist(node, context)
    return Message(
        RecordDict({"restored": MetricRecord({"step": node.client.step_state.step})}), reply_to=message
    )


def handle_query(runtimes: ClientRuntimes, message: Message, context: Context) -> Message:
    """hello: keep the config, tell partition and versions; restore: take a saved state; token: top-k
    reference logits; ref: perplexity of each sent model on this client's validation rows."""
    kind = str(message.content["cfg"]["kind"])
    if kind == "hello":
        return handle_hello(message, context)
    node = runtimes.get(context)
    client, cfg = node.client, node.plan.cfg
    if kind == "restore":
        return handle_restore(node, message, context)
    if kind == "token":
        values, indices = reference_logits(client, node.reference, cfg.collab.token_topk)
        content = RecordDict({"top": ArrayRecord(torch_state_dict={"values": values, "indices": indices})})
    else:
        own = client.get_state()
        row = {}
        for key in [k for k in message.content if k.startswith("state-")]:
            client.set_state(message.content[key].to_torch_state_dict())
            row[key] = evaluate_client(client, cfg.run, node.collate, cfg.collab.eval_batches)["perplexity"]
        client.set_state(own)
        content = RecordDict({"row": MetricRecord(row)})
    return Message(content, reply_to=message)


def make_client_app(runtimes: ClientRuntimes) -> ClientApp:
    """A ClientApp whose handlers share `runtimes` (the live clients of this process)."""
    app = ClientApp()
    app.train()(lambda message, context: handle_train(runtimes, message, context))
    app.evaluate()(lambda message, context: handle_evaluate(runtimes, message, context))
    app.query()(lambda message, context: handle_query(runtimes, message, context))
    return app


client_app = make_client_app(process_runtimes())  # the component `flwr run` / flower-supernode loads
