"""QLoRA on tiny models (bitsandbytes on CPU), mixed precision, and the bitsandbytes import that never
waits on the kernel hub."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel

import fairlora
from conftest import tiny_config
from fairlora.config import ModelConfig, build_config
from fairlora.errors import ConfigError
from fairlora.models import load_model
from fairlora.pipeline import load_trained_model

pytest.importorskip("bitsandbytes")

LLAMA = {"name": "tiny-llama", "max_length": 40}


def _llama_run(tmp_path: Path, name: str, **sections: object) -> dict:
    config = tiny_config(
        tmp_path,
        name=name,
        model={**LLAMA, **sections.pop("model", {})},
        lora={"target_modules": ["q_proj", "v_proj"], **sections.pop("lora", {})},
        eval={"splits": ["test"], "n_boot": 0},
        **sections,
    )
    config["train"] = {**config["train"], "max_steps": 2}
    return config


def test_first_bitsandbytes_import_runs_with_the_kernel_hub_offline(tmp_path):
    """A stand-in get_kernel records whether the hub was offline when bitsandbytes asked for its kernel."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        import kernels
        from huggingface_hub import constants
        seen = []
        def get_kernel(repo_id, version=None):
            seen.append((repo_id, constants.HF_HUB_OFFLINE))
            raise OSError("not in the local cache")
        kernels.get_kernel = get_kernel
        class ForceAvx512Bf16(importlib.abc.MetaPathFinder):  # take bitsandbytes' hub-kernel branch
            def find_spec(self, name, path=None, target=None):
                if name == "bitsandbytes.backends.cpu.ops":
                    sys.modules["bitsandbytes.functional"].has_avx512bf16 = lambda: True
                return None
        sys.meta_path.insert(0, ForceAvx512Bf16())
        import fairlora
        import peft  # imports bitsandbytes
        assert "bitsandbytes" in sys.modules
        print(seen, constants.HF_HUB_OFFLINE)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    # asked once, with the hub offline; online mode is back afterwards
    assert (
        out.stdout.strip().splitlines()[-1] == "[('kernels-community/quantization-bitsandbytes', True)] False"
    )


def test_kernel_hub_offline_fails_fast_without_a_connection(monkeypatch):
    """In `hub_offline`, kernels' get_kernel reads only the cache: no socket is opened."""
    import socket

    from kernels import get_kernel

    from fairlora.quant import hub_offline

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-fairlora-cache")
    with hub_offline(), pytest.raises(Exception) as caught:
        get_kernel("kernels-community/quantization-bitsandbytes", version=1)
    assert not isinstance(caught.value, AssertionError)


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_base_holds_bitsandbytes_layers(quantization):
    import bitsandbytes as bnb

    loaded = load_model(ModelConfig(name="tiny-llama", quantization=quantization), "causal_lm")
    layer = bnb.nn.Linear4bit if quantization == "4bit" else bnb.nn.Linear8bitLt
    kinds = [m for m in loaded.model.modules() if isinstance(m, layer)]
    assert kinds and not any(p.requires_grad for p in loaded.model.parameters())  # prepared: frozen


def test_4bit_lora_trains_and_the_adapter_loads_on_the_full_precision_base(tmp_path):
    config = _llama_run(tmp_path, "q4", task="causal_lm", model={"quantization": "4bit"})
    result = fairlora.train(config)
    adapter = result.run_dir / "adapter"
    cfg = build_config(config)
    quantized = load_trained_model(cfg, 2).model
    trained = {k: v for k, v in quantized.named_parameters() if "lora_" in k}
    plain = load_model(ModelConfig(name="tiny-llama"), "causal_lm").model
    ids = torch.arange(3, 15).reshape(2, 6)
    with torch.no_grad():
        base_logits = plain(input_ids=ids).logits
    reloaded = PeftModel.from_pretrained(plain, str(adapter))  # plain PEFT, unquantized base
    loaded = dict(reloaded.named_parameters())
    assert trained and all(torch.equal(loaded[k], v) for k, v in trained.items())
    assert any(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)  # training moved B
    with torch.no_grad():
        assert not torch.allclose(reloaded(input_ids=ids).logits, base_logits)


@pytest.mark.parametrize("method", ["vera", "lora+balora"])
def test_vera_and_balora_terms_train_on_a_4bit_base(tmp_path, method):
    extra: dict = {}
    if method == "vera":
        extra = {"method": "vera", "vera": {"target_modules": ["q_proj", "v_proj"]}}
    else:
        extra = {"balora": {"enabled": True}}
    config = _llama_run(
        tmp_path, method.replace("+", "-"), task="causal_lm", model={"quantization": "4bit"}, **extra
    )
    result = fairlora.train(config)
    assert (result.run_dir / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=full", "model.quantization=4bit"], "cannot be used with method: full"),
        (["method=pissa", "model.quantization=4bit"], "PEFT initializes PiSSA on full-precision"),
        (["method=aflora", "model.quantization=8bit"], "method: aflora"),
        (["lora.init=olora", "model.quantization=4bit"], "rewrites the base weights"),
        (["train.precision=fp16"], "fp16 needs a CUDA GPU"),
    ],
)
def test_bad_quantization_and_precision_fail_before_anything_is_written(tmp_path, overrides, message):
    if "fp16" in message and torch.cuda.is_available():
        pytest.skip("fp16 is valid on a CUDA machine")
    config = tiny_config(tmp_path)
    with pytest.raises(ConfigError, match=message):
        fairlora.train(config, overrides)
    assert not (tmp_path / "runs").exists()


def test_bf16_training_trains_and_reloads(tmp_path):
    config = tiny_config(tmp_path, name="bf16", train={"precision": "bf16", "max_steps": 3})
    result = fairlora.train(config)
    cfg = build_config(config)
    reloaded = load_trained_model(cfg, 2).model
    before = load_model(cfg.model, "classification").model.state_dict()
    lora = {k: v for k, v in reloaded.state_dict().items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())
    assert result.train["train_loss"] > 0 and len(before) > 0
    again = fairlora.evaluate(result.run_dir)
    assert again.splits["test"].overall["accuracy"].value == result.splits["test"].overall["accuracy"].value


def test_group_by_length_uses_hf_length_grouped_sampler(tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from fairlora.collab.client import batch_indices
    from fairlora.data import load_task_data
    from fairlora.methods import apply_method
    from fairlora.training.trainer import build_trainer

    cfg = build_config(tiny_config(tmp_path, train={"group_by_length": True}))
    data = load_task_data(cfg.data, cfg.task, cfg.seed)
    loaded = load_model(cfg.model, cfg.task, 2)
    trainer = build_trainer(cfg, apply_method(cfg, loaded), loaded.tokenizer, data.train, tmp_path / "ck")
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    lengths = tuple([4, 40] * 50)  # train_step's batches (collaboration): the same sampler groups lengths
    grouped = batch_indices(0, 0, 1, 5, 100, lengths)
    assert len({lengths[i] for i in grouped}) == 1
    assert sorted(batch_indices(0, 0, 0, 100, 100, lengths)) == list(range(100))


def test_bf16_on_a_cpu_without_bf16_instructions_warns(tmp_path, monkeypatch):
    from fairlora import quant

    cfg = build_config(tiny_config(tmp_path, train={"precision": "bf16"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(quant, "_native_cpu_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated"):
        quant.check_precision(cfg)
    monkeypatch.setattr(quant, "_native_cpu_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quant.check_precision(cfg)
