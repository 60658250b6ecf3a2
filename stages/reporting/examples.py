"""Fig. 5 of the paper: val images with rare classes, each as the image, its ground truth, the
teacher's top detections and the student's (Table 1's last row: soft + correction in the default
ladder), masks and boxes drawn by detectron2's Visualizer with class names and scores.

The selection rule is fixed (config ``figures``, seeded with ``seed``), never hand-picked, and shows
failures as well as successes:

1. Candidates: the val images holding a ground-truth object of a rare class (category frequency
   ``r``).
2. A model's *shown* detections on an image: its ``detections_shown`` highest-scoring detections
   that score at least ``display_score`` (exactly what the figure draws).
3. A rare object is *found* by a model when one of its shown detections of the object's class
   overlaps it with mask IoU >= ``match_iou`` (box IoU for detections without a mask).
4. Kinds, in this order, an image taking the first kind it qualifies for (EXAMPLE_KINDS):
   ``student_finds`` -- the student finds a rare object the teacher does not find;
   ``teacher_finds`` -- the teacher finds a rare object the student does not find;
   ``random`` -- any other candidate.
   Per kind, the first ``examples_per_kind`` images of a seeded random permutation of its
   candidates (in image-id order before the permutation); a kind with fewer candidates shows fewer.

The figure's data (FIG5_COLUMNS, one row per shown image) is written beside the PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pycocotools.mask as mask_util  # noqa: E402
from detectron2.data import Metadata  # noqa: E402

from stages.data.lvis import image_path, segmentation_rle  # noqa: E402
from stages.reporting.drawing import blank_axis, draw_objects, image_axis, read_rgb, xywh_to_xyxy  # noqa: E402

EXAMPLE_KINDS = ("student_finds", "teacher_finds", "random")
# row: the figure's row (0 = top); rare_objects: ground-truth objects of rare classes in the image;
# found_by_*: how many of them each model finds (rule 3); rare_classes: their class names, ";"-joined;
# *_shown: detections drawn per model (rule 2)
FIG5_COLUMNS = ("row", "kind", "image_id", "file_name", "rare_objects", "found_by_teacher", "found_by_student",
                "rare_classes", "teacher_shown", "student_shown")


def shown_detections(detections: list[dict[str, Any]], top: int, min_score: float) -> dict[int, list[dict[str, Any]]]:
    """image id -> its ``top`` highest-scoring detections scoring at least ``min_score`` (score order)."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for det in detections:
        if det["score"] >= min_score:
            by_image.setdefault(int(det["image_id"]), []).append(det)
    return {i: sorted(dets, key=lambda d: -d["score"])[:top] for i, dets in by_image.items()}


def overlaps(annotations: list[dict[str, Any]], detections: list[dict[str, Any]], height: int,
             width: int) -> np.ndarray:
    """(len(annotations), len(detections)) IoU: of masks when every detection has one, else of boxes."""
    if not annotations or not detections:
        return np.zeros((len(annotations), len(detections)))
    if all("segmentation" in d for d in detections):
        gt = [segmentation_rle(a["segmentation"], height, width) for a in annotations]
        dt = [d["segmentation"] for d in detections]
    else:
        gt, dt = [a["bbox"] for a in annotations], [d["bbox"] for d in detections]
    return np.asarray(mask_util.iou(dt, gt, [0] * len(gt))).reshape(len(dt), len(gt)).T


def found(annotations: list[dict[str, Any]], detections: list[dict[str, Any]], height: int, width: int,
          iou: float) -> np.ndarray:
    """Per annotation (bool): a detection of its class overlaps it with IoU >= ``iou`` (rule 3)."""
    if not annotations:
        return np.zeros(0, dtype=bool)
    same_class = np.array([[a["category_id"] == d["category_id"] for d in detections] for a in annotations],
                          dtype=bool).reshape(len(annotations), len(detections))
    return ((overlaps(annotations, detections, height, width) >= iou) & same_class).any(axis=1)


def select_examples(val: dict[str, Any], teacher: list[dict[str, Any]], student: list[dict[str, Any]],
                    figures_cfg: dict[str, Any], seed: int) -> pd.DataFrame:
    """The shown images by the module's rule: FIG5_COLUMNS, rows in figure order (kind, then draw
    order). An empty table when no val image holds a rare class."""
    rare = {c["id"]: c["name"] for c in val["categories"] if c.get("frequency") == "r"}
    top, min_score, iou = figures_cfg["detections_shown"], figures_cfg["display_score"], figures_cfg["match_iou"]
    shown = {"teacher": shown_detections(teacher, top, min_score), "student": shown_detections(student, top, min_score)}
    rare_anns: dict[int, list[dict[str, Any]]] = {}
    for ann in val["annotations"]:
        if ann["category_id"] in rare:
            rare_anns.setdefault(int(ann["image_id"]), []).append(ann)
    candidates = []
    for img in sorted(val["images"], key=lambda i: i["id"]):
        anns = rare_anns.get(int(img["id"]))
        if not anns:
            continue
        hits = {m: found(anns, shown[m].get(int(img["id"]), []), img["height"], img["width"], iou) for m in shown}
        kind = ("student_finds" if (hits["student"] & ~hits["teacher"]).any()
                else "teacher_finds" if (hits["teacher"] & ~hits["student"]).any() else "random")
        candidates.append({"kind": kind, "image_id": int(img["id"]), "file_name": str(image_path(img, "")),
                           "rare_objects": len(anns), "found_by_teacher": int(hits["teacher"].sum()),
                           "found_by_student": int(hits["student"].sum()),
                           "rare_classes": ";".join(sorted({rare[a["category_id"]] for a in anns})),
                           "teacher_shown": len(shown["teacher"].get(int(img["id"]), [])),
                           "student_shown": len(shown["student"].get(int(img["id"]), []))})
    rng = np.random.default_rng(seed)
    rows = []
    for kind in EXAMPLE_KINDS:
        of_kind = [c for c in candidates if c["kind"] == kind]
        order = rng.permutation(len(of_kind))  # drawn for every kind, so each kind's draw is fixed by the seed
        rows += [of_kind[k] for k in order[: figures_cfg["examples_per_kind"]]]
    frame = pd.DataFrame(rows, columns=[c for c in FIG5_COLUMNS if c != "row"])
    frame.insert(0, "row", np.arange(len(frame), dtype=np.int64))
    return frame


def _objects(items: list[dict[str, Any]], contiguous: dict[int, int], with_score: bool) -> list[dict[str, Any]]:
    return [{"category": contiguous[int(d["category_id"])], "box": xywh_to_xyxy(d["bbox"]),
             "segmentation": d.get("segmentation"), "score": d["score"] if with_score else None} for d in items]


def examples_figure(selection: pd.DataFrame, val: dict[str, Any], teacher: list[dict[str, Any]],
                    student: list[dict[str, Any]], image_root: Path, metadata: Metadata, figures_cfg: dict[str, Any],
                    names: tuple[str, str] = ("teacher", "student")) -> plt.Figure:
    """One row per selected image: the image, its ground truth, the teacher's and the student's shown
    detections (``names``: the two models' names for the column titles)."""
    if selection.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        blank_axis(ax, "Fig. 5: no val image holds a ground-truth object of a rare class")
        return fig
    images = {int(img["id"]): img for img in val["images"]}
    anns: dict[int, list[dict[str, Any]]] = {}
    for ann in val["annotations"]:
        anns.setdefault(int(ann["image_id"]), []).append(ann)
    top, min_score = figures_cfg["detections_shown"], figures_cfg["display_score"]
    shown = [shown_detections(teacher, top, min_score), shown_detections(student, top, min_score)]
    contiguous = metadata.get("thing_dataset_id_to_contiguous_id")
    size = figures_cfg["panel_size"]
    fig, axes = plt.subplots(len(selection), 4, figsize=(12, 3.1 * len(selection)), squeeze=False)
    for ax_row, row in zip(axes, selection.itertuples()):
        img = images[row.image_id]
        picture = read_rgb(image_path(img, image_root))
        image_axis(ax_row[0], draw_objects(picture, metadata, [], size),
                   f"{row.kind}: image {row.image_id}\nrare: {row.rare_classes.replace(';', ', ')}")
        gt = [{**a, "score": None} for a in anns.get(row.image_id, [])]
        image_axis(ax_row[1], draw_objects(picture, metadata, _objects(gt, contiguous, False), size),
                   f"ground truth ({row.rare_objects} rare object{'s' * (row.rare_objects != 1)})")
        for ax, name, dets, hits in zip(ax_row[2:], names, shown, (row.found_by_teacher, row.found_by_student)):
            objects = _objects(dets.get(row.image_id, []), contiguous, True)
            image_axis(ax, draw_objects(picture, metadata, objects, size),
                       f"{name}: top {len(objects)} (score >= {min_score:g}); finds {hits}/{row.rare_objects} rare")
    fig.suptitle("Fig. 5: val images with rare classes (rule: student finds / teacher finds / random; see caption)",
                 fontsize=9)
    fig.tight_layout()
    return fig
