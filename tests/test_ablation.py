"""The alignment ablation's plan and table (scripts/ablate_alignment.py), from hand-written
records; the runs themselves are ordinary orca runs, tested in test_pipeline.py."""
import importlib.util

import pytest

from conftest import ROOT
from orca.errors import OrcaError
from orca.table import collect
from test_reproduce_table import fake_record

spec = importlib.util.spec_from_file_location("ablate_alignment", ROOT / "scripts" / "ablate_alignment.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def test_plan_gives_each_variant_its_align_settings_and_folder(tmp_path):
    runs = ablation.plan(tmp_path, ["satellite"], list(ablation.VARIANTS), [0, 1], {"satellite": "/data/sat"}, ("x=1",))
    assert len(runs) == 10 and all(r.method == "orca" for r in runs)
    by = {(r.variant, r.seed): r for r in runs}
    assert by["otdd-200", 1].folder == tmp_path / "runs" / "satellite" / "otdd-200" / "s1"
    command = " ".join(by["otdd-200", 1].command())
    assert "method=orca" in command and "align.steps=200" in command and "align.milestones=[67,133]" in command
    assert "data.root=/data/sat" in command and "x=1" in command and "budget=cpu" in command
    assert "align=mmd" in " ".join(by["mmd-60", 0].command())
    assert "milestones" not in " ".join(by["otdd-0", 0].command())


def test_unknown_variant_names_the_known_ones(tmp_path):
    with pytest.raises(OrcaError, match="known: otdd-0, otdd-20"):
        ablation.plan(tmp_path, ["satellite"], ["otdd-7"], [0], {}, ())


def test_table_rows_are_the_variants_and_the_figure_is_written(tmp_path):
    runs = ablation.plan(tmp_path, ["ta"], ["otdd-0", "otdd-60"], [0, 1], {}, ())
    for run, error in zip(runs, [30.0, 32.0, 25.0, 26.0]):
        fake_record(run, error, before=100.0, after=100.0 if run.variant == "otdd-0" else 60.0)
    table = collect(runs)
    assert table.methods == ["otdd-0", "otdd-60"] and table.cells["otdd-60", "ta"].mean == 25.5
    assert "| ta | otdd-60 | 100 | 60 |" in ablation.otdd_markdown(table)
    ablation.plot(table, tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").stat().st_size > 1000
