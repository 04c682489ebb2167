"""One writer a run folder (orca/lock.py): a live holder is named and nothing is written; a
lock left by a killed process is taken over with a warning; two runs started on one folder
at once: one finishes, the other stops with one line."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from orca.errors import RunFolderBusyError
from orca.lock import LOCK_NAME, RunLock, refuse_if_held

HOLD = textwrap.dedent("""\
    import sys
    from orca.lock import RunLock
    with RunLock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes it
    """)
DIE_HOLDING = textwrap.dedent("""\
    import os, signal, sys
    from orca.lock import RunLock
    with RunLock(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    """)
ARGS = ["task=digits", "body=tiny-random", "budget=smoke", "trainer.enable_progress_bar=false"]


def env_of(tmp_path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "ORCA_CACHE_DIR": str(tmp_path / "cache")}


def start_cli(folder, tmp_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orca.train", *ARGS, f"hydra.run.dir={folder}"], cwd=ROOT,
                            env=env_of(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and lines and lines[-1].startswith("error: "), stderr[-3000:]
    return lines[-1]


def test_a_live_holder_is_named_and_its_folder_left_as_it_is(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        held = (folder / LOCK_NAME).read_text()
        named = f"pid {holder.pid} on host {socket.gethostname()}"
        with pytest.raises(RunFolderBusyError, match=named):
            refuse_if_held(folder)
        with pytest.raises(RunFolderBusyError, match=named):
            RunLock(folder).__enter__()
        monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP worker runs in the folder its rank zero holds
        refuse_if_held(folder)
        monkeypatch.delenv("LOCAL_RANK")

        proc = subprocess.run([sys.executable, "-m", "orca.train", *ARGS, f"hydra.run.dir={folder}"], cwd=ROOT,
                              env=env_of(tmp_path), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2 and named in error_line(proc.stderr)
        assert [p.name for p in folder.iterdir()] == [LOCK_NAME]  # refused before Hydra wrote its log
        assert (folder / LOCK_NAME).read_text() == held
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0 and (folder / LOCK_NAME).read_text() == ""  # released, naming nobody
    refuse_if_held(folder)


def test_the_lock_is_released_on_an_error(tmp_path, caplog):
    with pytest.raises(ValueError), RunLock(tmp_path):
        raise ValueError("a run that fails")
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):  # a second open of the file: held would block it
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not caplog.records and (tmp_path / LOCK_NAME).read_text() == ""


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
    killed = subprocess.Popen([sys.executable, "-c", DIE_HOLDING, str(tmp_path)], cwd=ROOT)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    left = json.loads((tmp_path / LOCK_NAME).read_text())
    assert (left["pid"], left["host"]) == (killed.pid, socket.gethostname())  # the file still names it
    refuse_if_held(tmp_path)  # the kernel released it with the process
    with caplog.at_level(logging.WARNING, logger="orca.lock"), RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert f"pid {left['pid']} on host {left['host']}" in caplog.text and "takes the folder over" in caplog.text


def test_two_runs_started_on_one_folder_at_once(tmp_path):
    """One finishes with its record; the other stops with one line naming it and adds nothing
    to the run (one attempt, one run in the log). The finished folder then refuses a third."""
    folder = tmp_path / "run"
    procs = [start_cli(folder, tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [err[-3000:] for _, err in outputs]
    winner, loser = (0, 1) if procs[0].returncode == 0 else (1, 0)
    assert f"pid {procs[winner].pid} on host {socket.gethostname()}" in error_line(outputs[loser][1])

    record = json.loads((folder / "results.json").read_text())
    assert record["attempts"] == 1 and record["task"] == "digits" and 0 <= record["metrics"]["test"]["error"] <= 100
    assert (folder / "train.log").read_text().count("task digits: ") == 1
    assert (folder / LOCK_NAME).read_text() == ""

    third = subprocess.run([sys.executable, "-m", "orca.train", *ARGS, f"hydra.run.dir={folder}"], cwd=ROOT,
                           env=env_of(tmp_path), capture_output=True, text=True, timeout=600)
    assert third.returncode == 2 and "results.json exists" in error_line(third.stderr)


def test_a_sweep_skips_a_run_that_a_live_process_holds(tmp_path):
    """Two reproduce_table processes on one output folder: the second neither sets the first's
    live run aside nor runs it again."""
    from orca.sweep import Run, run_missing

    folder = tmp_path / "digits" / "orca" / "s0"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        lines = []
        counts = run_missing([Run("digits", "orca", 0, folder, ())], log=lines.append)
        assert counts == {"done": 0, "ran": 0, "failed": 0, "busy": 1}
        assert f"pid {holder.pid}" in lines[-1] and lines[-1].startswith("    skipped: ")
        assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["digits", "orca", "s0", LOCK_NAME])  # nothing moved
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
