from importlib.metadata import EntryPoint

import pytest

from orca import registry
from orca.errors import ConfigError
from orca.registry import BODIES, DISTANCES, EMBEDDERS, HEADS, SOURCES, TASKS, Registry


def test_register_and_get():
    reg = Registry("widget")
    reg.register("a")(int)
    assert reg.get("a") is int
    assert "a" in reg and reg.names() == ["a"]


def test_duplicate_name_is_an_error():
    reg = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("a")(float)


def test_unknown_name_lists_known_names():
    with pytest.raises(ConfigError) as err:
        EMBEDDERS.get("nope")
    assert "unknown embedder 'nope'" in str(err.value)
    for name in ("conv1d", "patch2d", "linear_patch"):
        assert name in str(err.value)


def test_builtin_components_are_registered():
    assert {"ecg", "digits"} <= set(TASKS.names())
    assert {"minilm", "roberta-base", "bert-base-uncased", "gpt2", "tiny-random"} <= set(BODIES.names())
    assert {"otdd", "mmd"} <= set(DISTANCES.names())
    assert {"conll2003", "pydoc-topics"} <= set(SOURCES.names())
    assert "pooled" in HEADS.names()


def test_entry_point_plugins_are_loaded(monkeypatch, tmp_path):
    plugin = tmp_path / "my_orca_plugin.py"
    plugin.write_text(
        "from orca.registry import HEADS\n"
        "@HEADS.register('plugin-head')\n"
        "def plugin_head(hidden_size, num_outputs):\n"
        "    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="mine", value="my_orca_plugin", group=registry.PLUGIN_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.PLUGIN_GROUP else [])
    monkeypatch.setattr(registry, "_loaded", False)
    assert "plugin-head" in HEADS.names()
