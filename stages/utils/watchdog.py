"""A wall-clock guard for calls that cannot be interrupted: pycocotools in evaluation and judging.

pycocotools holds the GIL inside its C loops and never looks at signals, so neither a Python timer
thread nor SIGALRM can stop a call that runs for ever -- and a malformed mask makes
``pycocotools.mask.iou`` do exactly that (an RLE whose run lengths do not add up to height x width).
The validator and the detections contract refuse such masks (stages.data.masks); this guard is for
the case nobody foresaw, so that it cannot hold a Slurm allocation until its time limit.

How: the first guarded call of a process starts a small watchdog *process* (stdlib only) that
shares one memory page with it. Before each guarded call the process writes a deadline and what
the call is doing (which image, which annotations) into the page; after it, it clears the deadline.
The watchdog polls the page; when a call is past its deadline it prints the description to the
job's stderr and ends the process (SIGTERM, then SIGKILL after a grace period). It exits by itself
when the process it guards is gone.

The limit is ``evaluation.guard_seconds``, set once per process by the stage (:func:`configure`).
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

PAGE = 4096
HEADER = struct.Struct("=ddQI")  # deadline (monotonic s, 0 = idle), limit (s), call number, message length
MESSAGE_BYTES = PAGE - HEADER.size
DEFAULT_SECONDS = 600.0
GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL

_WATCHDOG = r"""
import mmap, os, signal, struct, sys, time
fd, parent, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
header = struct.Struct("=ddQI")
page = mmap.mmap(fd, 4096)
while True:
    time.sleep(0.2)
    if os.getppid() != parent:
        sys.exit(0)  # the guarded process has ended
    deadline, limit, call, length = header.unpack_from(page, 0)
    if not deadline or time.monotonic() <= deadline:
        continue
    what = bytes(page[header.size:header.size + length]).decode("utf-8", "replace")
    if header.unpack_from(page, 0)[:3] != (deadline, limit, call):
        continue  # the call ended (and another began) while we read
    sys.stderr.write(f"\nwall-clock guard: {what} ran past {limit:g} s (evaluation.guard_seconds) and was stopped; "
                     "a malformed mask or box can make pycocotools run for ever -- check the files with "
                     "python -m stages.cli.validate_dataset (ground truth) and the detections contract "
                     "(stages.data.detections)\n")
    sys.stderr.flush()
    os.kill(parent, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and os.getppid() == parent:
        time.sleep(0.1)
    if os.getppid() == parent:
        os.kill(parent, signal.SIGKILL)
    sys.exit(0)
"""

_limit = DEFAULT_SECONDS
_state: dict[str, object] = {}  # pid -> the page and the watchdog of that process (reset after a fork)


def configure(seconds: float) -> None:
    """Set the limit of every guarded call of this process (``evaluation.guard_seconds``)."""
    global _limit
    if not seconds > 0:
        raise ValueError(f"evaluation.guard_seconds must be > 0, found {seconds!r}")
    _limit = float(seconds)


def _page() -> mmap.mmap:
    if _state.get("pid") != os.getpid():
        backing = tempfile.TemporaryFile()  # unlinked at once: only the two processes hold it
        backing.truncate(PAGE)
        page = mmap.mmap(backing.fileno(), PAGE)
        watchdog = subprocess.Popen([sys.executable, "-S", "-c", _WATCHDOG, str(backing.fileno()), str(os.getpid()),
                                     str(GRACE_SECONDS)], pass_fds=(backing.fileno(),), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, close_fds=True)  # fmt: skip
        atexit.register(_stop, watchdog)
        _state.clear()
        _state.update(pid=os.getpid(), page=page, backing=backing, watchdog=watchdog, call=0)
    return _state["page"]  # type: ignore[return-value]


def _stop(watchdog: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        watchdog.terminate()
        watchdog.wait(timeout=5)


@contextlib.contextmanager
def guarded(what: str) -> Iterator[None]:
    """Run the body under the wall-clock guard; ``what`` says what it does, for the message (e.g.
    "pycocotools.mask.iou on image 17, detections [3, 5] x annotations [42]")."""
    page = _page()
    _state["call"] = int(_state["call"]) + 1  # type: ignore[call-overload]
    message = what.encode("utf-8")[:MESSAGE_BYTES]
    page[HEADER.size:HEADER.size + len(message)] = message
    HEADER.pack_into(page, 0, time.monotonic() + _limit, _limit, _state["call"], len(message))
    try:
        yield
    finally:
        HEADER.pack_into(page, 0, 0.0, _limit, _state["call"], 0)
