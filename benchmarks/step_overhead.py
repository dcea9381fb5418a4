"""Step overhead: fairlora's LoRA training step vs a bare PEFT + torch loop, interleaved in one run.

Both paths train the same base model (loaded twice), with the same LoRA adapter (r 8, alpha 16,
default targets; image models: q_proj / v_proj with the `classifier` head trained), the same tokenized
examples (every one exactly `--seq` tokens) or the same `--image-size` square images (decoded and
processed by the collator every step), the same collator, batch size, optimizer (AdamW, fused when
the Trainer's default optim is), gradient clipping and linear
LR schedule. A step is the interval between two consecutive step ends, so fetching the batch and
everything else each path does per step counts. The paths alternate in blocks (ABBA order), the first
step of every block is dropped, and the ratio is the median over blocks of the paired per-block
fairlora/bare ratio of median step times (drift between blocks cancels), printed with its bootstrap
95% CI: target <= 1.05.
Peak memory comes from a separate subprocess per path (CPU: peak RSS; CUDA: max allocated).

    .venv/bin/python benchmarks/step_overhead.py [--models minilm-l6,smollm2-135m,vit-base-random]
        [--batch 8] [--seq 128] [--image-size 224] [--steps 24] [--threads N]
        [--out benchmarks/results/step_overhead.json]

`vit-base-random` is a randomly initialised ViT-Base/16 (224x224, 86M parameters) written to a
temporary folder with its image processor (no download); `tiny-vit` / `tiny-swin` work for smoke runs.

Timings never fail the run: a ratio over the target is reported, not raised.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # quiet fork warnings (memory subprocesses)

import argparse
import json
import math
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import peft
import torch
import transformers
from peft import LoraConfig, TaskType, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_TARGETS
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader
from transformers import PrinterCallback, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from fairlora.config import ModelConfig, RunConfig, build_config
from fairlora.data.image_synthetic import render_bar
from fairlora.methods import apply_method, count_parameters
from fairlora.methods.adapters import default_targets
from fairlora.models import LoadedModel, load_model, model_type
from fairlora.tasks import get_task
from fairlora.training.trainer import build_trainer, training_arguments

TARGET_RATIO = 1.05
NOISY_CORES = 0.2  # other processes' CPU use (cores) above which a timing is flagged
SEED = 1234
LORA_R = 8
LORA_ALPHA = 16.0
CHILD_MARK = "STEP_OVERHEAD_CHILD "
DEFAULT_MODELS = "minilm-l6,smollm2-135m,vit-base-random"
RANDOM_VIT = "vit-base-random"  # built from ViTConfig() defaults: ViT-Base/16 at 224x224
VISION_TARGETS = ["q_proj", "v_proj"]  # transformers 5 names of ViT / Swin attention projections
DEFAULT_OUT = "benchmarks/results/step_overhead.json"
PATHS = ("fairlora", "bare")
_TEXT = (
    "the people of every town gather near old river bridges when summer evenings grow long and warm "
    "children play games while parents talk about work weather food music books travel gardens "
    "history science markets schools doctors farmers teachers writers painters builders sailors "
    "morning light falls across quiet streets and busy harbours where ships unload coffee grain "
    "cotton timber metal glass paper and many other goods carried from distant places"
)
_WORDS = tuple(_TEXT.split())

console = Console(width=None if sys.stdout.isatty() else 160)


def _sync(device: torch.device) -> None:
    """Wait for queued device work, so a clock read marks the true end of a step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _intervals(ends: list[float]) -> list[float]:
    """Seconds between consecutive step ends (the block's first step has no start and is dropped)."""
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def default_threads() -> int:
    """All cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bench_device() -> torch.device:
    """The device both paths train on: the one HF TrainingArguments picks (CUDA when available)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cpu_busy_s() -> float | None:
    """Linux: CPU seconds all processes have used so far (/proc/stat), None elsewhere."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


class ForeignLoad:
    """Cores other processes kept busy between start() and stop() (a contention check)."""

    def start(self) -> None:
        """Remember the clocks."""
        self.wall, self.own, self.busy = time.perf_counter(), time.process_time(), _cpu_busy_s()

    def stop(self) -> float | None:
        """Average number of cores used by other processes since start(); None off Linux."""
        busy = _cpu_busy_s()
        if busy is None or self.busy is None:
            return None
        wall = time.perf_counter() - self.wall
        own = time.process_time() - self.own
        return max(0.0, (busy - self.busy - own) / wall) if wall > 0 else None


def resolve_model(model_name: str, work: Path) -> str:
    """The name to load: `vit-base-random` becomes a folder (random ViT-Base/16 + processor) under `work`."""
    if model_name != RANDOM_VIT:
        return model_name
    folder = work / RANDOM_VIT
    if not (folder / "config.json").is_file():
        config = transformers.ViTConfig()  # the ViT-Base/16 defaults: 224x224, 12 layers, hidden 768
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = transformers.ViTForImageClassification(config)
        model.save_pretrained(folder)
        transformers.ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(folder)
    return str(folder)


def is_vision(model_name: str) -> bool:
    """True for image classifiers (ViT, Swin, ...): they take images, not tokens."""
    kind = model_type(ModelConfig(name=model_name))
    return kind in transformers.models.auto.modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES


def make_config(model_name: str, batch: int, seq: int, max_steps: int = 1) -> RunConfig:
    """fairlora's run config: (image) classification, LoRA r 8 / alpha 16 on the default targets, quiet."""
    vision = is_vision(model_name)
    return build_config(
        {
            "task": "image_classification" if vision else "classification",
            "method": "lora",
            "seed": SEED,
            "model": {"name": model_name, "max_length": seq},
            "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "target_modules": VISION_TARGETS if vision else None},
            "train": {
                "batch_size": batch,
                "max_steps": max_steps,
                "progress_bar": False,
                "report_to": [],
                "save_strategy": "no",
            },
        }
    )


def make_frame(tokenizer: Any, rows: int, seq: int) -> pd.DataFrame:
    """Synthetic texts longer than `seq` tokens (so truncation makes every example `seq`), random labels."""
    rng = random.Random(SEED)
    texts: list[str] = []
    for _ in range(rows):
        words = 2 * seq
        while True:
            text = " ".join(rng.choice(_WORDS) for _ in range(words))
            if len(tokenizer(text, add_special_tokens=True)["input_ids"]) > seq + 2:
                break
            words *= 2
        texts.append(text)
    return pd.DataFrame({"text": texts, "label": [rng.randint(0, 1) for _ in range(rows)]})


def make_image_frame(rows: int, size: int) -> pd.DataFrame:
    """Generated `size` x `size` RGB images (a bar on noise; its orientation is the label), in memory."""
    rng = np.random.default_rng(SEED)
    labels = [i % 2 for i in range(rows)]
    images = [render_bar(bool(label), (200, 40, 40), rng, size) for label in labels]
    return pd.DataFrame({"id": [str(i) for i in range(rows)], "image": images, "label": labels})


def make_examples_frame(cfg: RunConfig, processor: Any, rows: int, seq: int, size: int) -> pd.DataFrame:
    """The seeded frame both paths train on: images for an image task, exact-length texts otherwise."""
    if cfg.task == "image_classification":
        return make_image_frame(rows, size)
    frame = make_frame(processor, rows, seq)
    check_lengths(get_task(cfg.task).encode(frame, processor, seq), seq)
    return frame


def check_lengths(examples: list[dict[str, Any]], seq: int) -> None:
    """Both paths must see identical shapes: every example exactly `seq` tokens."""
    lengths = {len(example["input_ids"]) for example in examples}
    if lengths != {seq}:
        raise RuntimeError(f"synthetic examples are not all {seq} tokens long: lengths {sorted(lengths)}")


class StepTimer(TrainerCallback):
    """Records the clock at every on_step_end (after a device sync)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ends: list[float] = []

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Stamp the end of an optimizer step."""
        _sync(self.device)
        self.ends.append(time.perf_counter())


class StepPath(Protocol):
    """One way of training: run a block of steps, return the measured step times."""

    name: str
    trainable: int

    def run_block(self, steps: int) -> list[float]:
        """Run `steps` optimizer steps; return the `steps - 1` intervals between step ends."""
        ...


class FairloraPath:
    """fairlora's own path: build_config -> load_model -> apply_method -> build_trainer -> train()."""

    name = "fairlora"

    def __init__(self, model_name: str, batch: int, seq: int, rows: int, workdir: Path, size: int) -> None:
        self.cfg = make_config(model_name, batch, seq)
        self.device = bench_device()
        torch.manual_seed(SEED)
        self.loaded: LoadedModel = load_model(self.cfg.model, self.cfg.task)
        torch.manual_seed(SEED)
        self.setup = apply_method(self.cfg, self.loaded)
        self.trainable = count_parameters(self.setup.model)[0]
        self.frame = make_examples_frame(self.cfg, self.loaded.tokenizer, rows, seq, size)
        self.workdir = workdir

    def run_block(self, steps: int) -> list[float]:
        """A fresh Trainer (same model) trains `steps` steps; the timer callback stamps each step end."""
        self.cfg.train.max_steps = steps
        trainer = build_trainer(self.cfg, self.setup, self.loaded.tokenizer, self.frame, self.workdir)
        trainer.remove_callback(PrinterCallback)  # only prints the end-of-train metrics dict
        timer = StepTimer(self.device)
        trainer.add_callback(timer)
        trainer.train()
        return _intervals(timer.ends)


class BarePath:
    """A hand-written loop: PEFT get_peft_model + DataLoader + AdamW + clip + linear LR schedule."""

    name = "bare"

    def __init__(self, model_name: str, batch: int, seq: int, rows: int, workdir: Path, size: int) -> None:
        cfg = make_config(model_name, batch, seq)
        args = training_arguments(cfg, workdir)  # read the optimizer settings the Trainer uses
        self.lr = args.learning_rate
        self.weight_decay = args.weight_decay
        self.betas = (args.adam_beta1, args.adam_beta2)
        self.eps = args.adam_epsilon
        self.max_grad_norm = args.max_grad_norm
        self.fused = args.optim == "adamw_torch_fused"  # the Trainer default (an str enum)
        self.batch = batch
        self.device = bench_device()
        torch.manual_seed(SEED)
        loaded = load_model(cfg.model, cfg.task)
        vision = cfg.task == "image_classification"
        # image models: the usual PEFT recipe, the generic wrapper with the head in modules_to_save
        targets = (
            VISION_TARGETS
            if vision
            else default_targets(loaded.model.config.model_type, LORA_TARGETS, "lora")
        )
        lora = LoraConfig(
            task_type=None if vision else TaskType.SEQ_CLS,
            modules_to_save=["classifier"] if vision else None,
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=0.0,
            target_modules=targets,
        )
        torch.manual_seed(SEED)
        self.model = get_peft_model(loaded.model, lora).to(self.device)
        self.trainable = count_parameters(self.model)[0]
        frame = make_examples_frame(cfg, loaded.tokenizer, rows, seq, size)  # seeded: the same as fairlora's
        self.examples = get_task(cfg.task).encode(frame, loaded.tokenizer, seq)
        self.collator = get_task(cfg.task).collator(loaded.tokenizer)

    def _optimizer(self) -> torch.optim.Optimizer:
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if p.ndim >= 2 and not n.endswith("bias")]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and not n.endswith("bias"))]
        groups = [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps, fused=self.fused)

    def run_block(self, steps: int) -> list[float]:
        """`steps` steps of forward, backward, clip, optimizer and scheduler step, zero_grad."""
        model, device = self.model, self.device
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = self._optimizer()
        schedule: Callable[[int], float] = lambda step: max(0.0, (steps - step) / steps)  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        generator = torch.Generator().manual_seed(SEED)
        loader = DataLoader(
            self.examples,
            batch_size=self.batch,
            shuffle=True,
            generator=generator,
            collate_fn=self.collator,
            pin_memory=device.type == "cuda",
        )
        batches = iter(loader)
        ends: list[float] = []
        for _ in range(steps):
            inputs = {key: value.to(device) for key, value in next(batches).items()}
            loss = model(**inputs).loss
            loss.backward()
            if self.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            ends.append(time.perf_counter())
        return _intervals(ends)


def make_path(
    kind: str, model_name: str, batch: int, seq: int, block_steps: int, work: Path, size: int = 224
) -> StepPath:
    """Build the `kind` ("fairlora" or "bare") path, with enough rows that no block ends an epoch."""
    cls = FairloraPath if kind == "fairlora" else BarePath
    name = resolve_model(model_name, work)
    return cls(name, batch, seq, batch * max(2 * block_steps, 16), work, size)


def summarize(times: list[float]) -> dict[str, Any]:
    """Median, mean, spread and the raw step times."""
    if not times:
        return {"median_s": None, "mean_s": None, "min_s": None, "max_s": None, "steps": 0, "step_s": []}
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "max_s": max(times),
        "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
        "steps": len(times),
        "step_s": [round(t, 6) for t in times],
    }


def ratio_ci(
    paired: list[float], level: float = 0.95, n_boot: int = 2000
) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the median of the per-block fairlora/bare ratios."""
    if len(paired) < 3:
        return None, None
    rng = random.Random(SEED)
    medians = sorted(statistics.median(rng.choices(paired, k=len(paired))) for _ in range(n_boot))
    tail = int((1 - level) / 2 * n_boot)
    return round(medians[tail], 4), round(medians[n_boot - 1 - tail], 4)


def time_model(model_name: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Interleaved timing of both paths on one model (loading excluded)."""
    per_block = opts.block_steps
    blocks = max(1, math.ceil(opts.steps / per_block))
    with tempfile.TemporaryDirectory(prefix="fairlora-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        paths = {
            kind: make_path(kind, model_name, opts.batch, opts.seq, per_block + 1, work, opts.image_size)
            for kind in PATHS
        }
        load_s = time.perf_counter() - t0
        console.print(
            f"[bold]{model_name}[/]: loaded both paths in {load_s:.1f} s; trainable params "
            f"fairlora {paths['fairlora'].trainable:,} / bare {paths['bare'].trainable:,}; "
            f"{blocks} blocks x {per_block} measured steps per path"
        )
        for path in paths.values():  # unmeasured warm-up: allocator, caches and threads settle first
            path.run_block(opts.warmup_steps)
        foreign = ForeignLoad()
        foreign.start()
        times: dict[str, list[float]] = {kind: [] for kind in PATHS}
        blocks_s: dict[str, list[float]] = {kind: [] for kind in PATHS}
        order: list[str] = []
        for block in range(blocks):
            kinds = PATHS if block % 2 == 0 else PATHS[::-1]  # ABBA: cancels a linear drift
            for kind in kinds:
                measured = paths[kind].run_block(per_block + 1)
                times[kind].extend(measured)
                blocks_s[kind].append(statistics.median(measured) if measured else float("nan"))
                order.append(kind)
            console.print(
                f"  block {block + 1}/{blocks}: fairlora {blocks_s['fairlora'][-1]:.4f} s/step, "
                f"bare {blocks_s['bare'][-1]:.4f} s/step"
            )
        other_cores = foreign.stop()
        trainable = {kind: paths[kind].trainable for kind in PATHS}
        vision = getattr(paths["fairlora"], "cfg").task == "image_classification"  # noqa: B009
        del paths
    result: dict[str, Any] = {kind: summarize(times[kind]) for kind in PATHS}
    for kind in PATHS:
        result[kind]["block_median_s"] = [round(t, 6) for t in blocks_s[kind]]
        result[kind]["trainable_params"] = trainable[kind]
    fair, bare = result["fairlora"]["median_s"], result["bare"]["median_s"]
    paired = [f / b for f, b in zip(blocks_s["fairlora"], blocks_s["bare"], strict=True) if f > 0 and b > 0]
    ratio = statistics.median(paired) if paired else None  # paired per block: robust to drift
    low, high = ratio_ci(paired)
    result.update(
        ratio=ratio,
        ratio_ci=[low, high],
        within_target=ratio is not None and ratio <= TARGET_RATIO,
        pooled_ratio=round(fair / bare, 4) if fair and bare else None,
        input=f"{opts.image_size}x{opts.image_size} px" if vision else f"{opts.seq} tokens",
        block_order=order,
        blocks=blocks,
        block_steps=per_block,
        warmup_steps=opts.warmup_steps,
        load_s=round(load_s, 2),
        other_cores=None if other_cores is None else round(other_cores, 3),
        same_trainable_params=trainable["fairlora"] == trainable["bare"],
    )
    return result


def _ru_maxrss_mib() -> float:
    """getrusage ru_maxrss in MiB (KiB on Linux, bytes on macOS).

    On Linux it also carries the parent's high-water mark over fork/vfork + exec, so a child of a big
    process reports at least the parent's peak: prefer VmHWM, which belongs to the exec'd image alone.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _vm_hwm_mib() -> float | None:
    """Linux: this process image's peak resident set size (VmHWM in /proc/self/status), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def child_main(opts: argparse.Namespace) -> None:
    """Subprocess: load one path, run a few steps, print its peak memory as one JSON line."""
    torch.set_num_threads(opts.threads)
    model_name = opts.models.split(",")[0]
    device = bench_device()
    with tempfile.TemporaryDirectory(prefix="fairlora-bench-mem-") as tmp:
        path = make_path(
            opts.child, model_name, opts.batch, opts.seq, opts.mem_steps, Path(tmp), opts.image_size
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        path.run_block(opts.mem_steps)
    hwm = _vm_hwm_mib()
    report: dict[str, Any] = {
        "peak_rss_mib": round(hwm if hwm is not None else _ru_maxrss_mib(), 1),
        "peak_rss_source": "VmHWM" if hwm is not None else "ru_maxrss",
        "ru_maxrss_mib": round(_ru_maxrss_mib(), 1),
    }
    if device.type == "cuda":
        report["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(CHILD_MARK + json.dumps(report), flush=True)


def measure_memory(kind: str, model_name: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of `kind` on `model_name`, from a subprocess that loads it and runs a few steps."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--models",
        model_name,
        "--batch",
        str(opts.batch),
        "--seq",
        str(opts.seq),
        "--image-size",
        str(opts.image_size),
        "--threads",
        str(opts.threads),
        "--mem-steps",
        str(opts.mem_steps),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=opts.mem_timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {opts.mem_timeout} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {done.returncode}: " + " | ".join(tail)}


def peak_mib(memory: dict[str, Any]) -> float | None:
    """The headline peak: CUDA max allocated where there is one, else peak RSS."""
    return memory.get("cuda_max_allocated_mib", memory.get("peak_rss_mib"))


def environment(threads: int) -> dict[str, Any]:
    """Versions and machine facts that the timings depend on."""
    device = bench_device()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "peak_rss",
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(rows: list[dict[str, Any]], env: dict[str, Any]) -> Table:
    """The results table."""
    mem = "peak CUDA MiB" if env["memory_kind"] == "cuda_max_allocated" else "peak RSS MiB"
    table = Table(
        title=f"fairlora LoRA step vs bare PEFT + torch loop ({env['device']}, target <= {TARGET_RATIO})"
    )
    for header in ("model", "batch", "input", "threads", "fairlora s/step", "bare s/step", "ratio"):
        table.add_column(header, justify="left" if header == "model" else "right")
    table.add_column(f"fairlora {mem}", justify="right")
    table.add_column(f"bare {mem}", justify="right")
    table.add_column("other load", justify="right")
    for row in rows:
        if row.get("error"):
            table.add_row(
                row["model"],
                str(row["batch"]),
                row.get("input", str(row["seq"])),
                str(row["threads"]),
                "error",
            )
            continue
        ratio = row["ratio"]
        style = "green" if row["within_target"] else "red"
        table.add_row(
            row["model"],
            str(row["batch"]),
            row.get("input", str(row["seq"])),
            str(row["threads"]),
            _fmt(row["fairlora"]["median_s"], ".4f"),
            _fmt(row["bare"]["median_s"], ".4f"),
            f"[{style}]{_fmt(ratio, '.3f')}[/]",
            _fmt(peak_mib(row["fairlora"].get("memory", {})), ",.0f"),
            _fmt(peak_mib(row["bare"].get("memory", {})), ",.0f"),
            _fmt(row.get("other_cores"), ".2f"),
        )
    table.caption = "other load: cores that other processes kept busy during the timing (should be ~0)"
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated model aliases")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128, help="tokens per example (all exactly this long)")
    parser.add_argument(
        "--image-size", type=int, default=224, help="image models: square images of this side"
    )
    parser.add_argument("--steps", type=int, default=24, help="measured steps per path and model (>= 10)")
    parser.add_argument("--block-steps", type=int, default=2, help="measured steps per block")
    parser.add_argument(
        "--warmup-steps", type=int, default=3, help="unmeasured steps per path before timing (>= 3)"
    )
    parser.add_argument("--threads", type=int, default=default_threads(), help="torch threads")
    parser.add_argument("--mem-steps", type=int, default=3, help="steps the memory subprocesses run")
    parser.add_argument("--mem-timeout", type=int, default=900, help="seconds per memory subprocess")
    parser.add_argument("--skip-memory", action="store_true", help="no memory subprocesses")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="JSON results file")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.warmup_steps < 3:
        parser.error("--warmup-steps must be >= 3 (the first steps of a path run slow)")
    if (
        min(opts.batch, opts.seq, opts.steps, opts.block_steps, opts.threads, opts.mem_steps, opts.image_size)
        < 1
    ):
        parser.error(
            "--batch, --seq, --image-size, --steps, --block-steps, --threads, --mem-steps must be >= 1"
        )
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for every model; print the table and write the JSON."""
    opts = parse_args(argv)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers v6 renames
    warnings.filterwarnings("ignore", message=".*pin_memory.*")  # the Trainer pins even on CPU
    if opts.child:
        child_main(opts)
        return 0
    torch.set_num_threads(opts.threads)
    env = environment(opts.threads)
    console.print(
        f"torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}; "
        f"device {env['device']}, {opts.threads} threads of {env['cpu_count']} cores"
    )
    rows: list[dict[str, Any]] = []
    models = [m.strip() for m in opts.models.split(",") if m.strip()]
    memory: dict[tuple[str, str], dict[str, Any]] = {}
    if not opts.skip_memory:  # first, while this process holds no model (its peak is not the children's)
        for model_name in models:
            for kind in PATHS:
                console.print(f"{model_name}: peak memory of the {kind} path (subprocess) ...")
                memory[model_name, kind] = measure_memory(kind, model_name, opts)
                if "error" in memory[model_name, kind]:
                    console.print(f"  [yellow]{kind} memory: {memory[model_name, kind]['error']}[/]")
    for model_name in models:
        row: dict[str, Any] = {
            "model": model_name,
            "batch": opts.batch,
            "seq": opts.seq,
            "threads": opts.threads,
        }
        try:
            row.update(time_model(model_name, opts))
        except Exception as exc:  # a broken model setup is reported and the others still run
            console.print(f"[red]{model_name}: {type(exc).__name__}: {exc}[/]")
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["traceback"] = traceback.format_exc()
            rows.append(row)
            continue
        for kind in PATHS:
            row[kind]["memory"] = memory.get((model_name, kind), {})
        rows.append(row)
    console.print(render(rows, env))
    for row in rows:
        if row.get("ratio") is not None:
            verdict = "within" if row["within_target"] else "OVER"
            low, high = row["ratio_ci"]
            ci = f"95% CI {low:.3f}-{high:.3f}, " if low is not None else ""
            console.print(
                f"{row['model']}: fairlora/bare = {row['ratio']:.3f} "
                f"({ci}{verdict} the {TARGET_RATIO} target; "
                f"median of {row['blocks']} paired block ratios, {row['fairlora']['steps']} / "
                f"{row['bare']['steps']} interleaved steps)"
            )
        if (row.get("other_cores") or 0.0) > NOISY_CORES:
            console.print(
                f"[yellow]{row['model']}: other processes kept {row['other_cores']:.2f} cores busy during "
                "the timing; rerun on a quiet machine before quoting it[/]"
            )
    payload = {
        "benchmark": "step_overhead",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "target_ratio": TARGET_RATIO,
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "child"
        },
        "environment": env,
        "results": rows,
    }
    write_json(opts.out, payload)
    console.print(f"wrote {opts.out}")
    return 1 if any(row.get("error") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
