"""AFLoRA: the layer, the freezer's statistics and decisions, and that freezing really stops updates."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from conftest import tiny_config
from fairlora.config import build_config
from fairlora.errors import ConfigError
from fairlora.methods import apply_method
from fairlora.methods.aflora import aflora_targets
from fairlora.methods.aflora.freezer import MatrixSensitivity, matrices_to_freeze
from fairlora.methods.aflora.layer import VectorScaledLinear, aflora_modules
from fairlora.methods.base import StepContext
from fairlora.models import load_model
from fairlora.tasks import get_task
from fairlora.training.step import StepState, make_optimizer, train_step
from fairlora.training.trainer import build_trainer


def _setup(tmp_path, model="tiny-bert", task="classification", **sections):
    cfg = build_config(tiny_config(tmp_path, method="aflora", task=task, model={"name": model}, **sections))
    loaded = load_model(cfg.model, cfg.task)
    for module in loaded.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch.manual_seed(0)
    return cfg, loaded, apply_method(cfg, loaded)


def _batches(loaded, task="classification", n=8):
    frame = pd.DataFrame(
        {"text": [f"sentence {i} about some people" for i in range(n)], "label": [i % 2 for i in range(n)]}
    )
    examples = get_task(task).encode(frame, loaded.tokenizer, 32)
    return frame, get_task(task).collator(loaded.tokenizer)([examples[i] for i in range(n)])


def _projections(setup):
    return {
        f"{m.name}.{kind}": proj.weight
        for m in aflora_modules(setup.model, "default")
        for kind, proj in (("A", m.a), ("B", m.b))
    }


class FreezeRecorder:
    """A step hook after the freezer: copies each matrix at the step it froze."""

    def __init__(self, setup):
        self.weights, self.seen = _projections(setup), {}

    def __call__(self, context: StepContext) -> None:
        for name, weight in self.weights.items():
            if not weight.requires_grad and name not in self.seen:
                assert weight.grad is None
                self.seen[name] = (context.step, weight.detach().clone())


def test_layer_computes_the_aflora_path_with_kaiming_init(tmp_path):
    cfg, loaded, setup = _setup(tmp_path)
    module = next(m for m in aflora_modules(setup.model, "default") if m.name.endswith("intermediate.dense"))
    assert isinstance(module.a, VectorScaledLinear) and module.a.bias is None and module.b.bias is None
    assert module.a.weight.abs().max() <= math.sqrt(6 / module.a.in_features)
    assert module.b.weight.abs().max() <= math.sqrt(6 / cfg.aflora.r)  # fan_in of B is r
    assert module.a.weight.abs().max() > 0.5 * math.sqrt(6 / module.a.in_features)  # not LoRA's a=sqrt(5)
    assert (module.a.vector == 0.1).all() and (module.b.vector == 0).all()
    x = torch.randn(3, module.a.in_features)
    base = module.layer.base_layer
    assert torch.equal(module.layer(x), base(x))  # b = 0: the path starts at zero
    with torch.no_grad():
        module.a.vector.normal_()
        module.b.vector.normal_()
    hidden = (x @ module.a.weight.T) * module.a.vector
    expected = base(x) + module.b.vector * (hidden @ module.b.weight.T)
    assert torch.allclose(module.layer(x), expected, atol=1e-6)


def test_square_layers_start_frozen_in_encoders_and_not_in_decoders(tmp_path):
    _, _, encoder = _setup(tmp_path)
    frozen = {n for n, w in _projections(encoder).items() if not w.requires_grad}
    assert frozen and all(any(s in n for s in ("query", "key", "value", "attention.output")) for n in frozen)
    assert all(w.requires_grad for n, w in _projections(encoder).items() if "intermediate" in n)
    _, _, decoder = _setup(tmp_path, "tiny-llama", "causal_lm", aflora={"alpha": 8.0})
    assert all(w.requires_grad for w in _projections(decoder).values())
    layer = aflora_modules(decoder.model, "default")[0].layer
    assert layer.scaling["default"] == pytest.approx(8.0 / 4)


def test_sensitivity_emas_and_nan_gradients():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    matrix = MatrixSensitivity("m", param)
    for value in (1.0, 3.0):
        param.grad = torch.full((2, 2), -value)
        matrix.observe()
    param.grad = torch.full((2, 2), float("nan"))
    matrix.observe()  # skipped
    assert matrix.window_count == 2
    matrix.close_window(0.85, 0.95)
    ibar = 0.15 * 2.0
    ubar = 0.05 * abs(2.0 - ibar)
    assert matrix.score() == pytest.approx(ibar * ubar)
    assert matrix.window_sum is None and matrix.window_count == 0


def test_quantile_decision():
    scores = {"a": 0.4, "b": 0.1, "c": 0.3, "d": 0.2}
    assert matrices_to_freeze(scores, 1.0) == []  # k = 1: nothing is below the smallest
    assert matrices_to_freeze(scores, 0.5) == ["b"]  # k = 2: below the 2nd smallest
    assert sorted(matrices_to_freeze(scores, 0.2)) == ["b", "d"]  # k = floor(3.2) = 3: below the 3rd
    assert sorted(matrices_to_freeze(scores, 0.0)) == ["a", "b", "c", "d"]  # the end: everything left


def test_frozen_matrices_stay_bit_identical_under_adamw_in_train_step(tmp_path):
    sections = {"train": {"max_steps": 80, "weight_decay": 0.1, "lr": 1e-2}}
    cfg, loaded, setup = _setup(tmp_path, aflora={"t_initial_steps": 10, "t_final_steps": 20}, **sections)
    before = {n: w.detach().clone() for n, w in _projections(setup).items()}
    recorder = FreezeRecorder(setup)
    setup.step_hooks.append(recorder)
    optimizer, scheduler = make_optimizer(setup, cfg.train, 80)
    state = StepState(setup, optimizer, scheduler, total_steps=80)
    _, batch = _batches(loaded)
    for _ in range(80):
        train_step(state, [batch])
    facts = setup.facts()["aflora_freeze_steps"]
    assert all(step is not None for step in facts.values())
    adaptive = {n: s for n, s in facts.items() if s > 0}
    assert adaptive and all(10 <= s <= 60 for s in adaptive.values())  # after t_i, by T - t_f
    assert len(set(adaptive.values())) > 1  # frozen at different checks, not all at once
    for name, weight in _projections(setup).items():
        step, at_freeze = recorder.seen[name]
        assert torch.equal(weight, at_freeze), name  # 20+ later AdamW steps with weight decay
        assert weight not in optimizer.state
        assert torch.equal(weight, before[name]) == (facts[name] == 0)  # trained only until it froze
    assert 80 - min(adaptive.values()) >= 50  # the earliest frozen matrix sat still for 50+ steps


def test_frozen_projections_leave_the_autograd_graph(tmp_path):
    cfg, loaded, setup = _setup(tmp_path, aflora={"freeze_square_from_start": False})
    _, batch = _batches(loaded)
    projections = _projections(setup)
    module = aflora_modules(setup.model, "default")[0]

    def leaves() -> set[int]:
        loss = setup.model(**batch).loss
        found, stack, seen = set(), [loss.grad_fn], set()
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if hasattr(node, "variable"):
                found.add(id(node.variable))
            stack.extend(next_fn for next_fn, _ in node.next_functions)
        return found

    assert {id(w) for w in projections.values()} <= leaves()
    for weight in projections.values():
        weight.requires_grad_(False)
    graph = leaves()
    assert not {id(w) for w in projections.values()} & graph  # no gradient is computed for A or B
    assert id(module.a.vector) in graph and id(module.b.vector) in graph  # d and b still train


def test_freeze_by_epoch_freezes_everything_at_once(tmp_path):
    cfg, loaded, setup = _setup(
        tmp_path, aflora={"freeze_by_epoch": 1.0}, train={"epochs": 2, "max_steps": None}
    )
    optimizer, scheduler = make_optimizer(setup, cfg.train, 20)
    state = StepState(setup, optimizer, scheduler, total_steps=20)
    _, batch = _batches(loaded)
    for _ in range(20):
        train_step(state, [batch])
    steps = setup.facts()["aflora_freeze_steps"]
    assert {s for n, s in steps.items() if "attention" not in n} == {10}  # FFN A/B: all after epoch 1
    assert {s for n, s in steps.items() if "attention" in n} == {0}  # square: frozen from the start


def test_hf_trainer_path_freezes_for_real(tmp_path):
    sections = {"train": {"max_steps": 60, "weight_decay": 0.1, "lr": 1e-2, "save_strategy": "no"}}
    cfg, loaded, setup = _setup(tmp_path, aflora={"t_initial_steps": 10, "t_final_steps": 20}, **sections)
    recorder = FreezeRecorder(setup)
    setup.step_hooks.append(recorder)
    frame, _ = _batches(loaded, n=16)
    trainer = build_trainer(cfg, setup, loaded.tokenizer, frame, tmp_path / "ckpt")
    trainer.train()
    steps = setup.facts()["aflora_freeze_steps"]
    assert max(steps.values()) <= 40 and max(steps.values()) > 10
    for name, weight in _projections(setup).items():
        assert torch.equal(weight, recorder.seen[name][1]), name
    facts = trainer.counter.facts(setup.model)
    assert facts["trainable_params_end"] < facts["trainable_params_mean"] < facts["trainable_params_start"]
    head = facts["trainable_params_start"] - facts["trainable_params_no_head_start"]
    assert head == sum(
        p.numel() for n, p in setup.model.named_parameters() if "classifier" in n and p.requires_grad
    )


def test_bad_inputs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="aflora.r=64 is larger than layer"):
        _setup(tmp_path, aflora={"r": 64})
    with pytest.raises(ConfigError, match="t_initial \\+ aflora.t_final must be below 1"):
        build_config(tiny_config(tmp_path, method="aflora", aflora={"t_initial": 0.5, "t_final": 0.5}))
    cfg = build_config(tiny_config(tmp_path, method="aflora"))
    with pytest.raises(ConfigError, match="no nn.Linear layers outside its head"):
        aflora_targets(cfg, ["classifier"], "bert")
    with pytest.raises(ConfigError, match="no default target modules for model type 'gpt2'"):
        aflora_targets(cfg, ["h.0.attn.c_attn"], "gpt2")


def test_resumed_trainer_keeps_the_freezer_state(tmp_path):
    sections = {"train": {"max_steps": 30, "save_strategy": "steps", "save_steps": 20, "lr": 1e-2}}
    aflora = {"t_initial_steps": 5, "t_final_steps": 5}
    runs = []
    for resume in (None, tmp_path / "ckpt" / "checkpoint-20"):
        cfg, loaded, setup = _setup(tmp_path, aflora=aflora, **sections)
        frame, _ = _batches(loaded, n=16)
        trainer = build_trainer(cfg, setup, loaded.tokenizer, frame, tmp_path / "ckpt")
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        runs.append(setup.facts()["aflora_freeze_steps"])
    full, resumed = runs
    assert (tmp_path / "ckpt" / "checkpoint-20" / "aflora_freezer.json").is_file()
    early = {n: s for n, s in full.items() if s < 20}
    assert len(early) > 8 and all(resumed[n] == s for n, s in early.items())  # restored, not re-decided
    assert resumed == full  # the EMAs came back too: the same decisions after the checkpoint
