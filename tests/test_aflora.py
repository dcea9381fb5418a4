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
from fairlora.methods.aflora.freezer import MatrixSensitivity, below_element_quantile, matrices_to_freeze
from fairlora.methods.aflora.layer import VectorScaledLinear, aflora_modules
from fairlora.methods.base import StepContext
from fairlora.models import load_model
from fairlora.regularizers.schedules import cubic_threshold
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


class FrozenWatch:
    """A step hook after the freezer: every matrix frozen at an EARLIER step must have no grad and no
    requires_grad now (a violation means it trained again), and the gradient norm the hooks see."""

    def __init__(self, setup):
        self.weights, self.violations, self.grad_norms = _projections(setup), [], []
        self.frozen = {name for name, weight in self.weights.items() if not weight.requires_grad}

    def __call__(self, context: StepContext) -> None:
        for name in sorted(self.frozen):
            weight = self.weights[name]
            if weight.requires_grad or weight.grad is not None:
                self.violations.append((context.step, name))
        self.frozen |= {name for name, weight in self.weights.items() if not weight.requires_grad}
        grads = [p.grad.detach().float() for p in context.model.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


def _trained_with_all_balora_terms(tmp_path, loop):
    """AFLoRA with BA-LoRA's three terms on, 16 steps through `loop`; (setup, recorder, watch, counter)."""
    sections = {
        "train": {"max_steps": 16, "weight_decay": 0.1, "lr": 1e-2, "save_strategy": "no"},
        "balora": {"enabled": True, "cr": True, "dr": True, "svdr": True},
    }
    cfg, loaded, setup = _setup(tmp_path, aflora={"t_initial_steps": 3, "t_final_steps": 5}, **sections)
    assert {term.name for term in setup.loss_terms} == {"balora_cr", "balora_dr", "balora_svdr"}
    assert any(term.needs_teacher for term in setup.loss_terms)  # the teacher toggles the adapter
    recorder, watch = FreezeRecorder(setup), FrozenWatch(setup)
    setup.step_hooks += [recorder, watch]
    frame, batch = _batches(loaded, n=8)
    if loop == "train_step":
        optimizer, scheduler = make_optimizer(setup, cfg.train, 16)
        state = StepState(setup, optimizer, scheduler, total_steps=16)
        for _ in range(16):
            train_step(state, [batch])
        return setup, recorder, watch, state.counter
    trainer = build_trainer(cfg, setup, loaded.tokenizer, frame, tmp_path / "ckpt")
    trainer.train()
    return setup, recorder, watch, trainer.counter


@pytest.mark.parametrize("loop", ["train_step", "hf_trainer"])
def test_frozen_matrices_stay_frozen_with_every_balora_term(tmp_path, loop):
    setup, recorder, watch, counter = _trained_with_all_balora_terms(tmp_path, loop)
    steps = setup.facts()["aflora_freeze_steps"]
    assert all(s is not None and s <= 11 for s in steps.values())  # all frozen by T - t_f
    assert not watch.violations, f"frozen matrices trained again (step, matrix): {watch.violations[:4]}"
    for name, weight in _projections(setup).items():
        assert not weight.requires_grad and weight.grad is None, name
        assert torch.equal(weight, recorder.seen[name][1]), name  # bit-identical since it froze
    vectors_and_head = sum(
        p.numel()
        for n, p in setup.model.named_parameters()
        if n.endswith(".vector") or ("classifier" in n and "modules_to_save" in n)
    )
    facts = counter.facts(setup.model)
    assert facts["trainable_params_end"] == vectors_and_head  # every A/B frozen: d, b and the head train
    assert counter.counts[0] == facts["trainable_params_start"] == max(counter.counts)  # never grows
    assert counter.counts == sorted(counter.counts, reverse=True)


def test_leaving_the_teacher_keeps_frozen_matrices_frozen(tmp_path):
    _, loaded, setup = _setup(tmp_path, balora={"enabled": True})
    frozen = {n: w for n, w in _projections(setup).items() if not w.requires_grad}
    assert frozen  # the square layers' A/B, frozen from the start
    _, batch = _batches(loaded)
    with setup.teacher_context():
        setup.model(**{k: v for k, v in batch.items() if k != "labels"})
    assert not [n for n, w in frozen.items() if w.requires_grad]
    setup.model.set_adapter("default")  # PEFT turns the whole adapter trainable again
    assert all(w.requires_grad for w in frozen.values())
    setup.restore_trainable()
    assert not [n for n, w in frozen.items() if w.requires_grad]


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


def test_reference_rule_pools_element_scores_and_weighs_by_size():
    scores = {
        "a": torch.tensor([0.0] * 8 + [10.0] * 2),  # mean 2, most elements small
        "b": torch.full((10,), 1.0),  # mean 1
        "c": torch.full((4,), 3.0),  # mean 3
    }
    pooled = torch.cat(list(scores.values())).sort().values  # oracle: the k-th smallest of all 24 elements
    for threshold in (0.9, 0.5, 0.2, 0.05):
        k = max(1, math.floor(24 * (1 - threshold)))
        expected = sorted(n for n, v in scores.items() if float(v.mean()) < float(pooled[k - 1]))
        assert sorted(below_element_quantile(scores, threshold)) == expected
    assert below_element_quantile(scores, 0.9) == []  # k = 2: the cutoff is 0, nothing freezes early
    assert below_element_quantile(scores, 0.5) == []  # k = 12: cutoff 1, no mean is below it yet
    assert sorted(below_element_quantile(scores, 0.2)) == ["a", "b"]  # k = 19: cutoff 3, a burst of two
    assert sorted(below_element_quantile(scores, 0.0)) == ["a", "b", "c"]
    means = {n: float(v.mean()) for n, v in scores.items()}
    assert matrices_to_freeze(means, 0.2) == ["b"]  # the ranked rule: k = 2 of the 3 means


def _freeze_steps_on_skewed_gradients(tmp_path, rule):
    """Freeze steps when every A/B sees a fixed, skewed (exponential) |grad| pattern, mildly scaled per
    matrix, with noise: 60 steps, checks every 2 steps from step 12 (t_i 10), all frozen by step 50."""
    window = {"t_initial_steps": 10, "t_final_steps": 10, "window": 2, "freeze_square_from_start": False}
    _, _, setup = _setup(tmp_path, aflora=window | {"freeze_rule": rule}, train={"max_steps": 60})
    freezer, weights = setup.step_hooks[0], _projections(setup)
    generator = torch.Generator().manual_seed(0)
    scale = {name: 1.05**i for i, name in enumerate(sorted(weights))}
    pattern = {n: torch.empty(w.shape).exponential_(generator=generator) for n, w in weights.items()}
    for step in range(60):
        for name, weight in weights.items():
            if weight.requires_grad:
                noise = 1 + 0.5 * torch.rand(weight.shape, generator=generator)
                weight.grad = scale[name] * pattern[name] * noise
        freezer(StepContext(setup.model, None, step, 60))
    return setup.facts()["aflora_freeze_steps"]


def test_reference_rule_freezes_nothing_early_then_bursts_and_ranked_freezes_from_the_first_check(tmp_path):
    ranked = _freeze_steps_on_skewed_gradients(tmp_path, "ranked")
    first_check = 11  # step index of optimizer step 12, the first window boundary after t_i = 10
    k = math.floor(len(ranked) * (1 - cubic_threshold(first_check + 1, 10, 10, 60)))
    assert sum(s == first_check for s in ranked.values()) == k - 1 >= 1  # k - 1 freeze at once
    reference = _freeze_steps_on_skewed_gradients(tmp_path, "reference")
    assert all(s is not None and s <= 49 for s in reference.values())
    assert min(reference.values()) > first_check + 4  # nothing in the first three checks
    bursts = pd.Series(list(reference.values())).value_counts()
    assert bursts.max() >= 5 and len(bursts) < len(set(ranked.values())) + 2


@pytest.mark.parametrize("loop", ["train_step", "hf_trainer"])
def test_sensitivity_reads_the_gradients_before_clipping(tmp_path, loop):
    sections = {"train": {"max_steps": 3, "lr": 1e-3, "max_grad_norm": 1e-7, "save_strategy": "no"}}
    cfg, loaded, setup = _setup(tmp_path, aflora={"t_initial_steps": 1, "t_final_steps": 1}, **sections)
    freezer, watch = setup.step_hooks[0], FrozenWatch(setup)
    seen = {}

    def first_window(context: StepContext) -> None:
        if context.step == 0:  # the window holds exactly this step's |grad|
            seen.update({n: (m.window_sum.clone(), m.param.grad.abs()) for n, m in freezer.trainable.items()})

    setup.step_hooks += [watch, first_window]
    frame, batch = _batches(loaded)
    if loop == "train_step":
        optimizer, scheduler = make_optimizer(setup, cfg.train, 3)
        state = StepState(setup, optimizer, scheduler, 3, max_grad_norm=cfg.train.max_grad_norm)
        for _ in range(3):
            train_step(state, [batch])
    else:
        build_trainer(cfg, setup, loaded.tokenizer, frame, tmp_path / "ckpt").train()
    assert min(watch.grad_norms) > 100 * cfg.train.max_grad_norm  # not clipped when the hooks ran
    assert seen and all(torch.equal(window, grad) for window, grad in seen.values())


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
