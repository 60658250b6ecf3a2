"""The pseudo-label gallery: what the teacher's detections on unlabeled images become for the student.

Rule (fixed, config ``figures``, seeded with ``seed``):

* Images: ``pseudo_label_images`` unlabeled images drawn at random, shown in image-id order.
* On each, the final teacher's detections (the test-time resize of stages.modeling.predictor; in
  training the teacher sees a randomly resized, possibly flipped view) go through the student's own
  selection, :func:`stages.modeling.student.pseudo_label_selection`, with the config's ``student``
  settings for the *selecting variant* (the last pseudo-labelling variant of ``student.variants``,
  Table 1's last row): **kept** (green, with masks), **ignore band** (orange; empty unless
  ``student.ignore_threshold`` is set), **dropped** (grey boxes: below the threshold or suppressed by
  NMS; of those, the ``detections_shown`` highest scoring at least ``display_score`` are drawn).
* Boxes: ``pseudo_label_boxes`` kept pseudo-labels, taking the images in turn and each image's in
  decreasing teacher score (an image without kept pseudo-labels offers its drawn detections). For
  each, the top-5 classes of every pseudo-labelling variant's target, side by side, computed by the
  registry of stages.core.pseudo_labels (:class:`PseudoLabelRule`) with the config's lambda,
  loss, selection and correction scope; the Delta of every class shown is written beside it. (With
  ``student.use_tuned`` the students train with the tuning grid's choice; the gallery shows the
  config's own values.)

The figure's data is a JSON object (PSEUDO_LABEL_KEYS) written beside the PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pycocotools.mask as mask_util  # noqa: E402
import torch  # noqa: E402
from detectron2.data import Metadata  # noqa: E402
from detectron2.data import detection_utils as utils  # noqa: E402
from detectron2.structures import Instances  # noqa: E402

from stages.core.pseudo_labels import STUDENT_VARIANTS, PseudoLabelRule  # noqa: E402
from stages.data.lvis import image_path  # noqa: E402
from stages.modeling.data import test_transform  # noqa: E402
from stages.modeling.student import pseudo_label_selection  # noqa: E402
from stages.reporting.drawing import blank_axis, class_colour, draw_objects, image_axis, read_rgb  # noqa: E402

TOP_CLASSES = 5
STATUS_COLOURS = {"kept": (0.1, 0.7, 0.2), "ignored": (1.0, 0.55, 0.0), "dropped": (0.55, 0.55, 0.55)}
# The JSON beside the PNG: settings (the student's selection settings and the variants compared),
# images (each with its drawn detections, DETECTION_KEYS) and boxes (BOX_KEYS; targets: variant ->
# its top-5 classes as TARGET_KEYS).
PSEUDO_LABEL_KEYS = ("settings", "images", "boxes")
SETTINGS_KEYS = ("selecting_variant", "variants", "lambda", "score_threshold", "ignore_threshold", "select_on",
                 "correction_scope", "classifier_loss")
IMAGE_KEYS = ("image_id", "file_name", "detections")
# index: the detection's place in the teacher's output; box: XYXY pixels; status: kept | ignored | dropped
DETECTION_KEYS = ("index", "category_id", "category", "box", "teacher_score", "selection_score", "status",
                  "segmentation")
BOX_KEYS = ("image_id", "index", "category_id", "category", "teacher_score", "status", "targets")
TARGET_KEYS = ("category_id", "category", "value", "delta")


def pseudo_labelling_variants(variants: list[str]) -> list[str]:
    """The variants of ``student.variants`` that make pseudo-labels (registry order kept)."""
    return [v for v in variants if STUDENT_VARIANTS.get(v).uses_unlabeled]


def select_images(unlabeled: dict[str, Any], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` unlabeled images drawn at random (seeded), in image-id order."""
    images = sorted(unlabeled["images"], key=lambda i: i["id"])
    chosen = np.random.default_rng(seed).permutation(len(images))[:count]
    return [images[k] for k in sorted(chosen)]


@torch.inference_mode()
def teacher_detections(model: torch.nn.Module, config: dict[str, Any], images: list[dict[str, Any]],
                       image_root: Path) -> list[Instances]:
    """The teacher's detections (with ``class_scores``, the stage-averaged (C,) vectors) per image, on
    the CPU, in image coordinates."""
    transform, device = test_transform(config), torch.device(config["device"])
    out = []
    for img in images:
        path = image_path(img, image_root)
        try:
            array = utils.read_image(str(path), format="RGB")
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read image {img['id']}: {exc}") from exc
        resized = transform.get_transform(array).apply_image(array)
        batch = [{"image": torch.as_tensor(resized.transpose(2, 0, 1).copy()).float().to(device),
                  "height": img["height"], "width": img["width"]}]
        out.append(model(batch)[0]["instances"].to("cpu"))
    return out


def _rle(mask: torch.Tensor) -> dict[str, Any]:
    rle = mask_util.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def gallery_data(images: list[dict[str, Any]], detections: list[Instances], delta: torch.Tensor,
                 categories: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """The gallery's data (PSEUDO_LABEL_KEYS) from each image's teacher detections (``class_scores``,
    ``pred_classes``, ``pred_boxes``, ``scores``, optional ``pred_masks``), Delta (C,) in category order
    and ``categories`` (dicts with id and name, in category order)."""
    student, figures_cfg = config["student"], config["figures"]
    loss = config["model"]["classifier_loss"]
    variants = pseudo_labelling_variants(list(student["variants"]))
    selecting = variants[-1] if variants else None
    settings = {"selecting_variant": selecting, "variants": variants, "lambda": student["lambda"],
                "score_threshold": student["score_threshold"], "ignore_threshold": student["ignore_threshold"],
                "select_on": student["select_on"], "correction_scope": student["correction_scope"],
                "classifier_loss": loss}
    names = [c["name"] for c in categories]
    ids = [int(c["id"]) for c in categories]
    shown_images, candidates = [], []
    for img, inst in zip(images, detections):
        status = ["dropped"] * len(inst)
        selection = inst.scores.clone()
        if selecting is not None and len(inst):
            keep, band, _, selection = pseudo_label_selection(inst, delta, PseudoLabelRule.from_config(config, selecting))
            for k in keep.tolist():
                status[k] = "kept"
            for k in band.tolist():
                status[k] = "ignored"
        dropped = [k for k in torch.argsort(inst.scores, descending=True).tolist()
                   if status[k] == "dropped" and float(inst.scores[k]) >= figures_cfg["display_score"]]
        drawn = sorted([k for k in range(len(inst)) if status[k] != "dropped"] + dropped[:figures_cfg["detections_shown"]],
                       key=lambda k: -float(inst.scores[k]))
        rows = []
        for k in drawn:
            cls = int(inst.pred_classes[k])
            rows.append({"index": k, "category_id": ids[cls], "category": names[cls],
                         "box": [float(v) for v in inst.pred_boxes.tensor[k]], "teacher_score": float(inst.scores[k]),
                         "selection_score": float(selection[k]), "status": status[k],
                         "segmentation": _rle(inst.pred_masks[k].to(torch.bool)) if inst.has("pred_masks") else None})
        shown_images.append({"image_id": int(img["id"]), "file_name": str(image_path(img, "")), "detections": rows})
        candidates.append([r for r in rows if r["status"] == "kept"] or rows)
    boxes = []
    for rank in range(max((len(c) for c in candidates), default=0)):  # the images in turn
        for img, inst, rows in zip(images, detections, candidates):
            if rank < len(rows) and len(boxes) < figures_cfg["pseudo_label_boxes"]:
                boxes.append(_box_targets(img, inst, rows[rank], delta, variants, config, names, ids))
    return {"settings": settings, "images": shown_images, "boxes": boxes}


def _box_targets(img: dict[str, Any], inst: Instances, row: dict[str, Any], delta: torch.Tensor, variants: list[str],
                 config: dict[str, Any], names: list[str], ids: list[int]) -> dict[str, Any]:
    """One box's top-5 classes of every variant's target (stages.core.pseudo_labels)."""
    k = row["index"]
    targets = {}
    for variant in variants:
        rule = PseudoLabelRule.from_config(config, variant)
        target, _ = rule.targets(inst.class_scores[k : k + 1], inst.pred_classes[k : k + 1], delta)
        values = target[0]
        top = torch.argsort(values, descending=True)[:TOP_CLASSES].tolist()
        targets[variant] = [{"category_id": ids[c], "category": names[c], "value": float(values[c]),
                             "delta": float(delta[c])} for c in top]
    return {"image_id": int(img["id"]), "index": k, "category_id": row["category_id"], "category": row["category"],
            "teacher_score": row["teacher_score"], "status": row["status"], "targets": targets}


def gallery_figure(data: dict[str, Any], image_root: Path, metadata: Metadata, panel_size: int) -> plt.Figure:
    """Top row: the images with their drawn detections (kept green with masks, ignored orange, dropped
    grey); below, one row per box: its crop and the top-5 classes of each variant's target."""
    images, boxes, settings = data["images"], data["boxes"], data["settings"]
    if not images:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        blank_axis(ax, "pseudo-label gallery: no unlabeled image")
        return fig
    variants = settings["variants"]
    columns = max(len(images), 1 + len(variants))
    fig = plt.figure(figsize=(3.0 * columns, 3.2 * (1 + len(boxes))))
    grid = fig.add_gridspec(1 + len(boxes), columns)
    contiguous = metadata.get("thing_dataset_id_to_contiguous_id")
    pictures = {}
    for j, shown in enumerate(images):
        pixels = read_rgb(image_path({"file_name": shown["file_name"]}, image_root))
        pictures[shown["image_id"]] = pixels
        ax = fig.add_subplot(grid[0, j])
        # kept and ignored with their masks, dropped as boxes only
        objects = [{"category": contiguous[d["category_id"]], "box": d["box"], "score": d["teacher_score"],
                    "segmentation": d["segmentation"] if d["status"] != "dropped" else None,
                    "colour": STATUS_COLOURS[d["status"]]} for d in shown["detections"]]
        drawing = draw_objects(pixels, metadata, objects, panel_size)
        counts = {s: sum(d["status"] == s for d in shown["detections"]) for s in STATUS_COLOURS}
        image_axis(ax, drawing, f"image {shown['image_id']}: kept {counts['kept']}, ignored {counts['ignored']}, "
                                f"dropped (drawn) {counts['dropped']}")
    if not variants:
        fig.suptitle("pseudo-labels: no variant of student.variants makes pseudo-labels", fontsize=9)
    for i, box in enumerate(boxes, start=1):
        shown = next(s for s in images if s["image_id"] == box["image_id"])
        row = next(d for d in shown["detections"] if d["index"] == box["index"])
        pixels = pictures[box["image_id"]]
        x0, y0, x1, y1 = (int(round(v)) for v in row["box"])
        crop = pixels[max(0, y0):max(y1, y0 + 1), max(0, x0):max(x1, x0 + 1)]
        image_axis(fig.add_subplot(grid[i, 0]), crop if crop.size else pixels,
                   f"image {box['image_id']}: {box['category']}\nteacher {box['teacher_score']:.2f}, {box['status']}")
        for j, variant in enumerate(variants, start=1):
            ax = fig.add_subplot(grid[i, j])
            top = box["targets"][variant][::-1]
            labels = [f"{t['category']} (Delta {t['delta']:+.2f})" for t in top]
            colours = [class_colour(contiguous[t["category_id"]]) for t in top]
            bars = ax.barh(range(len(top)), [t["value"] for t in top], color=colours, edgecolor="black", linewidth=0.5)
            for bar, t in zip(bars, top):
                if t["category_id"] == box["category_id"]:
                    bar.set_hatch("//")  # the detected class: where eq. (5) adds lambda * Delta (detected_class scope)
            ax.set_yticks(range(len(top)), labels, fontsize=6)
            ax.set_xlim(0, 1)
            ax.set_title(f"{variant} target (top {len(top)})", fontsize=7)
            ax.tick_params(axis="x", labelsize=6)
    fig.suptitle(f"Pseudo-labels of the teacher on unlabeled images (selection of {settings['selecting_variant']}: "
                 f"threshold {settings['score_threshold']}, ignore band "
                 f"{'off' if settings['ignore_threshold'] is None else settings['ignore_threshold']}, lambda "
                 f"{settings['lambda']})\ngreen: kept, orange: ignore band, grey: dropped; bars: each variant's target, "
                 "hatched: the detected class", fontsize=9)
    fig.tight_layout()
    return fig
