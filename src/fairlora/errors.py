"""Errors a user can act on: each names the field or file at fault and what to do."""

from __future__ import annotations


class FairloraError(Exception):
    """Base class of all user-facing errors; the CLI prints the message and exits with `exit_code`."""

    exit_code = 1


class ConfigError(FairloraError):
    """A config key, type or value is wrong."""

    exit_code = 2


class DataError(FairloraError):
    """A dataset, file, column or group is missing or unusable."""

    exit_code = 2


class ModelError(FairloraError):
    """A model cannot be found or loaded."""

    exit_code = 2


class RunDirError(FairloraError):
    """A run directory exists (use --overwrite / --resume) or is incomplete."""

    exit_code = 3


class TrainingError(FairloraError):
    """Training diverged (NaN/inf loss) or cannot continue."""

    exit_code = 4


class AuditError(FairloraError):
    """An audit cannot be computed from what a run holds (e.g. calibration without probabilities)."""

    exit_code = 5
