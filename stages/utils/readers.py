"""The one way the pipeline opens a json, npy or parquet file: a named error for every way it can fail.

A user's file (an LVIS json, a detections file) and the pipeline's own artifacts are read through
these functions, so that a path that is a directory, a file that cannot be read (permissions), a
compressed file (gzip, zip, bz2, xz, zstd: a ``.json.zip`` downloaded and never unpacked), a json
that is not UTF-8 (a latin-1 export) or not json, and a truncated npy or parquet each stop the stage
with :class:`ReadError`: the path, what was expected, and what to do -- never a bare
``UnicodeDecodeError`` or ``IsADirectoryError`` traceback that does not name the file.

tests/utils/test_readers.py tries each fault on every reader of the package, and checks that no
module of ``stages`` opens such a file any other way.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

# Leading bytes of the compressed and archive formats a user meets (file(1)'s magic numbers).
COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip-compressed (gunzip it)",
    b"PK\x03\x04": "a zip archive (unzip it)",
    b"PK\x05\x06": "an empty zip archive",
    b"BZh": "bzip2-compressed (bunzip2 it)",
    b"\xfd7zXZ\x00": "xz-compressed (unxz it)",
    b"\x28\xb5\x2f\xfd": "zstd-compressed (unzstd it)",
    b"7z\xbc\xaf\x27\x1c": "a 7-zip archive (extract it)",
}
NPY_MAGIC = b"\x93NUMPY"
PARQUET_MAGIC = b"PAR1"


class ReadError(ValueError):
    """A file could not be read as what the stage expects; the message names the path and the fix."""


def _opened_problem(path: Path, kind: str) -> str | None:
    """Why ``path`` cannot be opened as a ``kind`` file (None if it can): missing, a directory,
    not a regular file, no read permission, empty, or compressed."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"{path}: file not found (expected a {kind} file)"
    except PermissionError as exc:
        return f"{path}: cannot be reached ({exc.strerror}): a folder on its path lacks search permission"
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return f"{path}: is a directory, expected a {kind} file"
    if not stat.S_ISREG(info.st_mode):
        return f"{path}: is not a regular file (expected a {kind} file)"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except PermissionError:
        return (f"{path}: permission denied (mode {stat.filemode(info.st_mode)}, owner uid {info.st_uid}; "
                f"this process runs as uid {os.getuid()}): make the {kind} file readable")
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror})"
    if not head:
        return f"{path}: is empty (0 bytes), expected a {kind} file"
    for magic, what in COMPRESSED_MAGIC.items():
        if head.startswith(magic) and not (kind == "npz" and magic == b"PK\x03\x04"):
            return f"{path}: is {what}; expected a plain {kind} file -- decompress it and point the config at the result"
    return None


def _check_openable(path: str | Path, kind: str) -> Path:
    path = Path(path)
    problem = _opened_problem(path, kind)
    if problem:
        raise ReadError(problem)
    return path


def read_json(path: str | Path) -> Any:
    """The parsed content of a UTF-8 json file (any top-level type).

    Raises ReadError naming the path for: missing, directory, no permission, empty, compressed,
    not UTF-8 (the offset of the first bad byte, and how to convert), a UTF-8 byte-order mark, or
    not json (line and column)."""
    path = _check_openable(path, "json")
    try:
        with open(path, encoding="utf-8", errors="strict") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start:exc.start + 1].hex()
        raise ReadError(f"{path}: is not UTF-8 text (byte 0x{byte} at offset {exc.start} is not valid UTF-8; json "
                        "files must be UTF-8): re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT") from None
    except OSError as exc:
        raise ReadError(f"{path}: cannot be read ({exc.strerror})") from None
    if text.startswith("\ufeff"):
        raise ReadError(f"{path}: starts with a UTF-8 byte-order mark, which json does not allow: save it without one")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReadError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ReadError(f"{path}: nested too deeply to be a json the pipeline reads") from None


def read_npy(path: str | Path) -> np.ndarray:
    """A .npy array (never unpickled). ReadError naming the path for: missing, directory, no
    permission, empty, compressed, not an npy file, truncated, or an array of Python objects."""
    path = _check_openable(path, "npy")
    with open(path, "rb") as fh:
        magic = fh.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC:
        raise ReadError(f"{path}: is not a numpy .npy file (it does not start with the npy magic bytes)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise ReadError(f"{path}: holds Python objects (a pickled array), which are never loaded; "
                            "expected a numeric array") from None
        raise ReadError(f"{path}: damaged or truncated npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ReadError(f"{path}: damaged or truncated npy file ({exc})") from None


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file (never unpickled), as a dict; ReadError naming the path otherwise."""
    path = _check_openable(path, "npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise ReadError(f"{path}: damaged or truncated npz file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise ReadError(f"{path}: damaged or truncated npz file ({type(exc).__name__}: {exc})") from None


def _check_parquet(path: str | Path) -> Path:
    path = _check_openable(path, "parquet")
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(size - 4, 0))
        tail = fh.read(4)
    if head != PARQUET_MAGIC:
        raise ReadError(f"{path}: is not a parquet file (it does not start with PAR1)")
    if tail != PARQUET_MAGIC or size < 12:
        raise ReadError(f"{path}: truncated parquet file (no PAR1 footer): the write that made it did not finish")
    return path


def read_parquet_table(path: str | Path, columns: list[str] | None = None):
    """A parquet file as a pyarrow Table (its key-value metadata included); ReadError naming the path
    for every fault of :func:`read_json` that applies, a file that is not parquet, or a truncated one,
    and a requested column that is absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _check_parquet(path)
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise ReadError(f"{path}: cannot be read as parquet ({exc})") from None
    except KeyError as exc:
        raise ReadError(f"{path}: lacks the column {exc}") from None


def read_parquet(path: str | Path, columns: list[str] | None = None):
    """A parquet file as a pandas DataFrame; errors as :func:`read_parquet_table`."""
    return read_parquet_table(path, columns).to_pandas()
