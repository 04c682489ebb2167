"""Named registries for every pluggable component.

One small type, :class:`Registry`, serves tasks, embedders, bodies, heads, alignment
distances and source datasets. Registering a name twice is an error; looking up an
unknown name lists the known ones. Third-party packages add components through the
entry-point group ``orca.plugins``: each entry point names a module that registers its
components on import, e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."orca.plugins"]
    my_modality = "my_package.orca_plugin"
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from orca.errors import ConfigError

T = TypeVar("T")
PLUGIN_GROUP = "orca.plugins"


class Registry(Generic[T]):
    """A name -> factory map with loud failures."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@EMBEDDERS.register("conv1d")``."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ConfigError(
                    f"{self.kind} {name!r} is already registered (by {self._entries[name]!r}); "
                    "pick another name"
                )
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        load_plugins()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._entries[name]

    def is_builtin(self, name: str) -> bool:
        """Registered by orca itself (its modules or tasks/), not by a plugin."""
        return getattr(self.get(name), "__module__", "").split(".")[0] in ("orca", "tasks")

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


TASKS: Registry = Registry("task")
EMBEDDERS: Registry = Registry("embedder")
BODIES: Registry = Registry("body")
HEADS: Registry = Registry("head")
DISTANCES: Registry = Registry("alignment distance")
SOURCES: Registry = Registry("source dataset")

_BUILTIN_MODULES = (
    "orca.embedders",
    "orca.heads",
    "orca.bodies",
    "orca.align.otdd",
    "orca.align.mmd",
    "orca.align.sources",
    "tasks",
)
_loaded = False


def import_plugin(module: str) -> None:
    """Import a ``plugins=[...]`` module, whose components register on import."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # any failure of the user's module: name it, and the fix
        raise ConfigError(f"plugin module {module!r} could not be imported ({type(exc).__name__}: {exc}); "
                          "check the name in plugins=[...] and that its package is installed") from None


def load_plugins() -> None:
    """Import the built-in component modules and every ``orca.plugins`` entry point once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=PLUGIN_GROUP):
        ep.load()
