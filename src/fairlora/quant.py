"""Quantized bases (QLoRA) through bitsandbytes, and an import of bitsandbytes that never waits on a hub.

bitsandbytes (0.50) asks the `kernels` package for an optimized CPU 4-bit kernel from the Hugging Face
hub (kernels-community/quantization-bitsandbytes) while it is imported, on CPUs with AVX512-BF16. peft
and transformers import bitsandbytes whenever it is installed, so every run would wait on that
download. `guard_bitsandbytes_import` makes that one import run with the hub offline: the kernel is
used when it is already in the local Hugging Face cache, otherwise bitsandbytes falls back at once to
its own kernels.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fairlora.config import ModelConfig, RunConfig

BNB = "bitsandbytes"
QUANT_EXTRA = "pip install 'fairlora[quant]' (bitsandbytes>=0.50,<0.51)"
# Methods that train on a quantized base, and why the others cannot.
REFUSED_ON_QUANTIZED = {
    "full": "full fine-tuning updates every base weight, and 4-bit / 8-bit weights cannot be trained",
    "pissa": "PEFT initializes PiSSA on full-precision weights only (it rewrites them as W - BA); "
    "initialize in fp32, then quantize the residual",
    "ba-lora": "BA-LoRA starts from PiSSA, which PEFT initializes on full-precision weights only; "
    "use method: lora with balora.enabled: true",
    "aflora": "AFLoRA sizes its projections from the base layers' weight shapes, and a quantized layer "
    "holds its weight packed (4-bit: two values per byte)",
}
REWRITING_INITS = ("pissa", "olora")


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Within the block, huggingface_hub (and the `kernels` package on it) reads only the local cache."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


class _HubOfflineLoader(importlib.abc.Loader):
    """Runs the wrapped loader of bitsandbytes with the hub offline."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with hub_offline():
            self.loader.exec_module(module)


class _GuardBitsandbytes(importlib.abc.MetaPathFinder):
    """Finds bitsandbytes once (whoever imports it) and hands it the hub-offline loader."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != BNB:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _HubOfflineLoader(spec.loader)
        return spec


def guard_bitsandbytes_import() -> None:
    """Make the first import of bitsandbytes in this process run with the hub offline (no-op after it)."""
    if BNB in sys.modules or any(isinstance(f, _GuardBitsandbytes) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _GuardBitsandbytes())


def bitsandbytes_available() -> bool:
    """Whether bitsandbytes is installed (without importing it)."""
    return BNB in sys.modules or importlib.util.find_spec(BNB) is not None


def check_quantization(cfg: RunConfig) -> None:
    """model.quantization fits the method and its options, and bitsandbytes is installed (ConfigError)."""
    from fairlora.errors import ConfigError

    quant = cfg.model.quantization
    if quant == "none":
        return
    where = f"model.quantization: {quant}"
    if cfg.method in REFUSED_ON_QUANTIZED:
        raise ConfigError(
            f"{where} cannot be used with method: {cfg.method}: {REFUSED_ON_QUANTIZED[cfg.method]}; "
            f"use method: lora (QLoRA) or model.quantization: none"
        )
    lora = getattr(cfg, "lora", None)
    if lora is not None and cfg.method in ("lora", "dora") and lora.init in REWRITING_INITS:
        raise ConfigError(
            f"{where}: lora.init: {lora.init} rewrites the base weights, which a quantized base cannot "
            f"hold; use lora.init: default / gaussian or model.quantization: none"
        )
    if not bitsandbytes_available():
        raise ConfigError(f"{where} needs bitsandbytes, which is not installed: {QUANT_EXTRA}")


def check_precision(cfg: RunConfig) -> None:
    """train.precision fp16 needs a CUDA GPU (ConfigError before anything is written)."""
    import torch

    from fairlora.errors import ConfigError

    if cfg.train.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(
            "train.precision: fp16 needs a CUDA GPU: CPUs have few fp16 kernels (autocast would mostly "
            "cast back and forth) and fp16's narrow range needs loss scaling for no gain there; on CPU use "
            "train.precision: bf16 (fp32's range, no scaling) or fp32"
        )
    if cfg.train.precision == "bf16" and not torch.cuda.is_available() and not _native_cpu_bf16():
        warnings.warn(
            "train.precision: bf16 on a CPU without bf16 instructions (avx512_bf16 / amx_bf16) is emulated "
            "and can be far slower than fp32 (minilm-l6: ~20x in benchmarks/quantization.py); use fp32 here",
            stacklevel=2,
        )


def _native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux: its flags; elsewhere assumed so)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return True
    flags = set(cpuinfo.read_text(errors="replace").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def quantization_config(cfg: ModelConfig) -> Any:
    """transformers' BitsAndBytesConfig for model.quantization (None for none): nf4 + double quantization."""
    if cfg.quantization == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, cfg.dtype),
    )


def prepare_quantized(model: Any, gradient_checkpointing: bool = False) -> Any:
    """PEFT's prepare_model_for_kbit_training: frozen base, norms in fp32, input grads for checkpointing."""
    from peft import prepare_model_for_kbit_training

    _keep_plain_cpu_path(model)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def _keep_plain_cpu_path(model: Any) -> None:
    """bitsandbytes 0.50 repacks 4-bit weights for no-grad CPU inference where the CPU has AVX512-BF16,
    and fails on layers whose input width is not a multiple of the block size (e.g. tiny models);
    those layers keep the plain 4-bit path."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        plain = state is not None and state.shape[-1] % state.blocksize
        if hasattr(module, "support_avx512bf16_for_cpu") and plain:
            module.support_avx512bf16_for_cpu = False
