"""PEFT's LoRA options (lora.use_dora, use_rslora, bias, all-linear, modules_to_save, init) and method
dora: each run's saved adapter loads in plain PEFT and gives the trained model's outputs."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

import fairlora
from conftest import tiny_config
from fairlora.config import build_config
from fairlora.errors import ConfigError
from fairlora.methods import describe_methods
from fairlora.models import load_model
from fairlora.pipeline import load_trained_model

OPTIONS = {
    "dora": {"lora": {"use_dora": True}},
    "dora-method": {"method": "dora"},
    "rslora": {"lora": {"use_rslora": True}},
    "bias": {"lora": {"bias": "lora_only"}},
    "all-linear": {"lora": {"target_modules": "all-linear"}},
    "modules-to-save": {"lora": {"modules_to_save": ["pooler.dense"]}},
    "gaussian": {"lora": {"init": "gaussian"}},
    "olora": {"lora": {"init": "olora", "use_rslora": True}},
    "pissa-init": {"lora": {"init": "pissa"}},
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_option_trains_and_reloads_in_plain_peft(tmp_path, option):
    config = tiny_config(tmp_path, name=option, eval={"splits": ["test"], "n_boot": 0}, **OPTIONS[option])
    config["train"] = {**config["train"], "max_steps": 2, "lr": 1e-2}
    result = fairlora.train(config)
    cfg = build_config(config)
    trained = load_trained_model(cfg, 2).model  # fairlora's own reload
    plain = PeftModel.from_pretrained(
        load_model(cfg.model, "classification").model, str(result.run_dir / "adapter")
    )
    ids = torch.arange(5, 29).reshape(3, 8)
    trained.eval()
    plain.eval()
    with torch.no_grad():
        expected, got = trained(input_ids=ids).logits, plain(input_ids=ids).logits
        base = load_model(cfg.model, "classification").model.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, base)  # the adapter changed the model


def test_options_reach_the_peft_config(tmp_path):
    config = tiny_config(
        tmp_path, lora={"use_dora": True, "use_rslora": True, "bias": "all", "init": "gaussian"}
    )
    result = fairlora.train(config, ["train.max_steps=1"])
    saved = PeftModel.from_pretrained(
        load_model(build_config(config).model, "classification").model, str(result.run_dir / "adapter")
    ).peft_config["default"]
    assert (saved.use_dora, saved.use_rslora, saved.bias, saved.init_lora_weights) == (
        True,
        True,
        "all",
        "gaussian",
    )


def test_dora_is_listed_as_a_method():
    assert "dora" in describe_methods()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=vera", "lora.use_dora=true"], "lora.use_dora: method vera does not read"),
        (["method=pissa", "lora.use_dora=true"], "DoRA magnitude"),
        (["method=pissa", "lora.init=gaussian"], "conflicts with method: pissa"),
        (["lora.init=olora", "lora.bias=all"], "saved as plain LoRA"),
        (
            ["lora.modules_to_save=[pooler.dens]"],
            "modules_to_save: no module of tiny-bert is named 'pooler.dens'",
        ),
    ],
)
def test_bad_lora_options_fail_before_anything_is_written(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        fairlora.train(tiny_config(tmp_path), overrides)
    assert not (tmp_path / "runs").exists()
