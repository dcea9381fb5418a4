"""Running the Flower apps: on Flower's simulation engine (Ray actors, `flower.mode: simulation`) or
submitted to a running SuperLink with `flwr run` (`flower.mode: deployment`)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from rich.console import Console

from fairlora.collab.client import ClientData
from fairlora.collab.config import CollabConfig
from fairlora.collab.flower_app import make_server_app
from fairlora.collab.flower_appdir import RESUME_KEY, write_app
from fairlora.collab.plan import Plan
from fairlora.collab.results import load_summary
from fairlora.errors import TrainingError
from fairlora.models import LoadedModel

logger = logging.getLogger(__name__)
FEDERATION = "collab"  # the SuperLink connection fairlora writes into its own FLWR_HOME


def backend_config(cfg: CollabConfig) -> dict[str, Any]:
    """Ray backend settings: each ClientApp actor reserves flower.client_cpus / client_gpus."""
    resources = {"num_cpus": cfg.flower.client_cpus, "num_gpus": cfg.flower.client_gpus}
    return {
        "client_resources": resources,
        "init_args": {"include_dashboard": False, "log_to_driver": False, "configure_logging": False},
    }


def _summaries(plan: Plan) -> list[dict[str, Any]]:
    summaries = [load_summary(plan.cfg.run_dir / s) for s in plan.cfg.collab.strategies]
    if any(s is None for s in summaries):
        raise TrainingError("flower: the ServerApp finished without writing every strategy's summary.json")
    return summaries  # type: ignore[return-value]


def simulate(plan: Plan, resume: bool = False, client_app: ClientApp | None = None) -> list[dict[str, Any]]:
    """Serve every strategy on Flower's simulation engine (one virtual SuperNode per client, Ray actors
    running the ClientApp); with `resume`, finished strategies are kept and unfinished ones continue
    after their last saved round."""
    import ray
    from flwr.simulation import run_simulation

    from fairlora.collab.flower_client import client_app as default_app

    try:
        run_simulation(
            server_app=make_server_app(plan.cfg, resume),
            client_app=client_app or default_app,
            num_supernodes=plan.cfg.collab.clients,
            backend_config=backend_config(plan.cfg),  # type: ignore[arg-type]
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
    return _summaries(plan)


def flower_home(plan: Plan) -> Path:
    """A Flower config folder (FLWR_HOME) naming the SuperLink connection `collab` (yours stays as is)."""
    flower = plan.cfg.flower
    home = plan.cfg.run_dir.resolve() / "flower-home"
    home.mkdir(parents=True, exist_ok=True)
    tls = "insecure = true" if flower.insecure else f'root-certificates = "{flower.root_certificates}"'
    connection = f'[superlink.{FEDERATION}]\naddress = "{flower.address}"\n{tls}\n'
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{FEDERATION}"\n\n{connection}')
    return home


def deploy(plan: Plan, console: Console, resume: bool = False) -> list[dict[str, Any]]:
    """Write the Flower App, submit it to the SuperLink at flower.address with `flwr run --stream` (the
    config travels in its run config) and wait for every strategy."""
    folder = write_app(plan.cfg, plan.cfg.run_dir / "flower-app")
    flwr = Path(sys.executable).with_name("flwr")
    path = f"{flwr.parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the SuperLink spawns flwr-serverapp
    env = os.environ | {"PATH": path, "FLWR_HOME": str(flower_home(plan))}
    command = [str(flwr), "run", str(folder), FEDERATION, "--stream"]
    command += ["--run-config", f"{RESUME_KEY}={'true' if resume else 'false'}"]
    console.print(f"flower: {' '.join(command)}")
    try:
        subprocess.run(command, env=env, check=True, timeout=None)
    except subprocess.CalledProcessError as exc:
        raise TrainingError(
            f"flower: `flwr run` failed (exit {exc.returncode}); see its output above"
        ) from None
    return _summaries(plan)


def run_flower(
    plan: Plan, loaded: LoadedModel, data: list[ClientData], *, resume: bool, console: Console
) -> list[dict[str, Any]]:
    """The flower engine of `fairlora collab` (--resume keeps finished strategies, continues the others)."""
    del loaded, data  # the ClientApps load their own model and encode their own data
    if plan.cfg.flower.mode == "deployment":
        return deploy(plan, console, resume)
    return simulate(plan, resume)
