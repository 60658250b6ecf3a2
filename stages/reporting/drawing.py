"""Objects on images, drawn with detectron2's Visualizer and the run's metadata (thing_classes), for
the picture galleries (Fig. 5, the retrieval and pseudo-label galleries).

An object to draw is a dict: ``category`` (contiguous index into the metadata's thing_classes),
``box`` (XYXY_ABS pixels), optional ``segmentation`` (polygons, or an LVIS/COCO RLE), optional
``score`` (drawn as a percentage after the class name), optional ``colour`` (RGB in [0, 1]; default:
detectron2's colormap entry of the class, so a class has the same colour in every panel).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from detectron2.data import Metadata, MetadataCatalog
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

from stages.data.images import decode_rgb, read_image_bytes
from stages.data.lvis import register

PALETTE = colormap(rgb=True, maximum=1)  # detectron2's 74 distinct colours


def run_metadata(name: str, json_path: Path, image_root: Path, *, require_annotations: bool = True) -> Metadata:
    """detectron2's metadata of an LVIS json of the run (``thing_classes`` in category order,
    ``thing_dataset_id_to_contiguous_id``), registered under ``name`` as the training stages do."""
    register(name, json_path, image_root, require_annotations=require_annotations)
    return MetadataCatalog.get(name)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; a file that cannot be read raises ImageReadError naming it."""
    return np.asarray(decode_rgb(read_image_bytes(Path(path)), Path(path)))


def class_colour(category: int) -> np.ndarray:
    return PALETTE[category % len(PALETTE)]


def draw_objects(image: np.ndarray, metadata: Metadata, objects: list[dict[str, Any]], panel_size: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB with ``objects`` overlaid by detectron2's Visualizer, scaled so
    that its longer side is ``panel_size`` pixels; returns the drawing as (h, w, 3) uint8. Objects with
    a segmentation get mask, box and label; those without, box and label."""
    vis = Visualizer(image, metadata=metadata, scale=panel_size / max(image.shape[:2]), instance_mode=ColorMode.IMAGE)
    names = metadata.get("thing_classes")
    for with_masks in (False, True):  # masked objects last: on top of the boxes-only ones
        group = [o for o in objects if (o.get("segmentation") is not None) == with_masks]
        if not group:
            continue
        vis.overlay_instances(
            boxes=np.asarray([o["box"] for o in group], dtype=np.float64).reshape(-1, 4),
            labels=[names[o["category"]] + (f" {o['score']:.0%}" if o.get("score") is not None else "") for o in group],
            masks=[o["segmentation"] for o in group] if with_masks else None,
            assigned_colors=[o.get("colour", class_colour(o["category"])) for o in group],
        )
    return vis.get_output().get_image()


def xywh_to_xyxy(box: list[float]) -> list[float]:
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def blank_axis(ax: Any, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


TITLE_WIDTH = 44  # characters per title line: a 7-pt line this long fits a gallery panel


def image_axis(ax: Any, image: np.ndarray, title: str, colour: str = "black") -> None:
    """``image`` on ``ax`` without axes, under ``title`` wrapped to the panel's width (long class
    lists and names would otherwise run into the neighbouring panels)."""
    ax.imshow(image)
    wrapped = "\n".join(textwrap.fill(line, TITLE_WIDTH, break_on_hyphens=False) for line in title.split("\n"))
    ax.set_title(wrapped, fontsize=7, color=colour)
    ax.set_axis_off()
