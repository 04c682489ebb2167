"""method=classical: scikit-learn on flattened inputs, strength chosen on validation, the
same record as a transformer run, for class, multi-label and field tasks."""
import json

import pytest

from formats import WRITERS
from orca.errors import ConfigError
from orca.pipeline import train


@pytest.mark.parametrize("name", ["digits", "deepsea", "darcy"])
def test_classical_baseline_writes_a_full_record(make_cfg, tmp_path, name):
    root = WRITERS[name].write(tmp_path / "data")
    cfg = make_cfg(f"task={name}", "method=classical", f"data.root={root}", "data.download=false",
                   *getattr(WRITERS[name], "OVERRIDES", []))
    record = json.loads(json.dumps(train(cfg)))  # as results.json holds it
    c = record["classical"]
    assert record["method"] == "classical" and record["body"] is None and record["finetune"] is None
    assert c["val_errors"][str(c["chosen"])] == min(c["val_errors"].values())  # chosen on validation
    assert record["metrics"]["val"]["error"] == pytest.approx(c["val_errors"][str(c["chosen"])])
    assert record["params"]["trainable"] > 0 and "fit" in record["time_s"]
    if name == "digits":  # a linear model or trees on 64 pixels: a few percent, as sklearn's own examples
        assert record["metrics"]["test"]["error"] < 8
    kinds = {key.split()[0] for key in c["val_errors"]}  # trees are a candidate for classes only
    assert ("HistGradientBoostingClassifier" in kinds) == (name == "digits") and len(kinds) >= 1
    assert c["model"] == c["chosen"].split()[0]


def test_classical_trees_are_chosen_by_their_iterations_on_validation():
    from orca.classical import fit_classical
    from orca.tasks import create_task

    task = create_task("digits")
    splits = task.load("unused")
    val, test, c, params = fit_classical(task, splits, seed=0, tree_iterations=30)
    trees = {k: v for k, v in c["val_errors"].items() if k.startswith("HistGradientBoostingClassifier")}
    assert sorted(int(k.split("=")[1]) for k in trees) == [10, 20, 30]  # checked every 10 iterations
    best = min(c["val_errors"], key=c["val_errors"].get)
    assert c["chosen"] == best and val["error"] == pytest.approx(c["val_errors"][best])
    assert params["trainable"] > 0 and c["tree_train_samples"] == len(splits.train)


def test_classical_refuses_masked_fields(make_cfg, tmp_path):
    root = WRITERS["cosmic"].write(tmp_path / "data")
    with pytest.raises(ConfigError, match="carry a mask"):
        train(make_cfg("task=cosmic", "method=classical", f"data.root={root}", "data.download=false"))
