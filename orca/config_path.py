"""Where Hydra finds the config groups: our ``configs/`` folder first, then the config
folders that plugin packages declare (entry points in the group ``orca.configs``, see
orca/plugins.py). The plugins' search path (orca/plugins.py), the command-line checks
(orca/preflight.py) and the suite checks (orca/sweep.py) all read them from here.
"""
from __future__ import annotations

import importlib.resources
from importlib.metadata import entry_points
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_GROUP = "orca.configs"  # the entry-point group of packages that ship config folders


def package_search_path() -> list[str]:
    """Hydra search-path entries (``pkg://<package>``) for the config folders plugin packages declare."""
    return [f"pkg://{ep.value}" for ep in entry_points(group=CONFIG_GROUP)]


def known_options(group: str) -> list[str]:
    """The options of a config group: the files in configs/<group>/ and in the config
    folders of plugin packages."""
    names = {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")}
    for entry in package_search_path():
        try:
            folder = importlib.resources.files(entry.removeprefix("pkg://")).joinpath(group)
        except (ModuleNotFoundError, TypeError):
            continue  # a declared package that is not importable: Hydra says so
        if folder.is_dir():
            names |= {f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml")}
    return sorted(names)
