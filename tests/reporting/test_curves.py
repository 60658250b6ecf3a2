"""Training curves: metrics.json as detectron2's JSONWriter writes it (a resumed run appends), the
data file's columns, clear errors for a broken file, and a model without loss lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages.cli import training_curves as curves_stage
from stages.data.artifacts import ArtifactError
from stages.reporting.curves import CURVE_COLUMNS, curves_figure, curves_table, read_training_metrics
from tests.conftest import tiny_config


def write_log(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


TEACHER = [{"iteration": 19, "total_loss": 3.0, "loss_cls": 2.0, "loss_mask": 1.0, "lr": 0.001, "time": 0.3},
           {"iteration": 39, "total_loss": 2.0, "loss_cls": 1.2, "loss_mask": 0.8, "lr": 0.002, "data_time": 0.01},
           # killed after iteration 39's checkpoint at 30: the resumed run writes 39 again, then 59
           {"iteration": 39, "total_loss": 1.9, "loss_cls": 1.1, "loss_mask": 0.8, "lr": 0.002},
           {"iteration": 59, "total_loss": 1.5, "loss_cls": 0.9, "lr": 0.002},
           # a scalar last put at an earlier step comes on a line of its own (JSONWriter groups by iteration)
           {"iteration": 58, "loss_mask": 0.6, "mask_rcnn/accuracy": 0.5}]  # fmt: skip


def test_metrics_keep_losses_and_lr_and_the_resumed_runs_lines(tmp_path: Path) -> None:
    table = read_training_metrics(write_log(tmp_path / "m.json", TEACHER))
    assert sorted(set(table["metric"])) == ["loss_cls", "loss_mask", "lr", "total_loss"]  # no timings
    total = table[table["metric"] == "total_loss"]
    assert total["iteration"].tolist() == [19, 39, 59] and total["value"].tolist() == [3.0, 1.9, 1.5]
    mask = table[table["metric"] == "loss_mask"]
    assert mask["iteration"].tolist() == [19, 39, 58] and mask["value"].tolist() == [1.0, 0.8, 0.6]
    assert table["iteration"].is_monotonic_increasing


def test_table_columns_and_one_panel_per_model(tmp_path: Path) -> None:
    student = [{"iteration": 5, "total_loss": 2.5, "loss_cls_labeled": 1.0, "loss_cls_unlabeled": 1.5, "lr": 1e-4,
                "pseudo_labels_per_image": 2.0}]
    logs = {"teacher": write_log(tmp_path / "t.json", TEACHER), "student_soft": write_log(tmp_path / "s.json", student),
            "student_empty": write_log(tmp_path / "e.json", [])}  # a run that wrote nothing yet
    table = curves_table(logs)
    assert list(table.columns) == list(CURVE_COLUMNS)
    assert list(dict.fromkeys(table["model"])) == ["teacher", "student_soft"]
    assert set(table.loc[table["model"] == "student_soft", "metric"]) == {"total_loss", "loss_cls_labeled",
                                                                          "loss_cls_unlabeled", "lr"}
    fig = curves_figure(table)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["teacher", "student_soft"]
    lines = {line.get_label(): line.get_xydata() for line in panels[0].get_lines()}
    np.testing.assert_allclose(lines["total_loss"], [[19, 3.0], [39, 1.9], [59, 1.5]])
    np.testing.assert_allclose(lines["loss_mask"], [[19, 1.0], [39, 0.8], [58, 0.6]])
    assert set(lines) == {"total_loss", "loss_cls", "loss_mask"}
    lr = [line for ax in fig.axes for line in ax.get_lines() if line.get_label() == "lr"]
    np.testing.assert_allclose(lr[0].get_xydata(), [[19, 0.001], [39, 0.002], [59, 0.002]])
    assert curves_figure(pd.DataFrame(columns=CURVE_COLUMNS)).axes[0].texts  # nothing at all: says so


@pytest.mark.parametrize(("text", "message"), [
    ('{"iteration": 19, "total_loss": 1.0}\n{"total_loss": 2\n', "line 2: not JSON"),
    ('{"iteration": "19", "total_loss": 1.0}\n', "line 1: expected an object with an integer 'iteration'"),
    ('{"iteration": 19, "total_loss": NaN}\n', r"line 1 \(iteration 19\): \['total_loss'\] not finite"),
])  # fmt: skip
def test_a_broken_metrics_file_names_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "metrics.json").write_text(text)
    with pytest.raises(ArtifactError, match=message) as err:
        read_training_metrics(tmp_path / "metrics.json")
    assert "metrics.json" in str(err.value)
    with pytest.raises(ArtifactError, match="no training metrics"):
        read_training_metrics(tmp_path / "absent" / "metrics.json")


def test_cli_writes_the_documented_columns_and_a_figure(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path / "results")))
    log = write_log(tmp_path / "teacher" / "checkpoints" / "metrics.json", TEACHER)
    curves_stage.main(["--config", str(tmp_path / "cfg.yaml"), "--logs", f"teacher={log}", "--out-png",
                       str(tmp_path / "c.png"), "--out-csv", str(tmp_path / "c.csv")])  # fmt: skip
    assert list(pd.read_csv(tmp_path / "c.csv").columns) == list(CURVE_COLUMNS)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        curves_stage.main(["--config", str(tmp_path / "cfg.yaml"), "--logs", str(log), "--out-png",
                           str(tmp_path / "c.png"), "--out-csv", str(tmp_path / "c.csv")])  # fmt: skip
