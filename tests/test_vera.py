"""VeRA, the pilot method: trains, saves a plain PEFT adapter, reloads to identical predictions, audits."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from peft import PeftModel

import fairlora
from conftest import tiny_config
from fairlora.models import load_model


def test_vera_trains_reloads_identically_and_loads_in_plain_peft(tmp_path):
    config = tiny_config(
        tmp_path, method="vera", vera={"r": 16, "projection_prng_key": 7}, eval={"splits": ["test", "train"]}
    )
    result = fairlora.train(config)
    adapter = result.run_dir / "adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["peft_type"] == "VERA" and saved["r"] == 16 and saved["projection_prng_key"] == 7
    lora = fairlora.train(tiny_config(tmp_path, name="lora", eval={"splits": ["test"]}))
    assert result.train["trainable_params"] < lora.train["trainable_params"]  # d and b vectors only
    before = pd.read_parquet(result.run_dir / "predictions.parquet")
    fairlora.evaluate(result.run_dir)
    after = pd.read_parquet(result.run_dir / "predictions.parquet")
    assert (after["prob_1"].to_numpy() == before["prob_1"].to_numpy()).all()

    base = load_model(fairlora.config.build_config(config).model, "classification")
    plain = PeftModel.from_pretrained(base.model, str(adapter)).eval()
    text = base.tokenizer(["a plain peft load"], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(plain(**text).logits).all()

    audit = fairlora.audit([result.run_dir], tmp_path / "audit", ["audit.n_boot=20"])
    assert "utility/test" in audit.runs[0].sections


def test_vera_targets_default_to_peft_mapping_and_bad_targets_fail_before_writing(tmp_path):
    config = tiny_config(tmp_path, method="vera", vera={"r": 8, "target_modules": ["nope"]})
    with pytest.raises(fairlora.errors.ConfigError, match=r"vera.target_modules: \['nope'\] not found"):
        fairlora.train(config)
    assert not (tmp_path / "runs" / "tiny").exists()
