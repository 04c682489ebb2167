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
    if name == "digits":  # a linear model on 64 pixels: a few percent, as sklearn's own examples
        assert record["metrics"]["test"]["error"] < 8


def test_classical_refuses_masked_fields(make_cfg, tmp_path):
    root = WRITERS["cosmic"].write(tmp_path / "data")
    with pytest.raises(ConfigError, match="carry a mask"):
        train(make_cfg("task=cosmic", "method=classical", f"data.root={root}", "data.download=false"))
