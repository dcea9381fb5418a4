"""A collab run as a Flower App: the resolved config as Flower run config (FlowerTune's layout: dotted,
hyphenated keys under `[tool.flwr.app.config]`), the inverse for the ServerApp, and the app folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import flwr

import fairlora
from fairlora.collab.config import CollabConfig, build_collab_config
from fairlora.errors import ConfigError

RESUME_KEY = "resume"  # run config: keep finished strategies, continue the others (collab --resume)
SUBMITTER_KEY = "submitter"  # run config: versions of the fairlora that wrote the app


def versions() -> dict[str, str]:
    """The fairlora and flwr versions of this process."""
    return {"fairlora": fairlora.__version__, "flwr": flwr.__version__}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key.replace('_', '-')}"
        if isinstance(value, dict):
            flat |= _flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _encode(value: Any) -> bool | int | float | str:
    """A run-config value: scalars as they are; lists and None as JSON text (run config holds scalars)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def _decode(value: Any) -> Any:
    if isinstance(value, str) and (value == "null" or value.startswith("[")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def to_run_config(cfg: CollabConfig) -> dict[str, bool | int | float | str]:
    """The resolved config as flat run config: every setting (`flwr run --run-config` overrides only
    keys the app declares), the output folder absolute, then `resume` and the submitter's versions."""
    kept = {key: _encode(value) for key, value in _flatten(cfg.to_dict()).items()}
    kept["output-dir"] = str(Path(cfg.run.output_dir).resolve())  # the ServerApp's cwd is not yours
    return kept | {RESUME_KEY: False} | {f"{SUBMITTER_KEY}.{k}-version": v for k, v in versions().items()}


def from_run_config(run_config: dict[str, Any]) -> tuple[CollabConfig, bool]:
    """(the collab config, resume) from a ServerApp's run config; ConfigError naming a bad key."""
    settings = {key: _decode(value) for key, value in run_config.items()}
    resume = bool(settings.pop(RESUME_KEY, False))
    submitter = {k: settings.pop(k) for k in list(settings) if k.startswith(f"{SUBMITTER_KEY}.")}
    check_versions("the ServerApp", versions(), _submitter_versions(submitter))
    nested = _unflatten({key.replace("-", "_"): value for key, value in settings.items()})
    return build_collab_config(nested), resume


def _submitter_versions(submitter: dict[str, Any]) -> dict[str, str]:
    prefix = f"{SUBMITTER_KEY}."
    return {k.removeprefix(prefix).removesuffix("-version"): str(v) for k, v in submitter.items()}


def check_versions(who: str, own: dict[str, str], expected: dict[str, str]) -> None:
    """ConfigError naming both versions when `who` runs another fairlora or flwr than `expected`."""
    for package in ("fairlora", "flwr"):
        if package in expected and own.get(package) != expected[package]:
            raise ConfigError(
                f"flower: {who} runs {package} {own.get(package)} but the run was submitted with {package} "
                f"{expected[package]}; install {package}=={expected[package]} there (or resubmit with "
                f"{package} {own.get(package)})"
            )


def _toml(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a TOML basic string


PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fairlora-collab"
version = "1.0.0"
description = "fairlora collab: personalised trust-weighted LoRA fine-tuning on Flower"
license = "MIT"
dependencies = ["fairlora=={fairlora}", "flwr[simulation]>=1.41,<1.43"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fairlora"

[tool.flwr.app.components]
serverapp = "fairlora.collab.flower_app:server_app"
clientapp = "fairlora.collab.flower_client:client_app"

# The collab settings (see fairlora's docs/collab.md); override any with
#   flwr run . <federation> --run-config "collab.iterations=80 resume=true"
[tool.flwr.app.config]
"""


def write_app(cfg: CollabConfig, folder: Path) -> Path:
    """Write a Flower App folder (pyproject.toml with the components and the collab settings)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{key} = {_toml(value)}" for key, value in to_run_config(cfg).items()]
    text = PYPROJECT.replace("{fairlora}", fairlora.__version__) + "\n".join(lines) + "\n"
    (folder / "pyproject.toml").write_text(text)
    (folder / "README.md").write_text(
        f"# {cfg.run.name}: a fairlora collab run as a Flower App\n\n"
        "Every machine needs fairlora and flwr installed (the versions in pyproject.toml).\n\n"
        "    flwr run . <federation> --stream\n"
    )
    return folder
