"""The Flower ClientApp: one collab client per SuperNode (node config `partition-id`), keeping its
adapter, AdamW, LR schedule and RNG between rounds (live in this process, and in `Context.state`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
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
from fairlora.collab.config import load_collab_config
from fairlora.collab.plan import Plan, load_shared_model, make_plan, reference_batches
from fairlora.collab.runfolders import write_client_run
from fairlora.collab.state import client_tensors, restore_client
from fairlora.models import LoadedModel
from fairlora.tasks import get_task

logger = logging.getLogger(__name__)
CONFIG_KEY = "collab-config"  # run config: path of the resolved collab.yaml
PARTITION_KEY = "partition-id"  # node config: which client this SuperNode is


@dataclass
class NodeClient:
    """One live client with what it needs to train, evaluate and answer trust queries."""

    plan: Plan
    client: Client
    collate: Any
    tokenizer: Any
    reference: list[dict[str, torch.Tensor]]


class ClientRuntimes:
    """The clients this process serves, by partition; built on first use (one base model per process)."""

    def __init__(self, plan: Plan | None = None, loaded: LoadedModel | None = None) -> None:
        self._plan, self._loaded = plan, loaded
        self._live: dict[int, NodeClient] = {}

    def get(self, context: Context) -> NodeClient:
        """The live client of this node, rebuilt (from `context.state` when saved) in a fresh process."""
        partition = int(context.node_config[PARTITION_KEY])
        if partition not in self._live:
            self._live[partition] = self._build(partition, context)
        return self._live[partition]

    def _build(self, partition: int, context: Context) -> NodeClient:
        if self._plan is None:
            self._plan = make_plan(load_collab_config(str(context.run_config[CONFIG_KEY])))
        plan = self._plan
        if self._loaded is None:
            self._loaded = load_shared_model(plan)
        cfg, loaded = plan.cfg, self._loaded
        run = next(iter(plan.client_runs.values()))[partition]
        data = encode_frames(run, loaded.tokenizer, plan.frames[partition], run.seed)
        client = make_client(cfg.run, loaded, partition, data, cfg.collab.iterations, cfg.collab.shared_init)
        if "client-state" in context.state:
            meta = json.loads(str(context.state["client-meta"]["json"]))
            restore_client(client, context.state["client-state"].to_torch_state_dict(), meta)
        collate = get_task(cfg.run.task).collator(loaded.tokenizer)
        return NodeClient(plan, client, collate, loaded.tokenizer, reference_batches(plan, loaded))


def _persist(node: NodeClient, context: Context) -> None:
    tensors, meta = client_tensors(node.client)
    context.state["client-state"] = ArrayRecord(torch_state_dict=tensors)
    context.state["client-meta"] = ConfigRecord({"json": json.dumps(meta)})


def _load_mixture(node: NodeClient, message: Message) -> None:
    if "mixture" in message.content:
        node.client.receive(message.content["mixture"].to_torch_state_dict())


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


def handle_evaluate(runtimes: ClientRuntimes, message: Message, context: Context) -> Message:
    """Load this client's personal mixture, evaluate on its own validation data; write its run if final."""
    node = runtimes.get(context)
    settings = message.content["cfg"]
    cfg = node.plan.cfg
    _load_mixture(node, message)
    _persist(node, context)
    metrics = evaluate_client(node.client, cfg.run, node.collate, cfg.collab.eval_batches)
    if bool(settings["final"]) and cfg.collab.client_runs:
        strategy = str(settings["strategy"])
        run = node.plan.client_runs[strategy][node.client.index]
        facts = {
            "collab_strategy": strategy,
            **json.loads(str(settings["final_metrics"])),
            "engine": "flower",
        }
        write_client_run(run, node.client, node.tokenizer, facts | {"train_rows": node.client.size})
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)


def handle_query(runtimes: ClientRuntimes, message: Message, context: Context) -> Message:
    """hello: partition and size; token: top-k reference logits; ref: perplexity of each sent model here."""
    node = runtimes.get(context)
    kind = str(message.content["cfg"]["kind"])
    client, cfg = node.client, node.plan.cfg
    if kind == "token":
        values, indices = reference_logits(client, node.reference, cfg.collab.token_topk)
        content = RecordDict({"top": ArrayRecord(torch_state_dict={"values": values, "indices": indices})})
    elif kind == "ref":
        own = client.get_state()
        row = {}
        for key in [k for k in message.content if k.startswith("state-")]:
            client.set_state(message.content[key].to_torch_state_dict())
            row[key] = evaluate_client(client, cfg.run, node.collate, cfg.collab.eval_batches)["perplexity"]
        client.set_state(own)
        content = RecordDict({"row": MetricRecord(row)})
    else:
        content = RecordDict({"hello": MetricRecord({"partition": client.index, "size": client.size})})
    return Message(content, reply_to=message)


def make_client_app(runtimes: ClientRuntimes | None = None) -> ClientApp:
    """A ClientApp whose handlers share `runtimes` (the live clients of this process)."""
    runtimes = runtimes or ClientRuntimes()
    app = ClientApp()
    app.train()(lambda message, context: handle_train(runtimes, message, context))
    app.evaluate()(lambda message, context: handle_evaluate(runtimes, message, context))
    app.query()(lambda message, context: handle_query(runtimes, message, context))
    return app


client_app = make_client_app()  # the component `flwr run` / flower-supernode loads
