"""Adapter methods on image models with their default targets (ViT / Swin q_proj, v_proj), the head
trained and saved with the adapter, and LiRA on an image run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairlora.auditing.run import audit
from fairlora.pipeline import load_run, train
from fairlora.runs import PREDICTIONS_FILE
from fairlora.tasks.predict import predict_frame

VISION_TINY = Path(__file__).parents[1] / "configs" / "vision-tiny.yaml"
QUICK = ["train.progress_bar=false", "eval.n_boot=0", "eval.splits=[test]", "data.max_examples=60"]


@pytest.mark.parametrize(
    ("method", "model"),
    [("lora", "tiny-swin"), ("pissa", "tiny-swin"), ("vera", "tiny-swin"), ("aflora", "tiny-swin"),
     ("lora", "tiny-vit"), ("vera", "tiny-vit")],
)  # fmt: skip
def test_default_targets_train_the_head_and_reload_identically(
    tmp_path: Path, method: str, model: str
) -> None:
    overrides = [f"output_dir={tmp_path}", f"method={method}", f"model.name={model}", "train.max_steps=3"]
    overrides += ["lora.target_modules=null", "vera.r=16", "aflora.target_modules=[q_proj,v_proj]", *QUICK]
    result = train(VISION_TINY, overrides)
    cfg, data, loaded = load_run(result.run_dir)
    names = [n for n, _ in loaded.model.named_modules()]
    assert any(n.endswith("q_proj.base_layer") for n in names) and any(
        "classifier.modules_to_save" in n for n in names
    )
    assert not any(n.endswith("k_proj.base_layer") for n in names)
    saved = pd.read_parquet(result.run_dir / PREDICTIONS_FILE)
    again = predict_frame(
        loaded.model, loaded.tokenizer, data.test, cfg.task, 128, 16, "test", progress=False
    )
    assert np.allclose(saved[["prob_0", "prob_1"]], again[["prob_0", "prob_1"]], atol=1e-5)


def test_lira_audits_an_image_run_per_group(tmp_path: Path) -> None:
    overrides = [*QUICK, f"output_dir={tmp_path / 'runs'}", "train.max_steps=2", "eval.splits=[test,train]"]
    run = train(VISION_TINY, [*overrides, "data.max_examples=200"])
    settings = [
        "audit.sections=[lira]",
        "audit.n_boot=0",
        "audit.lira.shadows=2",
        "audit.lira.member_fraction=0.25",
    ]
    result = audit([run.run_dir], tmp_path / "audit", settings)
    table = result.runs[0].sections["membership/lira"]
    assert {"red", "green", "blue"} <= set(table.by_group) and table.overall["auc"].value is not None
