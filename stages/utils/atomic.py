"""Atomic writers: every artifact is written to a temporary file beside its target and renamed.

A killed job therefore never leaves a half-written artifact under the final name, and a
crash while writing (full disk) removes the temporary file. A job killed outright (kill -9, an
out-of-memory kill, a Slurm time limit) cannot remove it: the temporary name carries the writer's
host and process id (``.<name>.~<host>~<pid>~<random>.tmp<suffix>``), and the next write into that
directory removes the temporaries of writers of this host that are no longer running
(:func:`remove_stale_temporaries`). A live writer's file, and one of another host (a shared file
system: its process cannot be looked up from here), is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary name keeps the target's suffix (libraries such as numpy and pandas look at it).
    On any exception the temporary file is removed and the target is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    suffix = target.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.~{_HOST}~{os.getpid()}~", suffix=f".tmp{suffix}",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates the file 0600 whatever the umask, and the rename keeps that mode: give the
        # artifact the mode any other new file would get (0644 under the usual umask 022), so a team
        # on a shared cluster can read the results.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        # some writers (numpy's tofile) report a full disk only as "N requested and M written"
        raise OSError(exc.errno, f"{target}: could not be written ({exc}); {_free_space(target.parent)}") from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"^\..+\.~(?P<host>[A-Za-z0-9-]+)~(?P<pid>\d+)~[^~/]*\.tmp")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporary files of atomic writes in ``directory`` whose writer was killed (a process
    of this host that no longer runs); return what was removed. Others' files are left alone."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name) if entry.name.startswith(".") and ".tmp" in entry.name else None
        if match is None or match["host"] != _HOST or int(match["pid"]) == os.getpid() or _running(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _free_space(directory: Path) -> str:
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.1f} MiB free on its file system" + (" (No space left on device)" if free < 2**20 else "")


def prepare_signed_dir(directory: str | Path, signature: dict[str, Any]) -> bool:
    """Create ``directory`` for work described by ``signature`` (json-able); a directory left by work
    with another signature (or none) is emptied first, so partial results are resumed only by the
    same work. Returns whether it was emptied."""
    directory = Path(directory)
    sig_file = directory / "signature.json"
    text = json.dumps(signature, sort_keys=True, default=str)
    stale = directory.exists() and (not sig_file.exists() or sig_file.read_text() != text)
    if stale:
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not sig_file.exists():
        write_text(text, sig_file)
    return stale


_HELD_LOCKS: dict[str, int] = {}


def lock_exclusively(lock_path: str | Path, what: str) -> None:
    """Hold an exclusive lock on ``lock_path`` until :func:`release_lock` or the end of the process
    (the kernel releases a dead process's flock, so a killed job never leaves a stale lock).

    Raises RuntimeError naming the holder's PID when another process holds it.
    """
    lock_path = Path(lock_path)
    if str(lock_path) in _HELD_LOCKS:
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RuntimeError(f"{what} is in use by another process (PID {holder}; lock file {lock_path}): a second "
                           f"job there would write over the first one's files -- wait for it or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD_LOCKS[str(lock_path)] = fd


def release_lock(lock_path: str | Path) -> None:
    fd = _HELD_LOCKS.pop(str(Path(lock_path)), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_json(obj: Any, target: str | Path, indent: int | None = None) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=indent, allow_nan=False)


def write_text(text: str, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_csv(frame: Any, target: str | Path) -> None:
    """A pandas DataFrame as CSV, without its index."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)


def write_npy(array: np.ndarray, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        np.save(tmp, array, allow_pickle=False)


def write_parquet(frame: Any, target: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a pandas DataFrame as parquet; ``metadata`` goes into the file's key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)


def write_figure(fig: Any, target: str | Path, dpi: int = 100) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
