"""Running the Flower apps: in this process through an in-memory Grid (no Ray needed), or submitted to a
real SuperLink with `flwr run` (deployment)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity
from rich.console import Console

from fairlora.collab.client import ClientData
from fairlora.collab.flower_app import serve
from fairlora.collab.flower_client import CONFIG_KEY, PARTITION_KEY, ClientRuntimes, make_client_app
from fairlora.collab.plan import Plan, collab_file
from fairlora.collab.results import load_summary
from fairlora.errors import TrainingError
from fairlora.models import LoadedModel

logger = logging.getLogger(__name__)
SERVER_NODE = 0


class InProcessGrid(Grid):
    """A Grid whose SuperNodes are ClientApps called in this process (each with its own Context)."""

    def __init__(self, app: ClientApp, partitions: int, run_config: dict[str, Any], dead: Iterable[int] = ()):
        self._app = app
        self._dead = set(dead)
        self._contexts = {
            100 + p: Context(
                run_id=1,
                node_id=100 + p,
                node_config={PARTITION_KEY: p},
                state=RecordDict(),
                run_config=run_config,
            )
            for p in range(partitions)
        }
        self._run: Any = None
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:
        """Remember the run (unused in process)."""
        self._run = run

    @property
    def run(self) -> Any:
        """The run set with `set_run`."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A message to one node."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The live nodes."""
        return [n for n in self._contexts if n - 100 not in self._dead]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its ClientApp now; a failing client leaves no reply (it dropped out)."""
        ids = []
        for message in messages:
            node = message.metadata.dst_node_id
            if node - 100 in self._dead:
                continue
            try:
                reply = self._app(message, self._contexts[node])
            except Exception as exc:  # noqa: BLE001 - a client that dies must not stop the round
                logger.warning("client on node %d failed: %s", node, exc)
                continue
            key = f"{node}-{len(self._replies)}"
            self._replies[key] = reply
            ids.append(key)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies of the pushed messages."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull every reply (clients answer synchronously)."""
        return self.pull_messages(self.push_messages(messages))

    def kill(self, partition: int) -> None:
        """Stop answering for `partition` (tests: a client that dies mid-run)."""
        self._dead.add(partition)


@contextlib.contextmanager
def task_identity() -> Iterator[None]:
    """Flower messages need the process's run / node / task ids; set them while serving in process."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SERVER_NODE, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def simulate(
    plan: Plan, loaded: LoadedModel | None = None, dead: Iterable[int] = (), resume: bool = False
) -> list[dict[str, Any]]:
    """Serve every strategy to ClientApps in this process (all clients on one shared base when given);
    with `resume`, finished strategies are kept and unfinished ones start again."""
    finished = {
        s: done for s in plan.cfg.collab.strategies if resume and (done := load_summary(plan.cfg.run_dir / s))
    }
    app = make_client_app(ClientRuntimes(plan, loaded))
    run_config = {CONFIG_KEY: str(collab_file(plan.cfg).resolve())}
    with task_identity():
        return serve(InProcessGrid(app, plan.cfg.collab.clients, run_config, dead), plan, finished)


def app_folder(plan: Plan) -> Path:
    """Write a Flower App folder (pyproject.toml naming fairlora's ServerApp and ClientApp)."""
    folder = plan.cfg.run_dir / "flower-app"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fairlora-collab"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fairlora"

[tool.flwr.app.components]
serverapp = "fairlora.collab.flower_app:server_app"
clientapp = "fairlora.collab.flower_client:client_app"

[tool.flwr.app.config]
{CONFIG_KEY} = "{collab_file(plan.cfg).resolve()}"

"""
    )
    return folder


def flower_home(plan: Plan) -> Path:
    """A Flower config folder (FLWR_HOME) naming the SuperLink connection `collab` (yours stays as is)."""
    flower = plan.cfg.flower
    home = plan.cfg.run_dir.resolve() / "flower-home"
    home.mkdir(parents=True, exist_ok=True)
    tls = "insecure = true" if flower.insecure else f'root-certificates = "{flower.root_certificates}"'
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "collab"\n\n[superlink.collab]\naddress = "{flower.address}"\n{tls}\n'
    )
    return home


def deploy(plan: Plan, console: Console) -> list[dict[str, Any]]:
    """Submit the app to the SuperLink at flower.address with `flwr run --stream`; wait for every strategy."""
    folder = app_folder(plan)
    flwr = Path(sys.executable).with_name("flwr")
    path = f"{flwr.parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the SuperLink spawns flwr-serverapp
    env = os.environ | {"PATH": path, "FLWR_HOME": str(flower_home(plan))}
    command = [str(flwr), "run", str(folder), "collab", "--stream"]
    console.print(f"flower: {' '.join(command)}")
    try:
        subprocess.run(command, env=env, check=True, timeout=None)
    except subprocess.CalledProcessError as exc:
        raise TrainingError(
            f"flower: `flwr run` failed (exit {exc.returncode}); see its output above"
        ) from None
    summaries = [load_summary(plan.cfg.run_dir / s) for s in plan.cfg.collab.strategies]
    if any(s is None for s in summaries):
        raise TrainingError("flower: the ServerApp finished without writing every strategy's summary.json")
    return summaries  # type: ignore[return-value]


def run_flower(
    plan: Plan, loaded: LoadedModel, data: list[ClientData], *, resume: bool, console: Console
) -> list[dict[str, Any]]:
    """The flower engine of `fairlora collab` (--resume keeps finished strategies, reruns the others)."""
    del data  # the ClientApps encode their own data
    if plan.cfg.flower.mode == "deployment":
        return deploy(plan, console)
    return simulate(plan, loaded, resume=resume)
