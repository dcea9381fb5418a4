"""Per-group audit metrics, computed from one stored prediction pass (and the model where needed).

`fairlora.audit` is both this package and the audit entry point: calling the package,
`fairlora.audit(run_dirs, out_dir, overrides)`, runs `fairlora.auditor.audit`.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    """A package that can be called: importing a submodule rebinds `fairlora.audit` to the package."""

    def __call__(self, run_dirs: Any, out_dir: Any, overrides: list[str] | None = None, **kwargs: Any) -> Any:
        """Audit one or more run folders per group; writes results.json and report.html to out_dir."""
        from fairlora.auditor import audit

        single = isinstance(run_dirs, str) or hasattr(run_dirs, "is_dir")  # one str or Path
        runs = [run_dirs] if single else list(run_dirs)
        return audit(runs, out_dir, overrides, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
