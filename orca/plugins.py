"""Components from other packages, usable by name with their own configs.

A task, embedder or body registered outside orca (an ``orca.plugins`` entry point, or a
``plugins=[my_module]`` module) is chosen like ours: ``task=fsdd embedder=logspec``. Hydra
finds its config in one of two places, searched after our ``configs/``:

1. **Config folders a package ships.** An entry point in the group ``orca.configs`` names a
   package that holds config groups (``task/fsdd.yaml``, ``embedder/logspec.yaml``, ...)::

       [project.entry-points."orca.configs"]
       my_modality = "my_package.configs"

   becomes the search-path entry ``pkg://my_package.configs``.
2. **The registered class's own defaults**, for a name that no config folder has: a config
   written from its constructor's keyword defaults into a temporary folder for this process.
   A task's ``config`` class attribute adds keys outside ``task:`` (its embedder, say:
   ``config = {"embedder": {"name": "logspec"}}``); its ``data.root`` defaults to
   ``${paths.data_dir}/<name>``, and a dense task gets the dense head.

Only a command line that names such a component pays for importing the plugins here (this
runs before Hydra, see orca/train.py); the others stay as fast as before.
"""
from __future__ import annotations

import atexit
import inspect
import shutil
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from orca.config_path import known_options, package_search_path

PLUGGABLE = ("task", "embedder", "body")  # config groups a plugin may add options to
# Constructor arguments the pipeline passes itself, so they are not config keys.
_PASSED = {"task": (), "embedder": ("input_shape", "body", "target_len"), "body": ("path", "pretrained")}


def with_plugin_configs(argv: list[str]) -> list[str]:
    """`argv` plus a ``hydra.searchpath=[...]`` override when plugins bring configs, so that
    ``task=NAME`` (or embedder=, body=) finds a plugin's; unchanged otherwise."""
    parsed = _parse(argv)
    if parsed is None:  # a syntax error: the preflight reports it
        return argv
    entries = package_search_path()
    wanted = [(group, value) for group, values in parsed["choices"].items() for value in values]
    missing = [(g, v) for g, v in wanted if v not in known_options(g)]
    if missing:
        generated = write_class_configs(missing, parsed["plugins"])
        if generated:
            entries.append(f"file://{generated}")
    if not entries:
        return argv
    own = [a for a in argv if a.startswith("hydra.searchpath=")]
    if own:  # the user's entries first, then the plugins'
        user = own[0].split("=", 1)[1].strip().strip("[]")
        entries = [e for e in [*user.split(","), *entries] if e]
    return [a for a in argv if a not in own] + [f"hydra.searchpath=[{','.join(entries)}]"]


def _parse(argv: list[str]) -> dict | None:
    """{"choices": {group: [options named]}, "plugins": [modules]} from the overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except Exception:
        return None
    choices, plugins = {}, []
    for o in overrides:
        key = o.key_or_group
        try:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        except Exception:  # a sweep only the sweeper can enumerate
            continue
        if key in PLUGGABLE:
            choices[key] = [str(v) for v in values if v is not None]
        elif key == "plugins":
            plugins = [str(m) for v in values for m in (v if isinstance(v, list) else [v])]
    return {"choices": choices, "plugins": plugins}


def write_class_configs(wanted: list[tuple[str, str]], plugin_modules: list[str]) -> Path | None:
    """Write ``<group>/<name>.yaml`` for every (group, name) a plugin registered, from its
    class; return the folder (removed when the process ends), or None if none was found."""
    from orca.registry import BODIES, EMBEDDERS, TASKS, import_plugin

    # Importing the plugins and our components loads torch: only a command line that needs it.

    for module in plugin_modules:
        import_plugin(module)
    registries = {"task": TASKS, "embedder": EMBEDDERS, "body": BODIES}
    found = [(g, n) for g, n in wanted if n in registries[g]]
    if not found:
        return None  # unknown names: the preflight lists the known ones
    folder = Path(tempfile.mkdtemp(prefix="orca-plugin-configs-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for group, name in found:
        target = folder / group / f"{name}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(class_config(group, name, registries[group].get(name)))
    return folder


def keyword_defaults(factory, passed: tuple[str, ...] = ()) -> dict:
    """{argument: default} of a class's constructor (or a function), its config keys."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    return {name: p.default for name, p in inspect.signature(target).parameters.items()
            if name not in ("self", *passed) and p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def class_config(group: str, name: str, factory) -> str:
    """The YAML config of a registered component, from its defaults."""
    options = {"name": name, **keyword_defaults(factory, _PASSED[group])}
    header = f"# written by orca/plugins.py from {getattr(factory, '__module__', '?')}.{factory.__name__}\n"
    if group != "task":
        return header + OmegaConf.to_yaml(options)
    tree = {"task": options, "data": {"root": f"${{paths.data_dir}}/{name}"}}
    tree = OmegaConf.to_container(OmegaConf.merge(tree, getattr(factory, "config", {}) or {}))
    if getattr(factory, "output_kind", None) == "dense":
        tree = {"defaults": [{"override /head": "dense"}, "_self_"], **tree}
    return "# @package _global_\n" + header + OmegaConf.to_yaml(tree)  # the package line must come first
