"""Fig. 5: the selection rule picks what it says on a constructed case, the data file has its
columns, and images without rare classes or detections are drawn without a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stages.cli import fig5 as fig5_stage
from stages.reporting.drawing import run_metadata
from stages.reporting.examples import EXAMPLE_KINDS, FIG5_COLUMNS, examples_figure, found, select_examples
from tests.conftest import tiny_config
from tests.reporting.tiny_lvis import annotation, detection, write_dataset

FIGURES = {"examples_per_kind": 2, "detections_shown": 5, "display_score": 0.3, "match_iou": 0.5, "panel_size": 128}
TEAPOT, KETTLE, CHAIR = 1, 2, 5  # rare, common, frequent

# image 10: only the student finds the teapot; 11: only the teacher (the student's teapot scores below the
# display score, its kettle on the spot is the wrong class); 12: both find it (mask IoU 0.8); 13: no rare
# object; 14: a teapot nobody detects; 15: the student's teapot is its 6th detection, not shown
VAL_ANNOTATIONS = [annotation(1, 10, TEAPOT, (10, 10, 20, 20)), annotation(2, 10, CHAIR, (40, 40, 10, 10)),
                   annotation(3, 11, TEAPOT, (30, 30, 20, 20)), annotation(4, 12, TEAPOT, (5, 5, 20, 20)),
                   annotation(5, 13, KETTLE, (5, 5, 20, 20)), annotation(6, 14, TEAPOT, (20, 20, 10, 10)),
                   annotation(7, 15, TEAPOT, (0, 0, 20, 20))]  # fmt: skip
TEACHER = [detection(10, CHAIR, (40, 40, 10, 10), 0.9), detection(11, TEAPOT, (30, 30, 20, 20), 0.7),
           detection(12, TEAPOT, (5, 5, 20, 16), 0.6), detection(13, KETTLE, (5, 5, 20, 20), 0.8)]  # fmt: skip
STUDENT = [detection(10, TEAPOT, (10, 10, 20, 20), 0.8), detection(11, TEAPOT, (30, 30, 20, 20), 0.2),
           detection(11, KETTLE, (30, 30, 20, 20), 0.9), detection(12, TEAPOT, (5, 5, 16, 20), 0.5),
           *[detection(15, CHAIR, (30 + k, 30, 10, 10), 0.9 - 0.01 * k) for k in range(5)],
           detection(15, TEAPOT, (0, 0, 20, 20), 0.6)]  # fmt: skip


@pytest.fixture
def val(tmp_path: Path) -> tuple[Path, dict]:
    path = write_dataset(tmp_path, "val", [10, 11, 12, 13, 14, 15], VAL_ANNOTATIONS)
    return path, json.loads(path.read_text())


def test_found_needs_the_class_and_the_mask_iou() -> None:
    gt = [annotation(1, 1, TEAPOT, (0, 0, 20, 20))]
    assert found(gt, [detection(1, TEAPOT, (0, 0, 20, 10), 0.9)], 64, 64, 0.5).tolist() == [True]  # IoU 0.5
    assert found(gt, [detection(1, TEAPOT, (0, 0, 20, 9), 0.9)], 64, 64, 0.5).tolist() == [False]  # IoU 0.45
    assert found(gt, [detection(1, KETTLE, (0, 0, 20, 20), 0.9)], 64, 64, 0.5).tolist() == [False]
    assert found(gt, [], 64, 64, 0.5).tolist() == [False]
    boxes_only = {k: v for k, v in detection(1, TEAPOT, (0, 0, 20, 10), 0.9).items() if k != "segmentation"}
    assert found(gt, [boxes_only], 64, 64, 0.5).tolist() == [True]  # box IoU without masks


def test_selection_rule_on_a_constructed_case(val) -> None:
    _, data = val
    selection = select_examples(data, TEACHER, STUDENT, FIGURES, seed=0)
    assert list(selection.columns) == list(FIG5_COLUMNS)
    assert selection["kind"].tolist()[:2] == ["student_finds", "teacher_finds"]
    assert selection["image_id"].tolist()[:2] == [10, 11]
    by_image = selection.set_index("image_id")
    assert (by_image.loc[10, "found_by_teacher"], by_image.loc[10, "found_by_student"]) == (0, 1)
    assert (by_image.loc[11, "found_by_teacher"], by_image.loc[11, "found_by_student"]) == (1, 0)
    # two of the three others drawn at random: 12 (both find it), 14 (nobody), 15 (the student's only in 6th place)
    random = selection[selection["kind"] == "random"]
    assert len(random) == 2 and set(random["image_id"]) <= {12, 14, 15}
    assert 13 not in selection["image_id"].tolist()  # no rare object
    assert selection["row"].tolist() == list(range(4)) and set(selection["kind"]) <= set(EXAMPLE_KINDS)
    # the draw is the seed's, and over seeds every random candidate turns up
    assert select_examples(data, TEACHER, STUDENT, FIGURES, seed=0).equals(selection)
    drawn = {i for seed in range(20) for i in select_examples(data, TEACHER, STUDENT, FIGURES, seed)
             .query("kind == 'random'")["image_id"]}  # fmt: skip
    assert drawn == {12, 14, 15}
    both = select_examples(data, TEACHER, STUDENT, {**FIGURES, "examples_per_kind": 3}, seed=0).set_index("image_id")
    assert by_image.loc[10, "rare_classes"] == "teapot"
    assert both.loc[12, ["kind", "found_by_teacher", "found_by_student"]].tolist() == ["random", 1, 1]  # IoU 0.8
    assert both.loc[15, ["found_by_student", "student_shown"]].tolist() == [0, 5]


def test_fig5_cli_writes_the_documented_columns_and_a_figure(val, tmp_path: Path) -> None:
    path, _ = val
    for name, dets in (("teacher", TEACHER), ("student", STUDENT)):
        (tmp_path / f"{name}.json").write_text(json.dumps(dets))
    config = tiny_config(tmp_path / "results")
    config["figures"].update(FIGURES)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    fig5_stage.main(["--config", str(tmp_path / "cfg.yaml"), "--val-json", str(path), "--image-root",
                     str(tmp_path / "images"), "--teacher", str(tmp_path / "teacher.json"), "--student",
                     str(tmp_path / "student.json"), "--student-name", "student_soft_corrected", "--out-png",
                     str(tmp_path / "fig5.png"), "--out-csv", str(tmp_path / "fig5.csv")])  # fmt: skip
    table = pd.read_csv(tmp_path / "fig5.csv")
    assert list(table.columns) == list(FIG5_COLUMNS) and len(table) == 4
    assert (tmp_path / "fig5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_rare_class_and_no_detections_draw_without_a_crash(tmp_path: Path) -> None:
    path = write_dataset(tmp_path, "val", [1, 2], [annotation(1, 1, KETTLE, (5, 5, 20, 20))])
    data = json.loads(path.read_text())
    selection = select_examples(data, [], [], FIGURES, seed=0)
    assert selection.empty and list(selection.columns) == list(FIG5_COLUMNS)
    metadata = run_metadata("test_fig5_empty", path, tmp_path / "images")
    fig = examples_figure(selection, data, [], [], tmp_path / "images", metadata, FIGURES)
    assert "no val image" in fig.axes[0].texts[0].get_text()
    # a rare image on which neither model detects anything: four panels, drawn images, nothing found
    path = write_dataset(tmp_path, "val2", [3], [annotation(2, 3, TEAPOT, (5, 5, 20, 20))])
    data = json.loads(path.read_text())
    selection = select_examples(data, [], [], FIGURES, seed=0)
    assert selection[["kind", "found_by_teacher", "found_by_student", "teacher_shown"]].values.tolist() == [
        ["random", 0, 0, 0]]
    fig = examples_figure(selection, data, [], [], tmp_path / "images", run_metadata("test_fig5_none", path,
                          tmp_path / "images"), FIGURES, ("teacher", "student_soft_corrected"))  # fmt: skip
    assert len(fig.axes) == 4 and all(ax.images for ax in fig.axes)
    assert fig.axes[3].get_title().startswith("student_soft_corrected: top 0")
