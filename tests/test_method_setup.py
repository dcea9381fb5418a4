"""MethodSetup hooks: named adapters on one base, trainable-state exchange, the teacher, parameter groups."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from fairlora.config import build_config
from fairlora.errors import ConfigError
from fairlora.methods import apply_method
from fairlora.models import load_model

BATCH = {
    "input_ids": torch.tensor([[2, 40, 41, 42, 43, 3]]),
    "attention_mask": torch.ones(1, 6, dtype=torch.long),
}


def _cfg(tmp_path, **sections):
    return build_config(tiny_config(tmp_path, **sections))


def _logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**BATCH).logits


def _perturb(setup, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in setup.model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.5)


def test_named_adapters_share_one_base_and_exchange_trainable_state(tmp_path):
    cfg = _cfg(tmp_path)
    loaded = load_model(cfg.model, cfg.task)
    first = apply_method(cfg, loaded, "client-0")
    base_weight = first.model.get_base_model().bert.embeddings.word_embeddings.weight
    second = apply_method(cfg, loaded, "client-1")
    assert second.model is first.model  # one wrapped model, no copy of the base
    assert second.model.get_base_model().bert.embeddings.word_embeddings.weight is base_weight
    first.activate()
    _perturb(first, 0)
    second.activate()
    _perturb(second, 1)
    first.activate()
    out_first = _logits(first.model)
    second.activate()
    out_second = _logits(second.model)
    assert not torch.allclose(out_first, out_second)
    state = first.trainable_state()
    assert set(state) == set(second.trainable_state()) and all("client" not in k for k in state)
    second.load_trainable_state(state)
    second.activate()
    assert torch.allclose(_logits(second.model), out_first)


@pytest.mark.parametrize("method", ["lora", "vera", "pissa", "none"])
def test_teacher_gives_the_original_model_outputs_after_training(tmp_path, method):
    cfg = _cfg(tmp_path, method=method, vera={"r": 8})
    original = _logits(load_model(cfg.model, cfg.task).model)
    setup = apply_method(cfg, load_model(cfg.model, cfg.task))
    _perturb(setup, 0)  # stands in for training: adapter and head move away from step 0
    assert not torch.allclose(_logits(setup.model), original, atol=1e-4)
    setup.model.train()
    with setup.teacher_context():
        teacher = setup.model(**BATCH).logits
    assert torch.allclose(teacher, original, atol=1e-5)
    assert setup.model.training  # the context restores the mode
    assert [n for n, p in setup.model.named_parameters() if p.requires_grad and "-init" in n] == []


def test_pissa_disabled_adapter_is_not_the_original_model(tmp_path):
    cfg = _cfg(tmp_path, method="pissa")
    original = _logits(load_model(cfg.model, cfg.task).model)
    setup = apply_method(cfg, load_model(cfg.model, cfg.task))
    with torch.no_grad(), setup.model.disable_adapter():
        residual = setup.model(**BATCH).logits
    assert not torch.allclose(residual, original, atol=1e-4)  # why PiSSA keeps its initial adapter


def test_full_fine_tuning_has_no_teacher(tmp_path):
    cfg = _cfg(tmp_path, method="full")
    setup = apply_method(cfg, load_model(cfg.model, cfg.task))
    with pytest.raises(ConfigError, match="keeps no copy of the original model"):
        setup.teacher_context()


def test_param_groups_give_the_head_its_own_learning_rate(tmp_path):
    cfg = _cfg(tmp_path)
    setup = apply_method(cfg, load_model(cfg.model, cfg.task))
    groups = setup.param_groups(1e-3, 4e-3, 0.01)
    ids = {id(p): g["lr"] for g in groups for p in g["params"]}
    for name, param in setup.model.named_parameters():
        if param.requires_grad:
            assert ids[id(param)] == (4e-3 if "classifier" in name else 1e-3), name
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in setup.model.parameters())
    assert {g["weight_decay"] for g in groups} == {0.0, 0.01}  # biases are not decayed


def test_pissa_adapters_share_one_base_and_refuse_other_adapters(tmp_path):
    cfg = _cfg(tmp_path, method="pissa")
    loaded = load_model(cfg.model, cfg.task)
    first = apply_method(cfg, loaded, "client-0")
    before = _logits(first.model)
    second = apply_method(cfg, loaded, "client-1")  # the base stays W_res: client-0's outputs stay
    first.activate()
    assert torch.allclose(_logits(first.model), before, atol=1e-6)
    start = first.trainable_state()
    assert all(torch.equal(start[k], v) for k, v in second.trainable_state().items())
    lora_base = load_model(cfg.model, cfg.task)
    apply_method(_cfg(tmp_path, method="lora"), lora_base, "plain")
    with pytest.raises(ValueError, match="PiSSA adapters only"):
        apply_method(cfg, lora_base, "client-0")
