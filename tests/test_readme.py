"""The README's "Register a new modality" example, run as a user would."""
import re

from conftest import ROOT
from orca.pipeline import train


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its embedder example"
    return match.group(1)


def test_readme_embedder_example_runs(make_cfg, tmp_path, monkeypatch):
    (tmp_path / "my_embedders.py").write_text(readme_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    record = train(make_cfg("task=digits", "body=tiny-random", "budget=smoke", "plugins=[my_embedders]",
                            "embedder.name=rows"))
    assert record["config"]["embedder"]["name"] == "rows"
    assert record["metrics"]["test"]["error"] >= 0
