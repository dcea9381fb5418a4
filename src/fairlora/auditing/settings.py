"""The settings of one audit: built once, applied equally to every run it compares, recorded with it.

They come from the defaults, then the `audit:` section (and `eval.min_group_size`) of an optional
YAML file, then the command's `audit.*` / `eval.min_group_size` overrides. A run's own `audit:`
section is never read: a run trained with `audit.limit: 100` is audited exactly like its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairlora.config import AuditConfig, RunConfig, load_config
from fairlora.errors import ConfigError
from fairlora.runs import read_config

OVERRIDE_PREFIXES = ("audit.", "eval.min_group_size")


@dataclass(frozen=True)
class AuditSettings:
    """What every section of every audited run is computed with."""

    audit: AuditConfig
    min_group_size: int

    def table_options(self) -> dict[str, Any]:
        """Keyword arguments of every per-group table builder."""
        return {
            "min_group_size": self.min_group_size,
            "n_boot": self.audit.n_boot,
            "seed": self.audit.seed,
            "level": self.audit.ci_level,
        }

    def record(self) -> dict[str, Any]:
        """The settings as stored under "options" in the audit's results.json."""
        return self.audit.model_dump(mode="json") | {"min_group_size": self.min_group_size}


def audit_settings(
    overrides: list[str] | None = None, config_file: str | Path | None = None
) -> AuditSettings:
    """Defaults, then `config_file`'s audit section and eval.min_group_size, then the overrides.

    The file may be a run config or hold only an `audit:` section; its other sections are validated
    but not used. Overrides other than audit.* and eval.min_group_size are refused.
    """
    for item in overrides or []:
        if not item.strip().startswith(OVERRIDE_PREFIXES):
            raise ConfigError(
                f"override {item!r}: an audit only takes audit.* and eval.min_group_size overrides; "
                f"other settings are fixed by the run (train a new run to change them)"
            )
    cfg = load_config(config_file, overrides)
    return AuditSettings(cfg.audit, cfg.audit.min_group_size or cfg.eval.min_group_size)


def run_config(run_dir: Path, settings: AuditSettings) -> RunConfig:
    """The run's resolved config with the audit's settings in place of its own audit section."""
    cfg = read_config(run_dir, without=("audit",))
    evaluation = cfg.eval.model_copy(update={"min_group_size": settings.min_group_size})
    return cfg.model_copy(update={"audit": settings.audit, "eval": evaluation})
