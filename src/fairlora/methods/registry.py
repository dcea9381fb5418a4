"""The method registry: one `register_method(Method(...))` call makes a method usable everywhere.

The config validates `method:` and its section against it, `fairlora list methods` lists it, the
pipeline applies, saves and reloads through it. Nothing else names a method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from fairlora.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from fairlora.config import RunConfig
    from fairlora.methods.base import MethodSetup
    from fairlora.models import LoadedModel

Apply = Callable[["RunConfig", "LoadedModel", str], "MethodSetup"]
Load = Callable[["RunConfig", "LoadedModel", Path], "nn.Module"]
Check = Callable[["RunConfig", list[str], str], None]


@dataclass(frozen=True)
class Method:
    """A fine-tuning method: how to apply it, where it saves, how a saved run loads again.

    `apply(cfg, loaded, adapter_name)` wraps `loaded.model` (adding a named adapter when the model is
    already wrapped) and returns a MethodSetup; `load(cfg, loaded, weights_dir)` puts saved weights
    on a freshly loaded base; `check(cfg, linear_module_names, model_type)` validates settings before anything
    is written. `section` is the config section (key, pydantic class) the method reads, if any.
    `loads_from_weights`: the saved folder is a complete model that replaces the base (full).
    """

    name: str
    description: str
    apply: Apply
    load: Load
    weights_dir: str
    section: tuple[str, type[BaseModel]] | None = None
    check: Check | None = None
    loads_from_weights: bool = False


_METHODS: dict[str, Method] = {}
_SECTIONS: dict[str, type[BaseModel]] = {}


def register_method(method: Method) -> Method:
    """Register `method` (and its config section) under its name; re-registering replaces it."""
    if method.section is not None:
        register_section(*method.section)
    _METHODS[method.name] = method
    return method


def register_section(key: str, schema: type[BaseModel]) -> None:
    """Add a top-level config section (e.g. `lora:`), validated by `schema`, with its defaults."""
    owner = _SECTIONS.get(key)
    if owner is not None and owner.__qualname__ != schema.__qualname__:
        raise ValueError(f"config section {key!r} is already registered by {owner.__qualname__}")
    _SECTIONS[key] = schema


def get_method(name: str) -> Method:
    """The registered method called `name`, or a ConfigError listing the known ones."""
    load_builtin_methods()
    if name not in _METHODS:
        raise ConfigError(f"method: unknown method {name!r}; allowed: {', '.join(_METHODS)}")
    return _METHODS[name]


def method_names() -> list[str]:
    """Names of every registered method, in registration order."""
    load_builtin_methods()
    return list(_METHODS)


def registered_sections() -> dict[str, type[BaseModel]]:
    """Config sections added by methods (key -> schema)."""
    load_builtin_methods()
    return dict(_SECTIONS)


def describe_methods() -> dict[str, str]:
    """Method name -> one-line description, for `fairlora list methods`."""
    return {name: get_method(name).description for name in method_names()}


def load_builtin_methods() -> None:
    """Import the packaged methods (each registers itself on import)."""
    import fairlora.methods.aflora  # noqa: F401
    import fairlora.methods.balora  # noqa: F401
    import fairlora.methods.full  # noqa: F401
    import fairlora.methods.lora  # noqa: F401
    import fairlora.methods.vera  # noqa: F401
