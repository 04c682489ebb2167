"""One writer a run folder: a run holds an exclusive lock on ``<run>/.lock`` from its start to
its end (``train()`` in orca/pipeline.py), and another process started on that folder stops
with one line naming the holder (orca/preflight.py checks before Hydra writes anything).

The lock is ``flock(2)`` on the open file, so the kernel releases it when the holder ends,
however it ends: ``kill -9``, the out-of-memory killer or a crash leave no held lock behind.
While a run holds it, the file holds the run's pid, host and start time (JSON); the run
empties it when it ends, normally or with an error. So a free lock whose file still names a
holder was left by a process that died, and the run that takes it over says so in its log.
The file stays in the folder (removing it would let a process that opened it before the
removal lock a file nobody else sees).

Across hosts: Linux emulates flock on NFS with whole-file byte-range locks that the server
arbitrates (man 2 flock), so a run on another host is seen, as long as the file system is
mounted with locking (with ``nolock`` each host sees only its own locks, and two hosts could
both write). The server frees the lock of a host that crashed when that host's lease or
grace period ends. A file system that cannot lock at all stops the run with one line.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from datetime import datetime
from pathlib import Path

from orca.errors import ConfigError, RunFolderBusyError

LOCK_NAME = ".lock"
WAIT_S = 2.0  # how long a start waits for a lock held for a moment (another start's check)
# The variables Lightning reads a process's rank from (lightning.fabric.utilities.rank_zero):
# the DDP workers it launches for a run, and SLURM tasks after the first, have one above 0.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")

log = logging.getLogger(__name__)


def starts_runs() -> bool:
    """Whether this process takes run folders' locks: not a DDP worker of a run that its rank
    zero started (and holds the lock of). Read from the environment, as Lightning reads it."""
    rank = next((os.environ[k] for k in RANK_VARIABLES if k in os.environ), "0")
    return int(rank) == 0


class RunLock:
    """``with RunLock(run_dir):`` holds the folder's lock for the block. Two processes that
    start at once: exactly one gets it; the other raises RunFolderBusyError naming it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not truncated: the holder's details stay
        deadline = time.monotonic() + WAIT_S
        try:
            while not _lock(fd, fcntl.LOCK_EX, self.path):
                if time.monotonic() > deadline:
                    raise RunFolderBusyError(_busy_message(self.path, _details(fd)))
                time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        left = _details(fd)
        if left:
            log.warning("%s names pid %s on host %s (started %s), which ended without releasing it "
                        "(killed?): this run takes the folder over", self.path, left.get("pid"),
                        left.get("host"), left.get("started"))
        _write(fd, {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": datetime.now().astimezone().isoformat(timespec="seconds")})
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.ftruncate(self.fd, 0)  # a free lock names nobody
        fcntl.flock(self.fd, fcntl.LOCK_UN)  # also for the DataLoader workers forked with the file open
        os.close(self.fd)
        self.fd = None


def refuse_if_held(run_dir: Path) -> None:
    """Raise RunFolderBusyError when another live process holds the folder's lock. Writes
    nothing: the check takes a shared lock and drops it at once (a start that meets it waits,
    RunLock); a DDP worker skips it, its rank zero holds the lock."""
    path = Path(run_dir) / LOCK_NAME
    if not starts_runs() or not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if _lock(fd, fcntl.LOCK_SH, path):
            return
        holder = _details(fd)
        if holder.get("pid") != os.getpid() or holder.get("host") != socket.gethostname():  # else this run's own
            raise RunFolderBusyError(_busy_message(path, holder))
    finally:
        os.close(fd)  # drops the shared lock


def _busy_message(path: Path, holder: dict) -> str:
    who = (f"pid {holder.get('pid')} on host {holder.get('host')} (started {holder.get('started')})"
           if holder else "another process")
    return (f"hydra.run.dir={path.parent} is in use: {who} runs in it (holds {path.name}); wait for that run to "
            "end, or choose another hydra.run.dir")


def _lock(fd: int, kind: int, path: Path) -> bool:
    """Take the lock without waiting; False when another process holds it."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise ConfigError(f"cannot lock {path} ({exc.strerror}): the file system of hydra.run.dir does not "
                              "support locks; choose a run folder on a local disk or a mount with locking") from None
        raise
    return True


def _details(fd: int) -> dict:
    """The holder's {"pid", "host", "started"} the file holds; {} when it names nobody."""
    try:
        details = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # not ours, or written half
        return {}
    return details if isinstance(details, dict) else {}


def _write(fd: int, details: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(details).encode(), 0)
    os.fsync(fd)  # visible to a process on another NFS host that reads the file
