"""A run's output directory: checked before any work, locked while a run writes it.

Long runs on shared machines meet two accidents: a second run started on the
same `--output_dir` (both would write the same backups and checkpoints) and a
command rerun after it finished (it would train again over the results).
`locked` takes an exclusive `flock` on `<dir>/.lock` for as long as a run
writes there (released by the kernel if the process dies, so a killed run
never leaves a stale lock); `check` refuses a finished run's directory unless
`overwrite=True`, and `clear` removes what a run writes before it starts over.
"""

import contextlib
import fcntl
import os
import shutil
import socket
import time

import numpy as np

LOCK = ".lock"
FINISHED = "metrics.json"  # written last, atomically, by a run that ended
WRITTEN = ("metrics.json", "checkpoints", "backup", "backup.corrupt", "saved_model", "logs", "rewind.npz",
           "final.npz")

_HELD = {}  # real path -> [fd, depth]: re-entrant within a process


class OutputDirInUse(RuntimeError):
    """Another process holds the output directory's lock."""


def check(path, *, overwrite=False):
    """Raises ValueError if `path` cannot be a run's output directory; creates nothing.

    `path` must be creatable and writable (the nearest existing ancestor is
    checked, so no probe file is written and workers checking at once do not
    race), and must not hold a finished run (`metrics.json`) unless
    `overwrite` is True.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"Expected output_dir to be a path. Received: output_dir={path!r}")
    current = os.path.abspath(os.fspath(path))
    while not os.path.exists(current):
        current = os.path.dirname(current)
    if not os.path.isdir(current) or not os.access(current, os.W_OK | os.X_OK):
        why = "is not a directory" if not os.path.isdir(current) else "is not writable"
        raise ValueError(f"output_dir is not writable: {current!r} {why}. Received: output_dir={path!r}")
    if not overwrite and os.path.exists(os.path.join(os.fspath(path), FINISHED)):
        raise ValueError(
            f"output_dir holds a finished run ({FINISHED} is there); its results are not "
            "overwritten unless asked: pass overwrite=True (--overwrite) to train again from "
            f"scratch, or choose another output_dir. Received: output_dir={path!r}")


def write_text(path, text):
    """Writes a file whole or not at all (a temporary file, then `os.replace`)."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def write_npz(path, arrays):
    """Writes `{name: array}` as an .npz whole or not at all."""
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def clear(path):
    """Removes what a run writes into `path` (nothing else), to start over."""
    for name in WRITTEN:
        target = os.path.join(path, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)


@contextlib.contextmanager
def locked(path):
    """Holds `<path>/.lock` exclusively (creating `path`); re-entrant in a process.

    Raises:
        OutputDirInUse: another process holds it (the message says which).
    """
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    os.makedirs(path, exist_ok=True)
    fd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
        os.close(fd)
        raise OutputDirInUse(
            f"Another run is writing to this output_dir ({holder}); two runs in one directory "
            "would overwrite each other's backups and checkpoints. Wait for it to end, or choose "
            f"another output_dir. Received: output_dir={path!r}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            del _HELD[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
