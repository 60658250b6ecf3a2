"""Shared fixtures: the repository root, a tiny config for end-to-end runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
FAULT_DESCRIPTIONS = pytest.StashKey[dict]()

# Each test process gets a fair share of the 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def tiny_config(results_dir: Path, run: str = "tiny") -> dict:
    """The embedded default shrunk to seconds: few images, few iterations, 64 px."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["run"] = run
    config["results_dir"] = str(results_dir)
    config["minilvis"].update(preset="shapes", image_size=64, val_images=18, pool_images=30, pool_duplicates=4,
                              pool_val_copies=2, rare_max_images=10, common_max_images=100)
    config["minilvis"]["shapes"].update(families=3, classes_per_family=3, train_images=60)
    config["embed"].update(crop_size=32, batch_size=16)
    config["retrieve"].update(k=8)
    config["model"].update(min_size=64, max_size=64, roi_batch_size=32, fpn_channels=32)
    config["teacher"].update(iterations=12, batch_size=2, warmup_iters=4, checkpoint_period=6)
    config["student"].update(iterations=6, labeled_batch_size=1, unlabeled_batch_size=1, warmup_iters=1,
                             checkpoint_period=3, score_threshold=0.05)
    return config


def identity_similarity(path: Path, train_json: Path) -> Path:
    """A valid S' for a teacher whose smoothing ignores it (onehot, uniform): the identity."""
    import json

    import numpy as np

    num_classes = len(json.loads(Path(train_json).read_text())["categories"])
    np.save(path, np.eye(num_classes, dtype=np.float32))
    return path


def write_ccece(path: Path, categories: list[dict], delta) -> Path:
    """A ccece.parquet that keeps the contract, with the given Delta per category (in id order)."""
    import numpy as np
    import pandas as pd

    cats = sorted(categories, key=lambda c: c["id"])
    n = len(cats)
    pd.DataFrame({"category_id": [c["id"] for c in cats], "name": [c["name"] for c in cats],
                  "frequency": [c.get("frequency", "c") for c in cats], "n_detections": np.zeros(n, dtype=np.int64),
                  "accuracy": np.full(n, np.nan), "confidence": np.full(n, np.nan), "ccece": np.zeros(n),
                  "ccece_se": np.full(n, np.nan), "delta": np.broadcast_to(np.asarray(delta, dtype=float), n)}
                 ).to_parquet(path)  # fmt: skip
    return path


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "results")))
    return path


@pytest.fixture(scope="session")
def tiny_minilvis(tmp_path_factory) -> Path:
    """A tiny mini-LVIS generated once per session (train/val/pool jsons + images)."""
    from stages.data.minilvis import make_minilvis

    out = tmp_path_factory.mktemp("minilvis")
    config = tiny_config(out / "results")
    make_minilvis(config["minilvis"], config["seed"], out)
    return out


def pytest_addoption(parser) -> None:
    parser.addoption("--fault-table", default=None, metavar="PATH",
                     help="write every fault-injection test, what it breaks and its outcome as a markdown table")


def pytest_collection_modifyitems(config, items) -> None:
    # what each fault test breaks: the first line of its docstring, else its name read as a sentence
    def description(item) -> str:
        doc = (getattr(item.function, "__doc__", None) or "").strip().splitlines()
        return doc[0] if doc else item.originalname.removeprefix("test_").replace("_", " ")

    config.stash[FAULT_DESCRIPTIONS] = {
        item.nodeid: description(item) for item in items if item.get_closest_marker("fault_injection")
    }


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The fault-injection suite's tally: faults tried, and how many ended as specified (a clear
    error or a correct resume) -- a failing fault test is a fault the pipeline did not survive."""
    outcomes: dict[str, str] = {}
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if report.when == "call" and "fault_injection" in getattr(report, "keywords", {}):
                outcomes[report.nodeid] = outcome
    if not outcomes:
        return
    survived = sum(o == "passed" for o in outcomes.values())
    terminalreporter.write_sep("-", f"fault injection: {len(outcomes)} faults tried, {survived} survived")
    for nodeid, outcome in outcomes.items():
        if outcome != "passed":
            terminalreporter.write_line(f"not survived: {nodeid}")
    table = config.getoption("--fault-table")
    if table:
        descriptions = config.stash.get(FAULT_DESCRIPTIONS, {})
        rows = ["| fault test | what it breaks | survived |", "|---|---|---|"]
        rows += [f"| `{nodeid.split('::', 1)[1]}` ({nodeid.split('::')[0].removeprefix('tests/')}) | "
                 f"{descriptions.get(nodeid, '').replace('|', '/')} | {'yes' if o == 'passed' else 'NO'} |"
                 for nodeid, o in sorted(outcomes.items())]
        Path(table).write_text("\n".join(rows) + "\n")
