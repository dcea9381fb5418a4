"""`fairlora export`: a run's adapter as a PEFT folder, or merged into the base as a plain HF model folder.

Every adapter method saves a standard PEFT folder (PiSSA rewritten as LoRA on the original weights,
AFLoRA with its vectors folded into A and B), so the PEFT export is that folder, and `--merge` loads
the run, folds and merges the adapter into the base weights and saves a folder `from_pretrained`
reads without fairlora or PEFT (safetensors; for smollm2 too, not GGUF).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from peft import PeftModel
from torch import nn

from fairlora.errors import ConfigError, RunDirError
from fairlora.runs import CONFIG_FILE, read_config, weights_dir
from fairlora.storage import write_dir_atomic

ADAPTER_CONFIG = "adapter_config.json"
FAIRLORA_ONLY = ("aflora_model.safetensors",)  # files only fairlora reads; the export leaves them out


def export_run(run_dir: Path, output: Path, *, merge: bool, overwrite: bool) -> Path:
    """Write the run's adapter (PEFT format) or, with `merge`, the merged model to `output`; return it."""
    run_dir, output = Path(run_dir), Path(output)
    cfg = read_config(run_dir)
    saved = weights_dir(cfg.run_dir, cfg.method)
    if cfg.method in ("full", "none"):
        _check_has_weights(cfg.method, run_dir, saved, merge)
    _check_output(run_dir, output, overwrite)
    if cfg.method == "full":
        write_dir_atomic(output, lambda path: shutil.copytree(saved, path, dirs_exist_ok=True))
        return output
    if not (saved / ADAPTER_CONFIG).is_file():
        raise RunDirError(
            f"{saved / ADAPTER_CONFIG} not found: the run did not finish training; continue it with "
            f"`fairlora train {run_dir / CONFIG_FILE} --resume`"
        )
    if not merge:
        write_dir_atomic(output, lambda path: _copy_adapter(saved, path))
        return output
    model, tokenizer = merged_model(run_dir)

    def write(path: Path) -> None:
        model.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)

    write_dir_atomic(output, write)
    return output


def merged_model(run_dir: Path) -> tuple[nn.Module, object]:
    """The run's model with its adapter merged into the base weights (a plain transformers model)."""
    from fairlora.methods.aflora.layer import fold_into_lora
    from fairlora.pipeline import load_run

    _, _, loaded = load_run(run_dir)
    model = loaded.model
    if not isinstance(model, PeftModel):
        raise RunDirError(f"{run_dir}: the saved weights are not a PEFT adapter; nothing to merge")
    fold_into_lora(model)
    merged = model.merge_and_unload()
    merged.requires_grad_(False)
    return merged, loaded.tokenizer


def _check_output(run_dir: Path, output: Path, overwrite: bool) -> None:
    if output.resolve() == run_dir.resolve() or run_dir.resolve() in output.resolve().parents:
        raise ConfigError(f"--output {output}: choose a folder outside the run folder {run_dir}")
    if output.exists() and not output.is_dir():
        raise RunDirError(f"--output {output} is a file; choose a folder path")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise RunDirError(f"{output} already exists and is not empty; pass --overwrite or choose another -o")


def _copy_adapter(saved: Path, path: Path) -> None:
    for item in saved.iterdir():
        if item.is_file() and item.name not in FAIRLORA_ONLY:
            shutil.copy2(item, path / item.name)


def _check_has_weights(method: str, run_dir: Path, saved: Path, merge: bool) -> None:
    if method == "none":
        raise ConfigError(
            f"{run_dir}: method `none` trains no adapter (the base model is unchanged, only a task head "
            f"trains): there is nothing to export or merge"
        )
    if merge:
        raise ConfigError(
            f"{run_dir}: method `full` has no adapter, so there is nothing to merge: {saved} already is a "
            f"complete model folder; run the export without --merge to copy it"
        )
    if not saved.is_dir():
        raise RunDirError(f"{saved} not found: the run did not finish training")
