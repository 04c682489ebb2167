"""scripts/bench_paper.py runs end to end: tiny bodies, one 1D and one dense 2D task, 1 step."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_paper.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_paper_tiny(capsys):
    bench = load_script()
    assert bench.main(["--tasks", "ecg", "darcy", "--steps", "1", "--batch", "2", "--tiny"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["ecg"], ["darcy"])}
    assert rows["ecg"][1] == "roberta-base" and rows["darcy"][1] == "swin-base"
    assert "1x1000 -> 50" in out  # ECG: 1000 samples -> 50 tokens at the paper's target_len
    assert "micro-batch overridden" in out and "measured on this CPU" in out
    # hours from ORCA's training sets: ECG 295,764 windows -> 147,882 micro-batches of 2, Darcy 1,000 -> 500
    assert rows["ecg"][-4] == "147,882" and rows["darcy"][-4] == "500"
