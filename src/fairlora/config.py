"""The run config: a pydantic schema of every YAML key, with defaults, overrides and clear errors."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)

from fairlora.errors import ConfigError


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which base model to load and how."""

    name: str = Field("minilm-l6", description="packaged alias, HF hub id, or local folder")
    gguf_file: str | None = Field(None, description="GGUF file inside `name` to dequantize and load")
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="QLoRA: load the base in 4-bit nf4 (double quantization, compute in model.dtype) "
        "or 8-bit through bitsandbytes (pip install fairlora[quant])",
    )
    max_length: int = Field(128, ge=8, description="tokens per example (longer texts are truncated)")
    trust_remote_code: bool = False


class IdentityDataConfig(_Section):
    """Knobs of the generated counterfactual identity dataset."""

    examples_per_group: int = Field(60, ge=4, description="generated sentences per identity term")
    bias_groups: list[str] = Field(default_factory=list, description="groups whose labels get biased")
    bias_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of non-hateful train rows of a bias group relabelled hateful"
    )
    overlap_rate: float = Field(0.1, ge=0.0, le=1.0, description="share of sentences naming two groups")


class DataConfig(_Section):
    """Which dataset, which columns, how to split."""

    name: str = Field("identity", description="registered name, local .csv/.jsonl/.json/.parquet, or HF id")
    path: str | None = Field(None, description="local file or folder for registered datasets")
    hf_split: str = Field("train", description="HF datasets: the split to load")
    hf_config: str | None = Field(None, description="HF datasets: the configuration, e.g. hate of tweet_eval")
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None, description="HF datasets: files to load (a path, a list, or {split: path}), e.g. with name: csv"
    )
    text_column: str = "text"
    label_column: str = "label"
    prompt_column: str | None = Field(None, description="causal_lm: prompt tokens are masked in the loss")
    prompt_template: Literal["none", "alpaca", "chat"] = Field(
        "none",
        description="causal_lm: wrap the prompt column in an instruction template (response + EOS); "
        "chat = the tokenizer's own chat template",
    )
    class_ratio: dict[str, float] = Field(
        default_factory=dict,
        description="keep this share of the TRAIN rows of each named class (seeded), e.g. {World: 0.1}",
    )
    image_column: str = Field("image", description="image_classification: column of image file paths")
    bad_files: Literal["fail", "skip"] = Field(
        "fail", description="images: unreadable files or unparsable names fail the run, or are skipped"
    )
    group_columns: list[str] = Field(
        default_factory=list,
        description="sensitive features: a boolean column is one group, any other column one group per "
        "value (gender=female); empty = the dataset's defaults",
    )
    intersections: list[list[str]] = Field(
        default_factory=list,
        description="crossed groups, e.g. [[gender, race]] adds gender=female&race=black, ...",
    )
    target_attribute: Literal["race", "religion", "age", "gender", "sexuality", "all"] = Field(
        "all", description="dlab-hatespeech: keep rows targeting this attribute; all = no filter"
    )
    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    val_size: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of the train rows held out as a validation split (0 = none)"
    )
    max_examples: int | None = Field(None, ge=2, description="subsample before splitting")
    identity: IdentityDataConfig = Field(default_factory=IdentityDataConfig)

    @field_validator("class_ratio")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: share for name, share in value.items() if not 0.0 < share <= 1.0}
        if bad:
            raise ValueError(
                f"each share must lie in (0, 1] (the part of a class's train rows kept), got {bad}"
            )
        return value


class TrainConfig(_Section):
    """Optimisation settings (passed to HF TrainingArguments)."""

    epochs: float = Field(3.0, gt=0.0)
    max_steps: int | None = Field(None, ge=1, description="overrides epochs when set")
    lr: float = Field(5e-4, gt=0.0)
    head_lr: float | None = Field(
        None,
        gt=0.0,
        validation_alias=AliasChoices("head_lr", "classifier_lr"),
        description="learning rate of a classification head (alias classifier_lr; None = lr)",
    )
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="classification: balanced = task loss weighted by inverse class frequency"
    )
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = Field(1.0, ge=0.0)
    logging_steps: int = Field(10, ge=1)
    save_strategy: Literal["epoch", "steps", "no"] = Field("epoch", description="when to checkpoint")
    save_steps: int = Field(500, ge=1, description="save_strategy=steps: checkpoint every N steps")
    save_total_limit: int = Field(2, ge=1)
    eval_every: Annotated[int, Field(ge=1)] | Literal["epoch"] | None = Field(
        None, description="score the val split every N steps or each epoch while training (None = never)"
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many evaluations without a better select_best figure"
    )
    select_best: str | None = Field(
        None,
        description="keep the checkpoint best by this validation figure, e.g. val_worst_group_accuracy "
        "(None = the last; val_loss when early_stopping_patience is set)",
    )
    report_to: list[str] = Field(default_factory=list, description="tensorboard, wandb, mlflow, ...")
    gradient_checkpointing: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="mixed precision (autocast); fp16 adds loss scaling and needs a CUDA GPU"
    )
    group_by_length: bool = Field(
        False, description="batches of similar lengths (HF's length-grouped sampler): less padding"
    )
    progress_bar: bool = True
    keep_freed_memory: bool = Field(
        False, description="deprecated, does nothing: set MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_"
    )

    @field_validator("report_to")
    @classmethod
    def _known_integrations(cls, value: list[str]) -> list[str]:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        unknown = [v for v in value if v not in INTEGRATION_TO_CALLBACK and v not in ("all", "none")]
        if unknown:
            raise ValueError(
                f"unknown integration(s) {unknown}; allowed: {', '.join(INTEGRATION_TO_CALLBACK)}"
            )
        return value


class EvalConfig(_Section):
    """Per-group evaluation settings."""

    splits: list[Literal["train", "val", "test"]] = Field(
        default_factory=lambda: ["test", "train"], min_length=1, description="splits to predict and evaluate"
    )
    batch_size: int = Field(32, ge=1)
    n_boot: int = Field(1000, ge=0, description="bootstrap resamples for the CIs of results.json (0 = none)")
    exact_match: bool = Field(
        False, description="causal_lm: generate answers to the prompts and score the extracted number"
    )
    max_new_tokens: int = Field(
        128, ge=1, description="exact_match / code_execution: tokens generated per prompt"
    )
    code_execution: bool = Field(
        False, description="causal_lm code data (humaneval): run completions against the tests, pass@k"
    )
    num_samples: int = Field(1, ge=1, description="code_execution: completions per prompt (1 = greedy)")
    temperature: float = Field(0.8, gt=0.0, description="num_samples > 1: sampling temperature")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="num_samples > 1: nucleus sampling mass")
    execution_timeout: float = Field(
        10.0, gt=0.0, description="code_execution: wall-clock seconds per sample"
    )
    execution_workers: int = Field(2, ge=1, description="code_execution: samples run at once")
    min_group_size: int = Field(
        20, ge=1, description="smaller groups are flagged and left out of worst-group and gap figures"
    )


AUDIT_SECTIONS = ("utility", "auc", "calibration", "membership", "lira", "generation", "probe", "benchmarks")
PROMPT_SETS = ("winomt", "occupations")
BENCHMARKS = ("crows_pairs", "stereoset", "bbq", "bbq_gender", "winobias")


class LiraConfig(_Section):
    """Offline LiRA: K shadow models trained like the run on halves of a pool that excludes the audit set."""

    shadows: int = Field(
        4, ge=2, description="K shadow models (16 in the paper; each is a full training run)"
    )
    member_fraction: float = Field(
        0.125, gt=0.0, le=1.0, description="share of train rows audited as members"
    )
    nonmember_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="share of test rows audited as non-members"
    )
    global_variance: bool = Field(True, description="one pooled std for all examples (advised for small K)")


class AuditConfig(_Section):
    """What `fairlora audit` computes, the same for every compared run (`fairlora audit --config FILE`)."""

    sections: list[Literal[AUDIT_SECTIONS]] | None = Field(  # type: ignore[valid-type]
        None,
        description="None = what applies: utility, auc (binary), calibration (classification), membership",
    )
    n_boot: int = Field(1000, ge=0, description="bootstrap resamples for the CIs at ci_level (0 = no CIs)")
    ci_level: float = Field(0.95, gt=0.0, lt=1.0)
    min_group_size: int | None = Field(
        None,
        ge=1,
        description="groups smaller than this are flagged and left out of worst-group and gap "
        "figures (None = eval.min_group_size)",
    )
    seed: int = Field(0, description="seed of the bootstrap and of the LiRA audit-set draw")
    batch_size: int = Field(16, ge=1, description="generation / likelihood scoring batch size")
    lira: LiraConfig = Field(default_factory=LiraConfig)
    engine: Literal["sequential", "ray"] = Field(
        "sequential", description="where LiRA shadows train: ray = one Ray task each (fairlora[ray])"
    )
    ray_address: str | None = Field(
        None, description="engine=ray: auto, ray://HOST:PORT (None = RAY_ADDRESS or a local cluster)"
    )
    cpus_per_run: float = Field(1.0, ge=0.0, description="engine=ray: CPUs each shadow reserves")
    gpus_per_run: float = Field(0.0, ge=0.0, description="engine=ray: GPUs each shadow reserves")
    prompt_sets: list[Literal[PROMPT_SETS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["occupations"], description="generation: winomt needs ../shared/data"
    )
    max_new_tokens: int = Field(
        40, ge=1, description="generation: greedy tokens per prompt (100 in the paper)"
    )
    benchmarks: list[Literal[BENCHMARKS]] = Field(default_factory=lambda: list(BENCHMARKS))  # type: ignore[valid-type]
    limit: int | None = Field(
        200, ge=1, description="max prompts / items per prompt set, benchmark and probe (None = all)"
    )


class RunConfig(_Section):
    """One run: model x data x method x training x evaluation."""

    name: str = "run"
    output_dir: str = "runs"
    seed: int = 42
    task: str = Field("classification", description="classification, causal_lm (`fairlora list tasks`)")
    method: str = Field("lora", description="fine-tuning method (`fairlora list methods`)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("use letters, digits, '.', '_' or '-' (it becomes a folder name)")
        return value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from fairlora.methods.registry import method_names

        if value not in method_names():
            raise ValueError(f"unknown method {value!r}; allowed: {', '.join(method_names())}")
        return value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from fairlora.tasks import task_names

        if value not in task_names():
            raise ValueError(f"unknown task {value!r}; allowed: {', '.join(task_names())}")
        return value

    @property
    def run_dir(self) -> Path:
        """Folder this run writes to."""
        return Path(self.output_dir) / self.name

    def to_yaml(self) -> str:
        """The resolved config as YAML (every default filled in)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ["lora.r=4", "train.lr=1e-4"] into a nested dict; values parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value, e.g. lora.r=4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML; quote it or fix the brackets"
            ) from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is set as a value and a section")
            node = child
        node[parts[-1]] = value
    return nested


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `update`, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_class() -> type[RunConfig]:
    """RunConfig with a field for each section the registered methods add (e.g. `lora:`, `vera:`)."""
    from fairlora.methods.registry import registered_sections

    return _with_sections(tuple(registered_sections().items()))


@lru_cache(maxsize=16)
def _with_sections(sections: tuple[tuple[str, type[BaseModel]], ...]) -> type[RunConfig]:
    fields: dict[str, Any] = {key: (schema, Field(default_factory=schema)) for key, schema in sections}
    return create_model("RunConfig", __base__=RunConfig, __doc__=RunConfig.__doc__, **fields)


def _section_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = config_class()
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "config"
    if error["type"] == "extra_forbidden":
        section = _section_at(loc[:-1])
        allowed = ", ".join(section.model_fields) if section else "?"
        return f"{where}: unknown key; allowed keys here: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" + (f" (got {error.get('input')!r})" if loc else "")


def build_config(data: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Validate a config dict (plus key=value overrides) into a RunConfig, or raise ConfigError."""
    merged = merge_dicts(data, parse_overrides(overrides or []))
    try:
        return config_class().model_validate(merged)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The top-level mapping of a YAML file, or ConfigError naming the file and the fix."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{what} file {file} not found; pass the path of a YAML file")
    try:
        loaded = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML ({exc})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of keys, got {type(loaded).__name__}")
    return loaded or {}


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file (or start from defaults when `path` is None) and validate it."""
    data = read_yaml_mapping(path) if path is not None else {}
    return build_config(data, overrides)
