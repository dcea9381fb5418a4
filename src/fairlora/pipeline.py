"""config -> data -> model -> method -> training -> evaluation -> results, for one run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from accelerate import PartialState
from transformers import set_seed

from fairlora.config import RunConfig, build_config, load_config
from fairlora.data import TaskData, load_task_data
from fairlora.data.types import PROMPT
from fairlora.errors import ConfigError, DataError, RunDirError
from fairlora.methods import (
    apply_method,
    count_parameters,
    get_method,
    load_trained,
    validate_method,
)
from fairlora.metrics.utility import utility_table
from fairlora.models import LoadedModel, linear_module_names, load_model, model_type
from fairlora.runs import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    TRAIN_LOG_FILE,
    RunResult,
    load_results,
    read_config,
    weights_dir,
)
from fairlora.storage import write_dir_atomic, write_parquet_atomic, write_text_atomic
from fairlora.tasks import get_task
from fairlora.tasks.codegen import check_generation_options, with_executed_code
from fairlora.tasks.predict import add_exact_match, generate_answers, predict_frame
from fairlora.training.losses import balanced_class_weights, weighted_cross_entropy
from fairlora.training.trainer import build_trainer, on_cpu, run_training
from fairlora.training.validation import validation_plan

BOOTSTRAP_SEED = 0  # the audit's default seed: results.json and a default audit share their resamples


def as_config(
    config: RunConfig | dict[str, Any] | str | Path, overrides: list[str] | None = None
) -> RunConfig:
    """Accept a RunConfig, a dict, or a YAML path (plus key=value overrides)."""
    if isinstance(config, RunConfig):
        return build_config(config.model_dump(), overrides) if overrides else config
    if isinstance(config, dict):
        return build_config(config, overrides)
    return load_config(config, overrides)


def train(
    config: RunConfig | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    data: TaskData | None = None,
) -> RunResult:
    """Fine-tune and evaluate one run; writes runs/<name>/ and returns its results.

    `data` replaces the configured dataset's split (LiRA shadow models train on subsets this way).
    """
    cfg = as_config(config, overrides)
    state = PartialState(cpu=on_cpu())
    finished = _check_run_dir(cfg, overwrite, resume)  # read-only, so every process decides the same
    if finished is not None:
        return finished
    data = data or load_task_data(cfg.data, cfg.task, cfg.seed)
    num_labels = max(len(data.label_names), 2)
    validate_run(cfg, data, num_labels)  # every input error is raised before the run folder is touched
    set_seed(cfg.seed)
    loaded = load_model(cfg.model, cfg.task, num_labels)
    data = formatted(cfg, data, loaded.tokenizer)  # a model without a chat template fails here
    check_encodable(cfg, data, loaded.tokenizer)
    state.wait_for_everyone()
    if state.is_main_process:
        _init_run_dir(cfg, overwrite)
    state.wait_for_everyone()
    setup = apply_method(cfg, loaded)
    if cfg.train.class_weight == "balanced":
        setup.task_loss = weighted_cross_entropy(balanced_class_weights(data.train["label"], num_labels))
    trainable, total = count_parameters(setup.model)
    facts: dict[str, Any] = {"trainable_params": trainable, "total_params": total}
    trainer = None
    if setup.trains:
        checkpoints = cfg.run_dir / CHECKPOINTS_DIR
        validation = validation_plan(cfg, data, num_labels)
        trainer = build_trainer(cfg, setup, loaded.tokenizer, data.train, checkpoints, validation)
        facts |= run_training(trainer, checkpoints, resume)
    target = weights_dir(cfg.run_dir, cfg.method)
    sharded = trainer is not None and (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled)
    gathered = trainer.accelerator.get_state_dict(trainer.model) if sharded else None  # on every process
    if state.is_main_process:
        if sharded:
            write_dir_atomic(target, lambda path: save_gathered(cfg, gathered, num_labels, path))
        else:
            write_dir_atomic(target, setup.save)
        if trainer is not None:
            write_text_atomic(cfg.run_dir / TRAIN_LOG_FILE, json.dumps(trainer.state.log_history, indent=1))
        if state.num_processes > 1:  # the in-memory model is wrapped or sharded: evaluate from disk
            result = evaluate_run(cfg.run_dir, train_facts=facts)
        else:
            result = _evaluate(cfg, setup.model, loaded.tokenizer, data, facts)
    state.wait_for_everyone()
    return result if state.is_main_process else load_results(cfg.run_dir)


def validate_run(cfg: RunConfig, data: TaskData, num_labels: int) -> None:
    """Check the model, the method's settings and the evaluation splits without writing anything."""
    names = linear_module_names(cfg.model, cfg.task, num_labels)  # a bad model.name fails here
    validate_method(_with_planned_steps(cfg, len(data.train)), names, model_type(cfg.model), num_labels)
    _check_task_options(cfg, data)
    validation_plan(cfg, data, num_labels)  # eval_every / early stopping / select_best need a val split
    for split in cfg.eval.splits:
        data.split(split)
    if cfg.train.report_to:
        from transformers.integrations import get_available_reporting_integrations

        missing = set(cfg.train.report_to) - {*get_available_reporting_integrations(), "all", "none"}
        if missing:
            raise ConfigError(
                f"train.report_to: {sorted(missing)} not installed; "
                f"`pip install {' '.join(sorted(missing))}` "
                f"or remove it from train.report_to"
            )


def _with_planned_steps(cfg: RunConfig, train_rows: int) -> RunConfig:
    """`cfg` with train.max_steps set to the optimizer steps epochs give (one process), for method checks."""
    if cfg.train.max_steps is not None:
        return cfg
    batches = math.ceil(train_rows / cfg.train.batch_size)
    steps = math.ceil(cfg.train.epochs * max(batches // cfg.train.grad_accum, 1))
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": max(steps, 1)})})


def _check_task_options(cfg: RunConfig, data: TaskData) -> None:
    """The data has the task's inputs; train.class_weight and eval.exact_match fit the task and the data."""
    get_task(cfg.task).check_frame(data.train)  # e.g. an image task on a text dataset
    if cfg.train.class_weight != "none" and not get_task(cfg.task).classifies:
        raise ConfigError(
            f"train.class_weight: {cfg.train.class_weight} weights classes, but task {cfg.task!r} has none; "
            f"remove it"
        )
    check_generation_options(cfg.eval, cfg.task, cfg.data.prompt_template, data.train.columns)


def formatted(cfg: RunConfig, data: TaskData, tokenizer: Any) -> TaskData:
    """data.prompt_template: chat formats the prompts with the tokenizer's chat template."""
    if cfg.data.prompt_template != "chat":
        return data
    from fairlora.tasks.chat import with_chat_prompts

    return with_chat_prompts(data, tokenizer, cfg.model.name)


def check_encodable(cfg: RunConfig, data: TaskData, tokenizer: Any) -> None:
    """causal_lm: every train / evaluated example keeps response tokens within model.max_length."""
    task = get_task(cfg.task)
    if task.classifies:
        return
    for split in dict.fromkeys(["train", *cfg.eval.splits]):
        try:
            task.encode(data.split(split), tokenizer, cfg.model.max_length)
        except DataError as exc:
            raise DataError(f"data ({split} split): {exc}") from None


def save_gathered(cfg: RunConfig, state_dict: dict[str, Any], num_labels: int, path: Path) -> None:
    """Save weights gathered from FSDP / DeepSpeed through the method's own saver.

    The sharded model cannot save itself the way the method does (PiSSA converts its adapter, `none`
    keeps only the head): the gathered weights go into a fresh copy of the method on this process.
    """
    set_seed(cfg.seed)  # a randomized PiSSA init is drawn as in training, then overwritten anyway
    fresh = apply_method(cfg, load_model(cfg.model, cfg.task, num_labels))
    missing, unexpected = fresh.model.load_state_dict(state_dict, strict=False)
    if unexpected or [k for k in missing if "lora_" in k or "vera_" in k]:
        raise RunDirError(
            f"the gathered weights do not fit the model: unexpected {unexpected[:3]}, missing {missing[:3]}"
        )
    fresh.save(path)


def _check_run_dir(cfg: RunConfig, overwrite: bool, resume: bool) -> RunResult | None:
    """Refuse to clobber a run folder; on --resume return a finished run's results."""
    run_dir = cfg.run_dir
    if overwrite or not (run_dir.exists() and any(run_dir.iterdir())):
        return None
    if not resume:
        state = "a finished run" if (run_dir / RESULTS_FILE).exists() else "an unfinished run"
        raise RunDirError(
            f"{run_dir} already holds {state}; pass --resume to continue it, --overwrite to replace "
            f"it, or choose another name (name=...)"
        )
    _check_same_config(cfg, run_dir / CONFIG_FILE)
    return load_results(run_dir) if (run_dir / RESULTS_FILE).exists() else None


def finished_results(cfg: RunConfig) -> RunResult | None:
    """The results of cfg's run when its folder holds it finished with the same config, else None."""
    return _check_run_dir(cfg, overwrite=False, resume=True)


def _init_run_dir(cfg: RunConfig, overwrite: bool) -> None:
    """Create (or with --overwrite, empty) the run folder and write the resolved config."""
    if overwrite and cfg.run_dir.exists():
        shutil.rmtree(cfg.run_dir)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cfg.run_dir / CONFIG_FILE, cfg.to_yaml())


def _check_same_config(cfg: RunConfig, saved_file: Path) -> None:
    if not saved_file.is_file():
        return
    saved = build_config(yaml.safe_load(saved_file.read_text()) or {})
    ignore = {"train": {"progress_bar", "report_to"}}
    if saved.model_dump(exclude=ignore) != cfg.model_dump(exclude=ignore):
        raise ConfigError(
            f"--resume: the config differs from {saved_file}; resume with the same config, or use "
            f"--overwrite / another name to start a new run"
        )


def _evaluate(cfg: RunConfig, model: Any, tokenizer: Any, data: TaskData, facts: dict[str, Any]) -> RunResult:
    """One prediction pass per split, per-group utility, then predictions + results.json on disk."""
    tables, splits = [], {}
    for split in cfg.eval.splits:
        table = predict_frame(
            model,
            tokenizer,
            data.split(split),
            cfg.task,
            cfg.model.max_length,
            cfg.eval.batch_size,
            split,
            data.group_columns,
            cfg.train.progress_bar,
        )
        table = with_generation_scores(cfg, model, tokenizer, data.split(split), table)
        tables.append(table)
        splits[split] = utility_table(
            table,
            data.group_columns,
            min_group_size=cfg.eval.min_group_size,
            n_boot=cfg.eval.n_boot,
            seed=BOOTSTRAP_SEED,
        )
    write_parquet_atomic(cfg.run_dir / PREDICTIONS_FILE, pd.concat(tables, ignore_index=True))
    result = RunResult(
        cfg.name,
        cfg.method,
        cfg.model.name,
        data.name,
        cfg.task,
        splits,
        facts,
        cfg.run_dir,
        data.label_names,
    )
    result.save(cfg.run_dir)
    return result


def with_generation_scores(
    cfg: RunConfig, model: Any, tokenizer: Any, frame: pd.DataFrame, table: pd.DataFrame
) -> pd.DataFrame:
    """The prediction table plus what eval.code_execution (pass@k) or eval.exact_match scores."""
    if cfg.eval.code_execution:
        return with_executed_code(cfg, model, tokenizer, frame, table)
    if not cfg.eval.exact_match:
        return table
    generated = generate_answers(
        model,
        tokenizer,
        frame[PROMPT].astype(str).tolist(),
        cfg.eval.max_new_tokens,
        cfg.eval.batch_size,
        cfg.train.progress_bar,
    )
    return add_exact_match(table, frame, generated)


def load_run(run_dir: str | Path) -> tuple[RunConfig, TaskData, LoadedModel]:
    """A run's resolved config, its data split, and its trained model loaded from the saved weights."""
    cfg = read_config(run_dir)
    trained_weights(cfg)  # a run that did not finish fails before its data is loaded
    data = load_task_data(cfg.data, cfg.task, cfg.seed)
    loaded = load_trained_model(cfg, max(len(data.label_names), 2))
    return cfg, formatted(cfg, data, loaded.tokenizer), loaded


def trained_weights(cfg: RunConfig) -> Path:
    """The run's saved weights folder, or RunDirError when training did not finish."""
    saved = weights_dir(cfg.run_dir, cfg.method)
    if not saved.is_dir():
        raise RunDirError(
            f"{saved} not found: the run did not finish training; "
            f"continue it with `fairlora train {cfg.run_dir / CONFIG_FILE} --resume`"
        )
    return saved


def load_trained_model(cfg: RunConfig, num_labels: int) -> LoadedModel:
    """The run's base model with its trained weights (a classifier with `num_labels` classes)."""
    saved = trained_weights(cfg)
    model_cfg = (
        cfg.model.model_copy(update={"name": str(saved)})
        if get_method(cfg.method).loads_from_weights
        else cfg.model
    )
    set_seed(cfg.seed)
    loaded = load_model(model_cfg, cfg.task, num_labels)
    loaded.model = load_trained(cfg, loaded, saved)
    return loaded


def run_label_names(cfg: RunConfig) -> list[str]:
    """The run's classes (index = class id) from results.json, else from its data; [] for causal_lm."""
    if not get_task(cfg.task).classifies:
        return []
    if (cfg.run_dir / RESULTS_FILE).is_file():
        try:
            names = load_results(cfg.run_dir).label_names
        except RunDirError:
            names = []
        if names:
            return names
    return load_task_data(cfg.data, cfg.task, cfg.seed).label_names  # a run written before label_names


def evaluate_run(run_dir: str | Path, train_facts: dict[str, Any] | None = None) -> RunResult:
    """Re-load a run's model from its saved weights and evaluate it again (rewrites results.json)."""
    cfg, data, loaded = load_run(run_dir)
    if train_facts is None and (cfg.run_dir / RESULTS_FILE).is_file():
        try:
            train_facts = load_results(cfg.run_dir).train
        except RunDirError:
            train_facts = {}  # a corrupt results.json is replaced below
    return _evaluate(cfg, loaded.model, loaded.tokenizer, data, train_facts or {})
