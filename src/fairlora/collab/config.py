"""The `collab.yaml` schema: the run sections of `fairlora.config` plus `collab:` and `flower:`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fairlora.config import RunConfig, build_config, merge_dicts, parse_overrides, read_yaml_mapping
from fairlora.errors import ConfigError

BASE_STRATEGIES = ("none", "naive", "static", "dynamic", "dynamic-ref", "dynamic-token")
VARIANTS = ("", "-topk", "-thresh")
STRATEGIES = tuple(f"{base}{variant}" for base in BASE_STRATEGIES for variant in VARIANTS)
CORPORA = ("topics", "ag_news", "prose_code")
SPLITS = ("specific", "mixed", "dirichlet")
COLLAB_KEYS = ("collab", "flower")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CollabSection(_Section):
    """`collab:` clients, their data, the protocol and the trust strategies."""

    clients: int = Field(4, ge=1, description="number of clients sharing one base model")
    corpus: Literal[CORPORA] = Field(  # type: ignore[valid-type]
        "topics", description="topics (generated), ag_news (../shared/data/ag_news), prose_code (packaged)"
    )
    data_path: str | None = Field(None, description="ag_news: folder holding test.csv (default: searched)")
    categories: list[str] | None = Field(
        None, description="categories of the corpus to use (None = all), e.g. [World, Sports]"
    )
    split: Literal[SPLITS] = "specific"  # type: ignore[valid-type]
    dirichlet_alpha: float = Field(0.5, gt=0.0, description="split=dirichlet: concentration (small = skewed)")
    examples_per_client: int = Field(64, ge=4, description="rows each client holds (train + validation)")
    val_share: float = Field(0.25, gt=0.0, lt=1.0, description="share of each client's rows for validation")
    reference_examples: int = Field(16, ge=1, description="dynamic-token: shared public reference rows")
    iterations: int = Field(40, ge=1, description="optimizer steps per client in total")
    pretraining_rounds: int = Field(10, ge=1, description="local warm-up iterations before the first mixing")
    trust_freq: int = Field(10, ge=1, description="aggregate every this many iterations after warm-up")
    strategies: list[Literal[STRATEGIES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["none", "naive", "dynamic-token"], min_length=1
    )
    tau: float = Field(1.0, gt=0.0, description="softmax temperature of the dynamic strategies")
    topk: int = Field(3, ge=1, description="-topk: entries kept per trust row (the client itself included)")
    threshold: float = Field(0.2, gt=0.0, lt=1.0, description="-thresh: keep the top 2 plus weights above")
    token_topk: int = Field(100, ge=1, description="dynamic-token: logits kept per position")
    shared_init: bool = Field(False, description="every client starts from the same adapter (else its own)")
    max_norm_ratio: float = Field(
        10.0, gt=1.0, description="exclude a client whose update norm exceeds this multiple of the median"
    )
    client_runs: bool = Field(
        True, description="write each client's run folder (adapter, predictions, results.json) per strategy"
    )
    eval_batches: int | None = Field(None, ge=1, description="validation batches per evaluation (None = all)")

    @model_validator(mode="after")
    def _topk_fits(self) -> CollabSection:
        if any(s.endswith("-topk") for s in self.strategies) and self.topk > self.clients:
            raise ValueError(
                f"topk={self.topk} exceeds clients={self.clients}; lower collab.topk or add clients"
            )
        return self


class FlowerSection(_Section):
    """`flower:` how the Flower engine runs: its simulation engine (Ray) or a running SuperLink."""

    mode: Literal["simulation", "deployment"] = Field(
        "simulation",
        description="simulation: Flower's simulation engine (Ray, one actor per client_cpus); "
        "deployment: submit with `flwr run` to the SuperLink at address",
    )
    address: str = Field("127.0.0.1:8000", description="deployment: the SuperLink's HTTP API (host:port)")
    timeout_s: float = Field(120.0, gt=0.0, description="give up on an unreachable server or a silent round")
    insecure: bool = Field(True, description="loopback only; set false with root_certificates for TLS")
    root_certificates: str | None = Field(None, description="PEM file of the CA that signed the SuperLink")
    client_cpus: float = Field(1.0, gt=0.0, description="simulation: CPUs each ClientApp actor reserves")
    client_gpus: float = Field(0.0, ge=0.0, description="simulation: GPUs (or a share) each actor reserves")
    return_adapters: bool = Field(
        False, description="send each client's final adapter back into its run folder (else results only)"
    )


class CollabConfig(BaseModel):
    """A collaborative run: the shared run settings, the collaboration and the engine."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    run: RunConfig
    collab: CollabSection
    engine: Literal["simulation", "flower"] = "simulation"
    flower: FlowerSection = Field(default_factory=FlowerSection)

    @property
    def run_dir(self) -> Path:
        """The collab folder: one sub-folder per strategy, one run folder per client inside."""
        return self.run.run_dir

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as one YAML-ready mapping (the format it was read from)."""
        data = self.run.model_dump(mode="json")
        data.pop("data", None)
        return data | {
            "engine": self.engine,
            "collab": self.collab.model_dump(mode="json"),
            "flower": self.flower.model_dump(mode="json"),
        }

    def to_yaml(self) -> str:
        """The resolved config as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _section(schema: type[BaseModel], data: Any, key: str) -> Any:
    try:
        return schema.model_validate(data or {})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join([key, *(str(p) for p in error["loc"])])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"unknown key; allowed keys here: {', '.join(schema.model_fields)}"
            lines.append(f"{where}: {message}")
        raise ConfigError("invalid collab config:\n  " + "\n  ".join(lines)) from None


def build_collab_config(data: dict[str, Any], overrides: list[str] | None = None) -> CollabConfig:
    """Validate a collab config mapping (plus key=value overrides) or raise ConfigError."""
    merged = merge_dicts(data, parse_overrides(overrides or []))
    if "data" in merged:
        raise ConfigError(
            "data: a collab config takes its data from collab.corpus / collab.split; remove the data: section"
        )
    engine = merged.pop("engine", "simulation")
    if engine not in ("simulation", "flower"):
        raise ConfigError(f"engine: unknown engine {engine!r}; allowed: simulation, flower")
    sections = {key: merged.pop(key, None) for key in COLLAB_KEYS}
    merged.setdefault("task", "causal_lm")
    merged.setdefault("name", "collab")
    run = build_config(merged)
    collab = _section(CollabSection, sections["collab"], "collab")
    flower = _section(FlowerSection, sections["flower"], "flower")
    return CollabConfig(run=run, collab=collab, engine=engine, flower=flower)


def load_collab_config(path: str | Path, overrides: list[str] | None = None) -> CollabConfig:
    """Read a collab YAML file and validate it (ConfigError naming the field on bad input)."""
    return build_collab_config(read_yaml_mapping(path, "collab config"), overrides)
