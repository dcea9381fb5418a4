"""`fairlora export`: PEFT folders and merged plain-transformers folders for every adapter method."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from typer.testing import CliRunner

import fairlora
from conftest import tiny_config
from fairlora.cli import app
from fairlora.config import build_config
from fairlora.export import export_run
from fairlora.models import load_model
from fairlora.pipeline import load_run

TEXTS = ["people from everywhere are welcome", "a second, longer sentence about a group of people"]


def _logits(model, tokenizer):
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("method", ["lora", "pissa", "vera", "aflora"])
def test_merged_export_predicts_like_the_run(tmp_path, method):
    sections = {"vera": {"r": 16}, "aflora": {"t_initial_steps": 1, "t_final_steps": 1}}
    config = tiny_config(tmp_path, method=method, eval={"splits": ["test"]}, **sections)
    run_dir = fairlora.train(config).run_dir
    _, _, loaded = load_run(run_dir)
    expected = _logits(loaded.model, loaded.tokenizer)

    merged_dir = export_run(run_dir, tmp_path / "merged", merge=True, overwrite=False)
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    assert not any("lora" in name or "vera" in name for name, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, loaded.tokenizer), expected, atol=1e-5)

    peft_dir = export_run(run_dir, tmp_path / "peft", merge=False, overwrite=False)
    assert json.loads((peft_dir / "adapter_config.json").read_text())["peft_type"] in ("LORA", "VERA")
    assert not (peft_dir / "aflora_model.safetensors").exists()
    base = load_model(build_config(config).model, "classification")
    assert not torch.allclose(_logits(base.model, base.tokenizer), expected, atol=1e-6)  # training changed it
    plain = PeftModel.from_pretrained(base.model, str(peft_dir))
    assert torch.allclose(_logits(plain, loaded.tokenizer), expected, atol=1e-5)


def test_causal_lm_merge_and_cli(tmp_path):
    config = tiny_config(
        tmp_path,
        task="causal_lm",
        model={"name": "tiny-llama"},
        lora={"target_modules": ["q_proj", "v_proj"]},
        eval={"splits": ["test"]},
    )
    run_dir = fairlora.train(config).run_dir
    _, _, loaded = load_run(run_dir)
    result = CliRunner().invoke(app, ["export", str(run_dir), "-o", str(tmp_path / "out"), "--merge"])
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert torch.allclose(
        _logits(merged, loaded.tokenizer), _logits(loaded.model, loaded.tokenizer), atol=1e-5
    )
    again = CliRunner().invoke(app, ["export", str(run_dir), "-o", str(tmp_path / "out")])
    assert again.exit_code != 0 and "--overwrite" in again.output


def test_full_and_none_runs_say_there_is_nothing_to_merge(tmp_path):
    full = fairlora.train(tiny_config(tmp_path, name="full", method="full", eval={"splits": ["test"]}))
    with pytest.raises(
        fairlora.errors.ConfigError, match="method `full` has no adapter, so there is nothing"
    ):
        export_run(full.run_dir, tmp_path / "out", merge=True, overwrite=False)
    assert not (tmp_path / "out").exists()
    copied = export_run(full.run_dir, tmp_path / "out", merge=False, overwrite=False)
    assert AutoModelForSequenceClassification.from_pretrained(copied).num_labels == 2
    none = fairlora.train(tiny_config(tmp_path, name="none", method="none", eval={"splits": ["test"]}))
    with pytest.raises(fairlora.errors.ConfigError, match="method `none` trains no adapter"):
        export_run(none.run_dir, tmp_path / "out2", merge=True, overwrite=False)
    assert not (tmp_path / "out2").exists()
