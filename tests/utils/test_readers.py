"""Every file a stage opens gets a named error (issue 22, case 9): each fault -- a directory, a missing
file, no permission, an empty file, a compressed file, a json that is not UTF-8, a file of another
format, a truncated one -- tried on every reader of json, npy and parquet in the package. The error
must be the stage's own (a ValueError subclass) and name the path and the problem; never a bare
UnicodeDecodeError, IsADirectoryError or pyarrow error. A scan of the package checks that no module
opens such a file any other way."""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.reporting.table1 import _SEGM_KEYS
from tests.conftest import REPO

pytestmark = pytest.mark.fault_injection

CATEGORIES = pd.DataFrame({"index": [0, 1], "category_id": [1, 2], "name": ["a", "b"], "frequency": ["r", "f"],
                           "instance_count": [3, 4]})
CCECE = pd.DataFrame({"category_id": [1, 2], "name": ["a", "b"], "frequency": ["r", "f"], "n_detections": [0, 0],
                      "accuracy": [np.nan] * 2, "confidence": [np.nan] * 2, "ccece": [0.0, 0.0],
                      "ccece_se": [np.nan] * 2, "delta": [0.0, 0.0]})
LVIS_JSON = {"images": [{"id": 1, "file_name": "x.png", "height": 4, "width": 4, "neg_category_ids": [],
                         "not_exhaustive_category_ids": []}],
             "categories": [{"id": 1, "name": "a", "frequency": "r"}], "annotations": []}
DETECTIONS = [{"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 2.0, 2.0], "score": 0.5}]
# a metrics.json that keeps its contract (every key the report reads)
METRICS = {"segm": dict.fromkeys(_SEGM_KEYS, 1.0), "bbox": dict.fromkeys(_SEGM_KEYS, 1.0), "ece": 0.1,
           "ece_per_frequency": {"r": 0.1, "c": 0.1, "f": 0.1}}


def _bytes(kind: str, content) -> bytes:
    if kind == "json":
        return json.dumps(content).encode()
    buffer = io.BytesIO()
    if kind == "npy":
        np.save(buffer, content, allow_pickle=False)
    elif kind == "npz":
        np.savez(buffer, **content)
    else:
        content.to_parquet(buffer)
    return buffer.getvalue()


# name -> (kind, valid content, the call with P the faulty path and D a folder of valid companions)
READERS = {
    "readers.read_json": ("json", METRICS, "from stages.utils.readers import read_json; read_json(P)"),
    "readers.read_npy": ("npy", np.eye(2, dtype=np.float32), "from stages.utils.readers import read_npy; read_npy(P)"),
    "readers.read_npz": ("npz", {"a": np.ones(2)}, "from stages.utils.readers import read_npz; read_npz(P)"),
    "readers.read_parquet": ("parquet", CATEGORIES, "from stages.utils.readers import read_parquet; read_parquet(P)"),
    "lvis.load_lvis": ("json", LVIS_JSON, "from stages.data.lvis import load_lvis; load_lvis(P)"),
    "validation.validate_datasets": ("json", LVIS_JSON, "from stages.data.validation import validate_datasets; "
                                     "validate_datasets(P, None, D, {'on_invalid': 'fail', 'image_check': 'exists', "
                                     "'allow_paths_outside_image_root': False}, 1)"),
    "detections.read_detections (json)": ("json", DETECTIONS, "from stages.data.detections import read_detections; "
                                          "read_detections(P)"),
    "detections.read_detections (parquet)": ("parquet", None, "from stages.data.detections import read_detections; "
                                             "read_detections(P)"),
    "artifacts.read_similarity": ("npy", np.full((2, 2), 0.5, dtype=np.float32),
                                  "from stages.data.artifacts import read_similarity; read_similarity(P, 2)"),
    "artifacts.read_prototypes": ("npy", np.ones((2, 3), dtype=np.float32),
                                  "from stages.data.artifacts import read_prototypes; read_prototypes(P, 2)"),
    "artifacts.read_categories": ("parquet", CATEGORIES, "from stages.data.artifacts import read_categories; "
                                  "read_categories(P)"),
    "artifacts.read_ccece": ("parquet", CCECE, "from stages.data.artifacts import read_ccece; read_ccece(P, [1, 2])"),
    "encoders.load_embeddings (npy)": ("npy", np.eye(2, dtype=np.float32),
                                       "from stages.retrieval.encoders import load_embeddings; "
                                       "load_embeddings(P, D / 'index.parquet')"),
    "encoders.load_embeddings (parquet)": ("parquet", pd.DataFrame({"row": [0, 1]}),
                                           "from stages.retrieval.encoders import load_embeddings; "
                                           "load_embeddings(D / 'vectors.npy', P)"),
    "pool.Shard.load": ("npz", {"vectors": np.ones((1, 2), np.float32), "image_ids": np.array([1]),
                                "sha1": np.array(["x"]), "skipped_ids": np.zeros(0, np.int64),
                                "skipped_reasons": np.zeros(0, str)},
                        "from stages.retrieval.pool import Shard; Shard.load(P)"),
    "table1.load_metrics": ("json", METRICS, "from stages.reporting.table1 import load_metrics; "
                            "load_metrics(P.parent.parent, [P.parent.name])"),
    "seeds.seed_metrics": ("json", METRICS, "from stages.reporting.seeds import seed_metrics; seed_metrics([(0, 'm', P)])"),
}


def _setup(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(the reader's file, in a model folder so that load_metrics finds it; the companions' folder)."""
    kind, content, _ = READERS[name]
    if name == "detections.read_detections (parquet)":
        from stages.data.detections import results_frame

        content = results_frame(DETECTIONS)
    companions = tmp_path / "companions"
    companions.mkdir(parents=True)
    (companions / "x.png").write_bytes(b"")  # the image of LVIS_JSON (validated with image_check: exists)
    np.save(companions / "vectors.npy", np.eye(2, dtype=np.float32))
    pd.DataFrame({"row": [0, 1]}).to_parquet(companions / "index.parquet")
    path = tmp_path / "eval" / "model" / ("metrics.json" if kind == "json" else f"file.{kind}")
    path.parent.mkdir(parents=True)
    path.write_bytes(_bytes(kind, content))
    return path, companions


def _call(name: str, path: Path, companions: Path) -> None:
    exec(READERS[name][2], {"P": path, "D": companions, "Path": Path})


def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inside", data)
    return buffer.getvalue()


FAULTS = {
    "a directory": (lambda p: (p.unlink(), p.mkdir()), r"is a directory, expected a \w+ file"),
    "missing": (lambda p: p.unlink(), r"file not found"),
    "empty": (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    "gzip": (lambda p: p.write_bytes(gzip.compress(p.read_bytes())), r"is gzip-compressed \(gunzip it\); expected a plain"),
    "zip": (lambda p: p.write_bytes(_zip(p.read_bytes())), r"is a zip archive \(unzip it\)|damaged or truncated npz"),
    "bzip2": (lambda p: p.write_bytes(bz2.compress(p.read_bytes())), r"is bzip2-compressed"),
    "another format": (lambda p: p.write_bytes(b"hello, I am text\n" * 4),
                       r"not valid JSON|is not a numpy \.npy file|is not a parquet file|damaged or truncated npz"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
                  r"not valid JSON|damaged or truncated npy|truncated parquet|damaged or truncated npz"),
}


@pytest.mark.parametrize("name", list(READERS))
def test_the_reader_reads_the_valid_file(tmp_path: Path, name: str) -> None:
    _call(name, *_setup(tmp_path, name))  # the fixtures are right: only the faults below fail


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("name", list(READERS))
def test_every_fault_on_every_reader_is_a_named_error(tmp_path: Path, name: str, fault: str) -> None:
    path, companions = _setup(tmp_path, name)
    if fault == "zip" and READERS[name][0] == "npz":
        pytest.skip("an npz file is a zip archive")
    change, message = FAULTS[fault]
    change(path)
    with pytest.raises(ValueError, match=message) as raised:
        _call(name, path, companions)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("name", [n for n, r in READERS.items() if r[0] == "json"])
def test_a_json_that_is_not_utf8_is_named_with_how_to_convert(tmp_path: Path, name: str) -> None:
    """Before: a latin-1 export gave a raw UnicodeDecodeError that did not name the file."""
    path, companions = _setup(tmp_path, name)
    path.write_bytes(json.dumps({"name": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match=r"is not UTF-8 text \(byte 0xe9 at offset \d+.*iconv -f latin1 -t utf-8"):
        _call(name, path, companions)
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(READERS[name][1]).encode())
    with pytest.raises(ValueError, match="byte-order mark"):
        _call(name, path, companions)


def test_no_permission_is_named_for_every_reader(tmp_path: Path) -> None:
    """Each reader on a file of mode 000, in a process that cannot override permissions (root drops
    CAP_DAC_OVERRIDE with setpriv, as a shared cluster's user would be)."""
    cases = {}
    for k, name in enumerate(READERS):
        path, companions = _setup(tmp_path / str(k), name)
        path.chmod(0)
        cases[name] = (str(path), str(companions))
    script = (
        "import json, sys\nfrom pathlib import Path\n"
        f"readers = {json.dumps({n: r[2] for n, r in READERS.items()})}\n"
        f"cases = {json.dumps(cases)}\nout = {{}}\n"
        "for name, (p, d) in cases.items():\n"
        "    try:\n        exec(readers[name], {'P': Path(p), 'D': Path(d), 'Path': Path})\n        out[name] = 'read'\n"
        "    except Exception as exc:\n        out[name] = f'{type(exc).__mro__[-3].__name__}|{type(exc).__name__}|{exc}'\n"
        "print(json.dumps(out))\n"
    )
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    for name, outcome in json.loads(done.stdout.strip().splitlines()[-1]).items():
        path = cases[name][0]
        assert f"{path}: permission denied (mode ----------" in outcome, (name, outcome)
        assert "make the" in outcome and "file readable" in outcome


READING_CALLS = {("json", "load"), ("np", "load"), ("numpy", "load"), ("pd", "read_parquet"), ("pq", "read_table"),
                 ("pq", "ParquetFile"), ("pq", "read_metadata"), ("pq", "read_schema")}


def _file_reads(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        if (owner, node.func.attr) in READING_CALLS:
            lines.append(node.lineno)
        # json.loads(path.read_text()) / json.loads(open(p).read())
        if (owner, node.func.attr) == ("json", "loads") and any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("read_text", "read")
                for n in ast.walk(node)):
            lines.append(node.lineno)
    return lines


def test_no_stage_opens_a_json_npy_or_parquet_file_any_other_way() -> None:
    offenders = []
    for path in sorted((REPO / "stages").rglob("*.py")):
        if path.relative_to(REPO).as_posix() == "stages/utils/readers.py":
            continue
        offenders += [f"{path.relative_to(REPO)}:{line}" for line in _file_reads(ast.parse(path.read_text()))]
    assert not offenders, f"read these through stages.utils.readers: {offenders}"
    # the scan finds what it looks for
    assert _file_reads(ast.parse("import json\njson.loads(p.read_text())\nnp.load(x)\n")) == [2, 3]
