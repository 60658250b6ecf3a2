"""Components own their parameters: a student variant or a smoothing kind registered here, in this
test module alone, reaches the config check, Table 1, the comparison ladder, the tuning grid and
Fig. 2 without an edit anywhere else; and building the DAG imports no torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.core.pseudo_labels import STUDENT_VARIANTS, PaperRow, PseudoLabelRule, student_variant
from stages.core.smoothing import SMOOTHING, smoothed_targets, smoothing
from stages.pipeline.experiments import student_grid, table1_comparisons
from stages.pipeline.registries import check_registered
from stages.reporting.figures import sweep_figure, sweep_table
from stages.reporting.table1 import figure_models, table1
from stages.utils.config import load_config
from tests.conftest import REPO


@pytest.fixture
def sharpened() -> Iterator[str]:
    """A new student variant, one decorated function: the teacher's vector squared and renormalised,
    a step on the ladder between soft and soft + correction."""

    @student_variant("sharpened", label="+ sharpened soft targets", ladder=2.5, paper=PaperRow(55.9, 54.0))
    def sharpened_targets(class_scores, classes, delta, rule):
        squared = class_scores**2
        return squared / squared.sum(dim=1, keepdim=True)

    yield "sharpened"
    STUDENT_VARIANTS.remove("sharpened")


@pytest.fixture
def halfway() -> Iterator[str]:
    """A new smoothing kind, one decorated function: half of the smoothing mass on the diagonal."""

    @smoothing("halfway", label="half-uniform smoothing")
    def halfway_targets(similarity, eps):
        c = similarity.shape[0]
        return (1 - eps / 2) * np.eye(c) + eps / 2 / c * np.ones((c, c))

    yield "halfway"
    SMOOTHING.remove("halfway")


def _metrics(ap: float) -> dict:
    """A metrics.json of the contract (every key table1 reads), all AP values ``ap``."""
    from stages.reporting.table1 import _SEGM_KEYS

    segm = dict.fromkeys(_SEGM_KEYS, ap)
    return {"segm": segm, "bbox": segm, "ece": 0.1, "ece_per_frequency": {"r": 0.1, "c": 0.1, "f": 0.1}}


def test_a_new_student_variant_reaches_table1_and_the_ladder(sharpened: str) -> None:
    config = load_config()
    config["student"]["variants"] = ["labeled_only", "onehot", "soft", sharpened, "soft_corrected"]
    check_registered(config)  # the config accepts it
    models = ["teacher"] + [f"student_{v}" for v in config["student"]["variants"]]

    pairs = table1_comparisons(models)
    # its place on the ladder: soft -> sharpened -> soft + correction, each step against the one before
    assert ("student_sharpened", "student_soft") in pairs and ("student_soft_corrected", "student_sharpened") in pairs
    assert ("student_soft_corrected", "student_soft") not in pairs
    # and, like every student, against the teacher and the control
    assert ("student_sharpened", "teacher") in pairs and ("student_sharpened", "student_labeled_only") in pairs

    frame = table1({m: _metrics(10.0 + i) for i, m in enumerate(models)})
    row = frame.set_index("model").loc["student_sharpened"]
    assert row["description"] == "+ sharpened soft targets"
    assert (row["paper_AP"], row["paper_APr"]) == (55.9, 54.0) and math.isnan(row["paper_ECE"])
    assert figure_models(models) == ["teacher", "student_soft_corrected"]  # still the top of the ladder
    assert figure_models(["teacher", "student_soft", "student_sharpened"]) == ["teacher", "student_sharpened"]

    # the pseudo-label rule applies it, with every setting from the config's student section
    rule = PseudoLabelRule.from_config(config, sharpened)
    targets, scores = rule.targets(torch.tensor([[0.6, 0.3, 0.1]]), torch.tensor([0]), torch.zeros(3))
    torch.testing.assert_close(targets, torch.tensor([[0.36, 0.09, 0.01]]) / 0.46)
    torch.testing.assert_close(scores, torch.tensor([0.6]))  # selected on the teacher's own score


def test_the_tuning_grid_tunes_the_variant_registered_as_tuned(sharpened: str) -> None:
    config = load_config()
    assert {e.variant for e in student_grid(config)} == {"soft_corrected"}
    STUDENT_VARIANTS.register("sharpened_tuned")(STUDENT_VARIANTS.get(sharpened).__class__(
        targets=STUDENT_VARIANTS.get(sharpened).targets, label="tuned twin", tuned=True))
    try:
        with pytest.raises(ValueError, match="exactly one variant registered with tuned=True"):
            student_grid(config)
    finally:
        STUDENT_VARIANTS.remove("sharpened_tuned")


def test_a_new_smoothing_kind_reaches_the_config_and_fig2(halfway: str, tmp_path: Path) -> None:
    config = load_config()
    config["teacher"]["smoothing"] = halfway
    config["sweep"]["variants"] = ["onehot", halfway]
    check_registered(config)
    targets = smoothed_targets(halfway, np.eye(4), 0.2)
    np.testing.assert_allclose(targets, 0.9 * np.eye(4) + 0.025, rtol=1e-6)  # rows of 1 - eps/2 + eps/2C, eps/2C
    runs = []
    for kind in ("onehot", halfway):
        path = tmp_path / f"{kind}.json"
        path.write_text(json.dumps(_metrics(20.0)))
        runs.append({"smoothing": kind, "fraction": 0.5, "metrics": str(path)})
    fig = sweep_figure(sweep_table(runs))
    assert {line.get_label() for line in fig.axes[0].get_lines()} == {"one-hot", "half-uniform smoothing"}


def test_building_the_dag_imports_no_torch(tmp_path: Path) -> None:
    """`snakemake -n all` in one process: after the Snakefile, its rule files and the stages modules
    they import are loaded and the DAG is built, torch is not among the loaded modules (each Slurm
    job re-reads the Snakefile, so this is paid per job). Results go to an empty directory, so that a
    finished run in the checkout cannot leave nothing to plan."""
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules))\n"
             f"sys.argv = ['snakemake', '-n', 'all', '--cores', '1', '--config', {f'results_dir={tmp_path}'!r}]\n"
             "from snakemake.cli import main\n"
             "main()\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Job stats:" in done.stdout + done.stderr  # the DAG was built
    assert "torch loaded: False" in done.stdout, done.stdout[-2000:]
