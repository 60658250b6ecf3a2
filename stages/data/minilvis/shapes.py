"""The ``shapes`` mini-LVIS preset: 40 classes in 8 shape families, few objects per image; the fast
tests' data set (the embedded default until the LVIS-shaped preset replaced it).

Classes come in shape families (all classes of a family share a shape and differ in colour and
fill pattern), so that class prototypes have a real similarity structure. Train-set class
frequencies follow a Zipf law over a rank order that interleaves the families, so every family
has frequent, common and rare members; r/c/f follow LVIS's rule by train images (r: <= 10, c: 11-100,
f: more), with the bounds ``minilvis.rare_max_images`` / ``common_max_images`` scaled to a small
data set. Val is flat over classes so that APr is measurable. Objects sit on real photos and
textures from scikit-image. The unlabeled pool over-represents rare-class objects in a minority of
images and holds planted exact and near duplicates and copies of val images (for retrieval and
dedup tests; the truth is in pool_truth.json).

Files written by :func:`make_minilvis`: images/{train,val,pool}/*.png, train.json, val.json, pool.json,
pool_truth.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from stages.data.lvis import frequency_group
from stages.data.minilvis.common import (
    COLOURS,
    PATTERNS,
    POOL_ID0,
    SHAPES,
    TRAIN_ID0,
    VAL_ID0,
    Painter,
    image_entry,
    plant_pool_duplicates,
    polygon_area,
    pool_truth,
    prepare_image_folders,
    write_minilvis,
)
from stages.data.minilvis.registry import MINILVIS_PRESETS


def class_table(families: int, per_family: int) -> list[dict[str, Any]]:
    """Categories: family f gets shape SHAPES[f]; its members differ by colour and pattern."""
    if families > len(SHAPES):
        raise ValueError(f"minilvis.families={families}: at most {len(SHAPES)} shape families are available")
    styles = [(c, p) for p in PATTERNS for c in COLOURS]
    if per_family > len(styles):
        raise ValueError(f"minilvis.classes_per_family={per_family}: at most {len(styles)} are available")
    classes = []
    for f in range(families):
        for k in range(per_family):
            # Rotate the palette per family so that colour alone does not name a class.
            colour, pattern = styles[(k + f) % len(COLOURS) + len(COLOURS) * (k // len(COLOURS))]
            name = f"{SHAPES[f]}_{colour}" + ("" if pattern == "solid" else f"_{pattern}")
            classes.append({"shape": SHAPES[f], "colour": colour, "pattern": pattern, "name": name, "family": f})
    return classes


def zipf_probabilities(num_classes: int, families: int, exponent: float) -> np.ndarray:
    """Per-class train probabilities; ranks interleave families (member k of every family, then k+1)."""
    per_family = num_classes // families
    rank = np.empty(num_classes, dtype=np.int64)
    order = [f * per_family + k for k in range(per_family) for f in range(families)]
    rank[order] = np.arange(num_classes)
    weights = (rank + 1.0) ** (-exponent)
    return weights / weights.sum()


def _render(painter: Painter, rng: np.random.Generator, classes: list[dict], class_ids: list[int],
            image_id: int, ann_start: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    image = painter.background(rng)
    boxes: list[list[float]] = []
    anns = []
    for c in class_ids:
        placement = painter.place(rng, boxes)
        if placement is None:
            continue
        flat = painter.draw(image, classes[c], placement, rng)
        xs, ys = flat[0::2], flat[1::2]
        box = [min(xs), min(ys), max(xs), max(ys)]
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        boxes.append(box)
        anns.append({"id": ann_start + len(anns), "image_id": image_id, "category_id": c + 1,
                     "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "area": polygon_area(flat),
                     "segmentation": [flat]})
    # Later objects may cover earlier ones; annotations keep the full polygons (as in LVIS).
    return image, anns


def _objects_per_image(rng: np.random.Generator, count: int, max_objects: int) -> np.ndarray:
    return rng.integers(1, max_objects + 1, size=count)


@MINILVIS_PRESETS.register("shapes")
def make_shapes(cfg: dict[str, Any], seed: int, out_dir: Path) -> dict[str, Any]:
    """The ``shapes`` preset into ``out_dir``; returns a summary (counts per frequency, images, annotations)."""
    preset = cfg["shapes"]
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    size = cfg["image_size"]
    classes = class_table(preset["families"], preset["classes_per_family"])
    num_classes = len(classes)
    painter = Painter(size)
    prepare_image_folders(out_dir)

    # Train: Zipf over interleaved ranks; the first images cover every class once so that no
    # class is empty (LVIS has at least one train image per category).
    probs = zipf_probabilities(num_classes, preset["families"], preset["zipf_exponent"])
    counts = _objects_per_image(rng, preset["train_images"], preset["max_objects_per_image"])
    train_classes = [[int(c) for c in rng.choice(num_classes, size=n, p=probs)] for n in counts]
    for c in range(min(num_classes, preset["train_images"])):
        train_classes[c][0] = c

    def build(split: str, id0: int, class_lists: list[list[int]]) -> tuple[list[dict], list[dict]]:
        images, anns = [], []
        for k, cls_ids in enumerate(tqdm(class_lists, desc=f"minilvis {split}", unit="img")):
            image_id = id0 + k
            image, image_anns = _render(painter, rng, classes, cls_ids, image_id, len(anns) + 1 + id0 * 10)
            file_name = f"{split}/{image_id:06d}.png"
            image.save(out_dir / "images" / file_name, format="PNG")
            images.append(image_entry(image_id, file_name, size, {a["category_id"] for a in image_anns},
                                       num_classes, rng))
            anns.extend(image_anns)
        return images, anns

    train_images, train_anns = build("train", TRAIN_ID0, train_classes)
    image_count = np.zeros(num_classes, dtype=np.int64)
    instance_count = np.zeros(num_classes, dtype=np.int64)
    for cid in {(a["image_id"], a["category_id"]) for a in train_anns}:
        image_count[cid[1] - 1] += 1
    for a in train_anns:
        instance_count[a["category_id"] - 1] += 1
    frequency = np.array([frequency_group(int(n), cfg["rare_max_images"], cfg["common_max_images"]) for n in image_count])
    categories = [{"id": c + 1, "name": cls["name"], "synset": f"{cls['name']}.n.01", "synonyms": [cls["name"]],
                   "def": f"a {cls['pattern']} {cls['colour']} {cls['shape']}", "frequency": str(frequency[c]),
                   "image_count": int(image_count[c]), "instance_count": int(instance_count[c])}
                  for c, cls in enumerate(classes)]

    # Val: flat over classes (every class several times).
    val_counts = _objects_per_image(rng, cfg["val_images"], preset["max_objects_per_image"])
    cycle = np.concatenate([rng.permutation(num_classes) for _ in range(int(val_counts.sum()) // num_classes + 1)])
    val_classes, pos = [], 0
    for n in val_counts:
        val_classes.append([int(c) for c in cycle[pos:pos + n]])
        pos += n
    val_images, val_anns = build("val", VAL_ID0, val_classes)

    # Pool: a minority of images hold rare-class objects; the rest c/f objects or nothing.
    rare = [c for c in range(num_classes) if frequency[c] == "r"]
    common = [c for c in range(num_classes) if frequency[c] != "r"] or list(range(num_classes))
    pool_classes = []
    for _ in range(cfg["pool_images"]):
        n = int(rng.integers(1, preset["max_objects_per_image"] + 1))
        if rare and rng.random() < cfg["pool_rare_fraction"]:
            ids = [int(rng.choice(rare))] + [int(rng.choice(common)) for _ in range(n - 1)]
        elif rng.random() < 0.2:
            ids = []
        else:
            ids = [int(rng.choice(common)) for _ in range(n)]
        pool_classes.append(ids)
    pool_images, pool_anns = build("pool", POOL_ID0, pool_classes)
    truth = pool_truth(pool_images, pool_anns, frequency)
    plant_pool_duplicates(cfg, rng, out_dir, size, pool_images, val_images, truth)
    write_minilvis(out_dir, seed, categories, (train_images, train_anns), (val_images, val_anns), pool_images, truth,
                   "mini-LVIS (generated)")
    by_freq = {f: int((frequency == f).sum()) for f in ("r", "c", "f")}
    return {"classes": num_classes, "frequency": by_freq, "train_images": len(train_images),
            "train_annotations": len(train_anns), "val_images": len(val_images), "val_annotations": len(val_anns),
            "pool_images": len(pool_images)}
