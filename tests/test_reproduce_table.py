"""The comparison-table script: tables from hand-written records (with a missing and a failed
run), the planned runs of the mini suite, and a real two-run sweep that resumes."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from orca.errors import ConfigError
from orca.sweep import SUITES, Suite, plan
from orca.table import alignment_markdown, collect, markdown, versus_markdown, write_all

SCRIPT = ROOT / "scripts" / "reproduce_table.py"


def fake_record(run, error, before=10.0, after=8.0, select_on="val", machine=None):
    run.folder.mkdir(parents=True, exist_ok=True)
    record = {"task": run.task, "method": run.method, "seed": run.seed, "error_name": "0-1 error %",
              "protocol": {"select_on": select_on}, "machine": machine,
              "metrics": {"test": {"error": error}, "val": {"error": error}}, "paper": {"ORCA": 1.0},
              "align": {"before": before, "after": after, "source": "pydoc-topics: x"} if run.method == "orca" else None,
              "time_s": {"data": 1.0, "finetune": 10.0 + run.seed, "test": 2.0, "total": 13.0 + run.seed},
              "finetune": {"steps_done": 100 + run.seed, "seconds_per_step": 0.1 + 0.01 * run.seed},
              "params": {"trainable": 1_000_000, "total": 2_000_000}, "peak_rss_mb": 1000.0}
    (run.folder / "results.json").write_text(json.dumps(record))


def test_table_from_records_with_missing_and_failed_runs(tmp_path):
    suite = Suite(tasks=("ta", "tb"), methods=("orca", "fpt"), seeds=(0, 1, 2), budget="cpu")
    runs = {(r.task, r.method, r.seed): r for r in plan(suite, tmp_path)}
    for seed, error in enumerate([10.0, 12.0, 14.0]):  # ta/orca: mean 12, sample std 2
        fake_record(runs["ta", "orca", seed], error, before=10.0, after=8.0 - seed)
    for seed, error in enumerate([20.0, 30.0]):  # ta/fpt: seed 2 failed
        fake_record(runs["ta", "fpt", seed], error)
    runs["ta", "fpt", 2].folder.mkdir(parents=True)
    (runs["ta", "fpt", 2].folder / "failed.txt").write_text("exit code 1\n")
    fake_record(runs["tb", "fpt", 0], 5.0)  # tb/orca: nothing at all

    table = collect(list(runs.values()))
    assert table.best("ta") == "orca" and table.best("tb") == "fpt"
    text = markdown(table, "t")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines()
            if line.startswith("| orca") or line.startswith("| fpt")}
    assert rows["orca (ours)"] == ["**12 ± 2 (n=3)**", "missing (0/3)"]
    assert rows["fpt (ours)"] == ["25 ± 7.1 (n=2 of 3, 1 failed)", "**5 (n=1 of 3)**"]

    versus = versus_markdown(table)  # ta: orca 12 ± 2 (n=3) against fpt 25 ± 7.07 (n=2)
    # SE = sqrt(4/3 + 50/2) = 5.13: 2.5 SE, but Welch's t at about one degree of freedom gives p = 0.22
    assert "| ta | fpt | -13 | 5.1 | 0.22 | no difference shown |" in versus
    assert "| tb |" not in versus  # fewer than two seeds on either side: no verdict

    paths = write_all(table, tmp_path / "out", "t")
    assert "## orca against each baseline" in paths["md"].read_text()
    with open(paths["csv"]) as f:
        ta_fpt = next(r for r in csv.DictReader(f) if r["task"] == "ta" and r["method"] == "fpt")
    assert float(ta_fpt["mean"]) == 25.0 and ta_fpt["n"] == "2" and ta_fpt["failed"] == "1"
    assert paths["png"].stat().st_size > 10_000
    alignment = paths["alignment"].read_text()
    assert "| ta | orca | 10 ± 0 | 7 ± 1 | -30.0 % | — | — | pydoc-topics |" in alignment  # after: 8, 7, 6
    # seeds 0, 1: finetune 10, 11 s; 100, 101 steps at 0.10, 0.11 s
    assert "| ta | fpt | 1 | — | — | — | 10.5 | — | 2 | 13.5 | 100, 101 | 0.105 | 1M / 2M | 1000 |" in alignment


def test_reference_protocol_runs_apart_and_in_rows_of_their_own(tmp_path):
    suite = Suite(tasks=("ta",), methods=("orca",), seeds=(0,), budget="paper", published=True)
    clean, reference = plan(suite, tmp_path), plan(suite, tmp_path, protocol="reference")
    assert reference[0].folder == tmp_path / "runs" / "ta" / "orca@reference" / "s0"
    assert "protocol=reference" in reference[0].command() and "protocol=reference" not in clean[0].command()
    fake_record(clean[0], 3.0)
    fake_record(reference[0], 2.0, select_on="test")
    text = markdown(collect(clean + reference, published=True), "t")
    assert "| orca (ours) | **3 (n=1)** |" in text  # the best row is never one selected on test
    assert "| orca (reference: selected on test) (ours) | 2 (n=1) |" in text and "| ORCA (published) | 1 |" in text
    with pytest.raises(ConfigError, match="known: clean, reference"):
        plan(suite, tmp_path, protocol="orca")


def test_stage_table_names_the_machines(tmp_path):
    suite = Suite(tasks=("ta",), methods=("orca", "fpt"), seeds=(0, 1), budget="cpu")
    runs = plan(suite, tmp_path)
    epyc = {"cpu": "AMD EPYC", "cores": 2, "torch_threads": 2, "flags": ["avx2"], "accelerator": None}
    xeon = {"cpu": "Intel Xeon", "cores": 2, "torch_threads": 2, "flags": ["avx512f", "amx_tile"], "accelerator": None}
    for run, machine in zip(runs, (epyc, xeon, None, None)):  # orca s0, s1; fpt s0, s1 (older records)
        fake_record(run, 3.0, machine=machine)
    rows = [line for line in alignment_markdown(collect(runs)).splitlines() if line.startswith("| ta |")]
    stage_rows = rows[-2:]  # after the OTDD rows
    assert stage_rows[0].endswith("| AMD EPYC, 2 cores, 2 threads, avx2; Intel Xeon, 2 cores, 2 threads, avx512f amx_tile |")
    assert stage_rows[1].endswith("| — |")


def test_published_rows_only_when_asked(tmp_path):
    suite = Suite(tasks=("ta",), methods=("orca",), seeds=(0,), budget="cpu")
    runs = plan(suite, tmp_path)
    fake_record(runs[0], 3.0)
    assert "ORCA (published) | 1 |" in markdown(collect(runs, published=True), "t")
    assert "published" not in markdown(collect(runs), "t")


def test_reference_errors_get_a_table_of_their_own_beside_the_published_rows(tmp_path):
    suite = Suite(tasks=("ta", "tb"), methods=("orca", "finetune"), seeds=(0, 1), budget="cpu")
    runs = plan(suite, tmp_path)
    for run in runs:
        fake_record(run, 0.5 + 0.1 * run.seed)
        if run.task == "ta":  # a task whose number ORCA's code computes otherwise
            record = json.loads((run.folder / "results.json").read_text())
            record["metrics"]["test"]["reference_error"] = 0.3 + 0.1 * run.seed
            record["reference_error_name"] = "1 - chunked F1"
            (run.folder / "results.json").write_text(json.dumps(record))
    text = markdown(collect(runs, published=True), "t")
    main, reference = text.split("## As ORCA's code computes the error")
    assert "| finetune (ours) | 0.55 ± 0.071 (n=2) | 0.55 ± 0.071 (n=2) |" in main
    assert "- ta: 1 - chunked F1" in reference and "tb" not in reference
    assert "| orca (ours) | 0.35 ± 0.071 (n=2) |" in reference and "| ORCA (published) | 1 |" in reference
    no_reference = plan(Suite(tasks=("tb",), methods=("orca",), seeds=(0,), budget="cpu"), tmp_path)
    assert "As ORCA's code" not in markdown(collect(no_reference), "t")


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_dry_run_plans_the_mini_suite(tmp_path):
    proc = run_script("--suite", "mini", "--dry-run", "--out", str(tmp_path), "--data-root", "ecg=/data/ecg")
    assert proc.returncode == 0, proc.stderr
    table, listing = proc.stdout.strip().split("\n\n")
    assert [row.split(" | ")[:6] for row in table.splitlines()[2:]] == [
        ["| ecg", "orca", "minilm", "clean", "pydoc-topics", "60"], ["| satellite", "orca", "minilm", "clean", "pydoc-topics", "60"],
        ["| darcy", "orca", "minilm", "clean", "pydoc-topics", "60"], ["| cifar10", "orca", "minilm", "clean", "pydoc-topics", "60"]]
    lines = listing.splitlines()
    assert lines[-1] == "84 runs planned, 0 done" and len(lines) == 85
    planned = {tuple(line.split()[:2]) + (line.split()[3],) for line in lines[:-1]}
    assert planned == {(t, m, s) for t in ("ecg", "satellite", "darcy", "cifar10")
                       for m in ("orca", "finetune", "fpt", "scratch", "classical", "lora", "orca_lora")
                       for s in "012"}
    ecg = next(line for line in lines if line.startswith("ecg") and "method=fpt seed=2" in line)
    assert "budget=cpu" in ecg and "data.root=/data/ecg" in ecg and f"hydra.run.dir={tmp_path}/runs/ecg/fpt/s2" in ecg
    assert not any((tmp_path / "runs").glob("*"))  # nothing ran


def test_dry_run_of_the_paper_suite_says_what_each_task_will_do(tmp_path):
    """--suite nb360: ORCA's bodies, CoNLL-2003 for text bodies (here without its folder), and,
    under protocol=reference, the optimiser steps and samples of ORCA's training sets."""
    proc = run_script("--suite", "nb360", "--protocol", "reference", "--tasks", "ecg,cifar100", "--dry-run",
                      "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = {row.split(" | ")[0].strip("| "): row.split(" | ") for row in proc.stdout.split("\n\n")[0].splitlines()[2:]}
    # ECG: 295,764 windows in batches of 4 (73,941 a pass) -> 4,621 steps of 16 an epoch, 15 epochs
    assert rows["ecg"][1:7] == ["orca", "roberta-base", "reference", "conll2003: needs align.source_root", "60", "15"]
    assert rows["ecg"][7:] == ["4 x 16", "69,315", "4,436,460 |"]
    assert rows["cifar100"][1:5] == ["orca", "swin-base", "reference", "cifar10"]
    assert rows["cifar100"][8:] == [f"{60 * (1563 // 32):,}", "3,000,000 |"]
    assert "runs/ecg/orca@reference/s0" in proc.stdout


def test_bad_data_root_is_a_clear_error(tmp_path):
    proc = run_script("--suite", "mini", "--dry-run", "--data-root", "ecg")
    assert proc.returncode != 0 and "TASK=PATH" in proc.stderr


def test_names_and_overrides_are_checked_before_anything_runs(tmp_path):
    for args, message in ((("--methods", "orca,nope"), "unknown method 'nope'; known methods: adapter, classical, finetune"),
                          (("--tasks", "digits,nope"), "unknown task 'nope'"),
                          (("--override", "finetune.max_stepz=3"), "no key 'finetune.max_stepz'"),
                          (("--seeds", "0,one"), "--seeds takes integers")):
        proc = run_script("--tasks", "digits", "--budget", "smoke", "--out", str(tmp_path), *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not tmp_path.joinpath("runs").exists()  # nothing was launched


def test_lists_take_commas_and_spaces_alike(tmp_path):
    proc = run_script("--dry-run", "--tasks", "digits", "--methods", "orca,fpt", "scratch", "--seeds", "0,1",
                      "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().split("\n\n")[1].splitlines()
    assert lines[-1] == "6 runs planned, 0 done"
    assert {line.split()[1] for line in lines[:-1]} == {"orca", "fpt", "scratch"}


def test_real_two_run_sweep_resumes(tmp_path):
    args = ("--tasks", "digits", "--methods", "fpt", "scratch", "--seeds", "0", "--budget", "smoke",
            "--override", "body=tiny-random", "--override", f"paths.cache_dir={tmp_path / 'cache'}",
            "--out", str(tmp_path / "out"))
    first = run_script(*args)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "running 2" in first.stdout
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| fpt (ours) |" in table and "| scratch (ours) |" in table and "missing" not in table
    second = run_script(*args)
    assert "2 of 2 runs already done; running 0" in second.stdout
    assert second.returncode == 0
    # An interrupted run (no record) is run again from scratch; its attempt is kept aside.
    fpt = tmp_path / "out" / "runs" / "digits" / "fpt" / "s0"
    (fpt / "results.json").unlink()
    third = run_script(*args)
    assert third.returncode == 0 and "1 of 2 runs already done; running 1" in third.stdout
    assert (fpt / "results.json").exists() and (fpt.parent / "s0.partial-1" / "config.yaml").exists()


def test_suites_are_the_issue_sizes():
    mini, nb360 = SUITES["mini"], SUITES["nb360"]
    assert len(mini.tasks) * len(mini.methods) * len(mini.seeds) == 84 and mini.budget == "cpu"
    assert {"classical", "lora", "orca_lora"} <= set(mini.methods)
    assert len(nb360.tasks) == 10 and nb360.published and nb360.budget == "paper"


def test_versus_verdicts_come_from_welchs_t_test(tmp_path):
    suite = Suite(tasks=("ta",), methods=("orca", "fpt", "scratch"), seeds=(0, 1), budget="cpu")
    runs = {(r.method, r.seed): r for r in plan(suite, tmp_path)}
    for seed, (o, f, s) in enumerate([(10.0, 11.0, 30.0), (12.0, 12.0, 31.0)]):
        fake_record(runs["orca", seed], o), fake_record(runs["fpt", seed], f), fake_record(runs["scratch", seed], s)
    versus = versus_markdown(collect(list(runs.values())))
    assert "| ta | fpt | -0.5 | 1.1 | 0.71 | no difference shown |" in versus  # SE = sqrt(2/2 + 0.5/2)
    assert "| ta | scratch | -19.5 | 1.1 | 0.011 | orca better |" in versus


def test_merged_runs_join_the_table_as_rows_of_their_own(tmp_path):
    from orca.sweep import Run, merged_runs

    for seed, error in enumerate([30.0, 32.0]):
        fake_record(Run("satellite", "finetune", seed, tmp_path / "runs" / "satellite" / "finetune" / f"s{seed}", ()),
                    error)
        merge = Run("satellite", "wise_ft", seed, tmp_path / "merges" / "satellite" / f"wise-s{seed}", ())
        fake_record(merge, error - 1.0)
    assert [(r.method, r.seed) for r in merged_runs(tmp_path)] == [("wise_ft", 0), ("wise_ft", 1)]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--suite", "adaptation", "--tasks", "satellite", "--methods",
                           "finetune", "--seeds", "0", "1", "--out", str(tmp_path), "--table-only"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "table.md").read_text()
    assert "| wise_ft (ours) | **30 ± 1.4 (n=2)** |" in table and "| finetune (ours) | 31 ± 1.4 (n=2) |" in table


def test_a_sweep_of_one_seed_redraws_the_table_with_every_finished_seed(tmp_path):
    from orca.sweep import Run

    for seed, error in enumerate([30.0, 32.0]):
        fake_record(Run("satellite", "finetune", seed, tmp_path / "runs" / "satellite" / "finetune" / f"s{seed}", ()),
                    error)
    fake_record(Run("cifar10", "lora", 0, tmp_path / "runs" / "cifar10" / "lora" / "s0", ()), 50.0)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--suite", "adaptation", "--tasks", "cifar10", "--methods",
                           "lora", "--seeds", "0", "--out", str(tmp_path), "--table-only"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "table.md").read_text()
    assert "| finetune (ours) | **31 ± 1.4 (n=2)** |" in table and "| lora (ours) | missing (0/0) | **50 (n=1)** |" in table
    # columns and rows in the suite's order, not the order of this call's --tasks and --methods
    assert "| method | satellite (0-1 error %) | cifar10 (0-1 error %) |" in table
    assert table.index("| finetune (ours)") < table.index("| lora (ours)")
    assert "## finetune against each baseline" in table  # the adaptation suite tests against full fine-tuning
