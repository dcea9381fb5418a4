"""Image runs end to end on the tiny random ViT / Swin: every method trains, per-group accuracy follows
the generated structure, the saved weights reload to identical predictions, the audit reads the run,
and bad input fails before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fairlora.auditing.run import audit
from fairlora.config import load_config
from fairlora.data.image_synthetic import write_utkface_folder
from fairlora.errors import DataError, ModelError
from fairlora.methods import method_names
from fairlora.models import linear_module_names, load_model
from fairlora.pipeline import load_run, train
from fairlora.runs import PREDICTIONS_FILE
from fairlora.tasks.predict import predict_frame

ROOT = Path(__file__).parents[1]
VISION_TINY = ROOT / "configs" / "vision-tiny.yaml"
UTKFACE = ROOT / "configs" / "utkface-vit.yaml"
QUICK = ["train.progress_bar=false", "eval.n_boot=0", "eval.splits=[test]"]


def _quick(tmp_path: Path, *overrides: str, steps: int = 3) -> list[str]:
    small = ["data.max_examples=60", f"train.max_steps={steps}"]
    return [f"output_dir={tmp_path / 'runs'}", *QUICK, *small, *overrides]


def _predictions(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / PREDICTIONS_FILE).sort_values(["split", "id"]).reset_index(drop=True)


def _reload_predictions(run_dir: Path, split: str = "test") -> pd.DataFrame:
    cfg, data, loaded = load_run(run_dir)
    table = predict_frame(loaded.model, loaded.tokenizer, data.split(split), cfg.task, 128, 16, split,
                          data.group_columns, progress=False)  # fmt: skip
    return table.sort_values(["split", "id"]).reset_index(drop=True)


def test_vision_tiny_config_learns_the_generated_group_structure(tmp_path: Path) -> None:
    result = train(VISION_TINY, [f"output_dir={tmp_path}", "train.progress_bar=false", "eval.n_boot=0"])
    acc = {group: metrics["accuracy"].value for group, metrics in result.splits["test"].by_group.items()}
    # red / green: the label is the bar's orientation; blue: 25% of the labels are flipped
    assert acc["red"] >= 0.8 and acc["green"] >= 0.8
    assert acc["blue"] <= 0.8 and acc["blue"] < min(acc["red"], acc["green"]) - 0.15
    assert result.train["trainable_params"] < result.train["total_params"] / 5  # LoRA + head only


@pytest.mark.parametrize(
    ("method", "model"),
    [("lora", "tiny-vit"), ("pissa", "tiny-vit"), ("vera", "tiny-vit"), ("full", "tiny-vit"),
     ("none", "tiny-vit"), ("full", "tiny-swin")],
)  # fmt: skip
def test_every_method_trains_and_reloads_to_identical_predictions(
    tmp_path: Path, method: str, model: str
) -> None:
    targets = "[q_proj,v_proj]"
    extra = [f"lora.target_modules={targets}", f"vera.target_modules={targets}", "vera.r=16"]
    result = train(VISION_TINY, _quick(tmp_path, f"method={method}", f"model.name={model}", *extra))
    saved = _predictions(result.run_dir)
    again = _reload_predictions(result.run_dir)
    assert len(saved) == 12 and saved["id"].tolist() == again["id"].tolist()
    assert np.allclose(saved[["prob_0", "prob_1"]], again[["prob_0", "prob_1"]], atol=1e-5)
    assert (saved["pred"] == again["pred"]).all()


def test_aflora_on_a_tiny_vit_when_available(tmp_path: Path) -> None:
    if "aflora" not in method_names():
        pytest.skip("method aflora is not registered in this version")
    result = train(VISION_TINY, _quick(tmp_path, "method=aflora", "aflora.target_modules=[q_proj,v_proj]"))
    assert np.allclose(_predictions(result.run_dir)[["prob_0", "prob_1"]],
                       _reload_predictions(result.run_dir)[["prob_0", "prob_1"]], atol=1e-5)  # fmt: skip


def test_the_audit_of_an_image_run_reports_per_group_figures(tmp_path: Path) -> None:
    run = train(VISION_TINY, _quick(tmp_path, "eval.splits=[test,train]", "data.max_examples=150", steps=4))
    out = tmp_path / "audit"
    result = audit([run.run_dir], out, ["audit.n_boot=0"])
    (run_audit,) = result.runs
    assert {"utility/test", "calibration/test", "membership/loss"} <= set(run_audit.sections)
    for key in ("utility/test", "calibration/test", "membership/loss"):
        assert {"red", "green", "blue"} <= set(run_audit.sections[key].by_group), key
    assert (out / "report.md").is_file() and "data:image/png" in (out / "report.html").read_text()


def test_the_utkface_config_runs_with_the_tiny_vit_and_a_generated_folder(tmp_path: Path) -> None:
    folder = write_utkface_folder(tmp_path / "UTKFace", count=40)
    overrides = ["model.name=tiny-vit", f"data.path={folder}", f"output_dir={tmp_path / 'runs'}", *QUICK]
    result = train(UTKFACE, [*overrides, "train.max_steps=2", "train.batch_size=8"])
    assert {"race_white", "gender_female", "male_black"} <= set(result.splits["test"].by_group)
    assert load_config(UTKFACE).model.name == "google/vit-base-patch16-224-in21k"
    assert load_config(UTKFACE).data.label_column == "gender"


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["model.name=tiny-bert"], ModelError, "'tiny-bert' \\(bert\\) is not an image classifier"),
        (["data.name=utkface", "data.path=EMPTY", "data.label_column=gender"], DataError, "no images"),
        (["data.name=utkface", "data.path=UTK", "data.label_column=smile"], DataError, "data.label_column"),
    ],
)
def test_bad_input_fails_before_anything_is_written(
    tmp_path: Path, overrides: list[str], error: type[Exception], match: str
) -> None:
    (tmp_path / "empty").mkdir()
    utk = write_utkface_folder(tmp_path / "utk", count=8, size=8)
    swapped = [o.replace("EMPTY", str(tmp_path / "empty")).replace("UTK", str(utk)) for o in overrides]
    with pytest.raises(error, match=match):
        train(VISION_TINY, _quick(tmp_path, *swapped))
    assert not (tmp_path / "runs").exists()


def test_a_text_dataset_for_the_image_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no 'image' column.*utkface, image-folder"):
        train(VISION_TINY, _quick(tmp_path, "data.name=identity"))
    assert not (tmp_path / "runs").exists()


def test_a_text_task_on_an_image_model_is_refused() -> None:
    from fairlora.config import ModelConfig

    with pytest.raises(ModelError, match="image model \\(vit\\).*task=image_classification"):
        linear_module_names(ModelConfig(name="tiny-vit"), "classification")


def test_a_saved_vit_folder_loads_with_its_image_processor(tmp_path: Path) -> None:
    from fairlora.config import ModelConfig

    loaded = load_model(ModelConfig(name="tiny-swin"), "image_classification", 3)
    loaded.model.save_pretrained(tmp_path / "m")
    loaded.tokenizer.save_pretrained(tmp_path / "m")
    again: Any = load_model(ModelConfig(name=str(tmp_path / "m")), "image_classification", 3)
    assert type(again.model).__name__ == "SwinForImageClassification" and again.model.config.num_labels == 3
    assert again.tokenizer.size == loaded.tokenizer.size


def test_a_merged_export_of_an_image_run_is_a_plain_model_folder_that_predicts_the_same(
    tmp_path: Path,
) -> None:
    from fairlora.config import ModelConfig
    from fairlora.export import export_run

    result = train(VISION_TINY, _quick(tmp_path))
    folder = export_run(result.run_dir, tmp_path / "merged", merge=True, overwrite=False)
    assert (folder / "preprocessor_config.json").is_file()
    cfg, data, _ = load_run(result.run_dir)
    plain = load_model(ModelConfig(name=str(folder)), "image_classification", 2)
    table = predict_frame(plain.model, plain.tokenizer, data.test, cfg.task, 128, 16, progress=False)
    saved = _predictions(result.run_dir)
    merged = table.sort_values(["split", "id"]).reset_index(drop=True)
    assert np.allclose(saved[["prob_0", "prob_1"]], merged[["prob_0", "prob_1"]], atol=1e-5)


def test_the_utkface_config_offline_fails_on_the_hub_model_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder = write_utkface_folder(tmp_path / "UTKFace", count=12, size=8)
    with pytest.raises(ModelError, match="google/vit-base-patch16-224-in21k.*save_pretrained"):
        train(UTKFACE, [f"data.path={folder}", f"output_dir={tmp_path / 'runs'}", *QUICK])
    assert not (tmp_path / "runs").exists()


def test_an_image_classifier_with_another_head_gets_a_new_head_of_the_task_size(tmp_path: Path) -> None:
    from fairlora.config import ModelConfig

    imagenet_like = load_model(ModelConfig(name="tiny-vit"), "image_classification", 5)
    imagenet_like.model.save_pretrained(tmp_path / "m")
    imagenet_like.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(ModelConfig(name=str(tmp_path / "m")), "image_classification", 2)
    assert loaded.model.classifier.out_features == 2 and loaded.model.config.num_labels == 2
    kept = loaded.model.vit.embeddings.cls_token.detach()  # the body is the checkpoint's
    assert np.allclose(kept, imagenet_like.model.vit.embeddings.cls_token.detach())
