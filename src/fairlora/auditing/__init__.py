"""Audit orchestration: plans the sections of each run, loads models where needed, caches, shadows."""

from fairlora.auditing.run import audit

__all__ = ["audit"]
