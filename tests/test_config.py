"""Config schema: defaults, overrides, and one clear message per kind of bad input."""

from __future__ import annotations

import pytest

from fairlora.config import RunConfig, build_config, load_config, parse_overrides
from fairlora.errors import ConfigError


def test_defaults_fill_every_section():
    cfg = build_config({})
    assert isinstance(cfg, RunConfig)
    assert cfg.method == "lora" and cfg.lora.r == 8 and cfg.model.name == "minilm-l6"
    assert cfg.run_dir.as_posix() == "runs/run"


def test_overrides_are_typed_and_nested():
    cfg = build_config({"lora": {"r": 2}}, ["lora.r=4", "train.lr=1e-4", "eval.splits=[test]", "name=x"])
    assert cfg.lora.r == 4 and cfg.train.lr == pytest.approx(1e-4)
    assert cfg.eval.splits == ["test"] and cfg.name == "x"


def test_parse_overrides_rejects_missing_equals():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["lora.r"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("lora.r=0", r"lora\.r: Input should be greater than or equal to 1"),
        ("train.lr=0", r"train\.lr: Input should be greater than 0"),
        ("train.lr=-1e-3", r"train\.lr: Input should be greater than 0"),
        ("train.epochs=abc", r"train\.epochs: Input should be a valid number"),
        ("lora.rank=4", r"lora\.rank: unknown key; allowed keys here: r, alpha"),
        ("method=adapterx", r"method: unknown method 'adapterx'; allowed: (?=.*\bnone\b)(?=.*\bpissa\b)"),
        ("lora.fraction_from=middle", r"lora\.fraction_from: Input should be 'front', 'back' or 'random'"),
        ("colour=red", r"colour: unknown key; allowed keys here: name, output_dir, seed"),
        ("name=../escape", r"name: use letters, digits"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed_values(override, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        build_config({}, [override])
    assert info.value.exit_code == 2


def test_load_config_from_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: demo\nmethod: full\ntrain:\n  lr: 2.0e-5\n")
    cfg = load_config(path, ["seed=7"])
    assert (cfg.name, cfg.method, cfg.seed) == ("demo", "full", 7)
    assert cfg.train.lr == pytest.approx(2e-5)


def test_missing_and_malformed_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_resolved_config_round_trips_through_yaml():
    import yaml

    cfg = build_config({}, ["lora.target_modules=[query]", "data.identity.bias_rate=0.3"])
    again = build_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
