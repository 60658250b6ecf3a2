"""The ``lvis_shaped`` mini-LVIS preset (the embedded default): a small data set shaped like LVIS v1.

What is taken from LVIS v1's published statistics (:mod:`.lvis_statistics`), and what is scaled:
- **Classes and their long tail.** ``families x classes_per_family`` classes (240 by default). Their
  train-image counts follow LVIS v1's image-count curve, compressed by the power law that maps LVIS's
  r/c/f thresholds (10, 100 images) onto ``rare_max_images`` / ``common_max_images`` (5 / 25), so the
  r/c/f shares are LVIS's 28% / 38% / 34%.
- **Images.** The train set has as many images as LVIS's 3.60 categories per image need for those
  counts; each class is placed in exactly its count of images, uniformly (at most
  ``max_categories_per_image`` categories per image). Each (image, class) pair holds
  1 + Poisson(``instances_per_category`` - 1) instances: LVIS has 3.5, scaled down so that ~5 objects
  fit a 128 px image.
- **Look-alike classes.** A family shares a shape; half its classes are base styles (colour x
  pattern) and half are variants of a base that differ subtly (a darker shade or slimmer proportions).
  The bases take the upper half of the count curve and the variants the lower half, so every rare class
  has a more frequent look-alike, and each class varies within itself (scale, rotation, aspect, colour
  jitter): a few examples cannot pin a rare class down.
- **Occlusion and clutter.** Objects may overlap (a later object covers up to 40% of an earlier one's
  box); annotations are the visible parts, as in LVIS. Unannotated distractor blobs sit under them.
- **Val** has LVIS's class distribution scaled to ``val_images``, with every class in at least
  ``val_min_images`` images so that APr is measurable. The **pool** draws classes as train does, and
  ``pool_rare_fraction`` of its images hold a rare-class object (retrieval's target).
The per-image detection budget that makes classes compete is LVIS's 300 scaled by the class count
(:func:`.lvis_statistics.detections_per_image`, 60 for 240 classes; config ``evaluation.max_detections``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from skimage.measure import approximate_polygon, find_contours
from tqdm import tqdm

from stages.data.lvis import frequency_group
from stages.data.minilvis.common import (
    COLOURS,
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
    shape_polygon,
    write_minilvis,
)
from stages.data.minilvis.lvis_statistics import LVIS_V1_CATEGORIES_PER_IMAGE, scaled_image_counts
from stages.data.minilvis.registry import MINILVIS_PRESETS

PATTERNS = ("solid", "striped", "checked", "dotted")
# A variant differs from its base in one subtle attribute; the within-class jitter never reaches it.
VARIANTS = {"dark": {"shade": 0.68, "aspect": 1.0}, "slim": {"shade": 1.0, "aspect": 0.62}}
SHADE_JITTER, ASPECT_JITTER, CHANNEL_JITTER = (0.9, 1.1), (0.92, 1.08), (0.95, 1.05)
SIDE_RANGE = (0.15, 0.4)          # object box side as a fraction of the image side
MAX_COVER = 0.4                   # a later object may cover at most this share of an earlier one's box
MIN_VISIBLE = 0.3                 # an extra instance hidden beyond this share is not annotated


def class_table(families: int, per_family: int) -> list[dict[str, Any]]:
    """The classes, family by family: ``ceil(per_family / 2)`` base styles, then one variant per base
    (alternately ``dark`` and ``slim``) up to ``per_family``. Raises ValueError past the styles there are."""
    if families > len(SHAPES):
        raise ValueError(f"minilvis.lvis_shaped.families={families}: at most {len(SHAPES)} shape families")
    styles = [(colour, pattern) for pattern in PATTERNS for colour in COLOURS]
    bases = (per_family + 1) // 2
    if bases > len(styles):
        raise ValueError(f"minilvis.lvis_shaped.classes_per_family={per_family}: at most {2 * len(styles)}")
    classes = []
    for f in range(families):
        start = len(classes)
        # step 3 is coprime with the 32 styles: distinct within a family, rotated across families
        family_styles = [styles[(f + 3 * k) % len(styles)] for k in range(bases)]
        members = [(c, p, None, None) for c, p in family_styles]
        members += [(c, p, ("dark", "slim")[j % 2], start + j)
                    for j, (c, p) in enumerate(family_styles[:per_family - bases])]
        for colour, pattern, variant, base in members:
            name = f"{SHAPES[f]}_{colour}" + ("" if pattern == "solid" else f"_{pattern}") + (f"_{variant}" if variant else "")
            classes.append({"shape": SHAPES[f], "colour": colour, "pattern": pattern, "variant": variant,
                            "name": name, "family": f, "base": base})
    return classes


def assign_counts(classes: list[dict[str, Any]], counts: np.ndarray, frequency: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per class: its train-image count and LVIS group. Base styles draw from the upper half of the
    curve and variants from the lower half, each in a seeded random order."""
    base = [i for i, c in enumerate(classes) if c["variant"] is None]
    variant = [i for i, c in enumerate(classes) if c["variant"] is not None]
    order = np.concatenate([rng.permutation(base), rng.permutation(variant)]).astype(np.int64)
    per_class, group = np.empty_like(counts), np.empty_like(frequency)
    per_class[order], group[order] = counts, frequency
    return per_class, group


def place_in_images(counts: np.ndarray, num_images: int, max_per_image: int, rng: np.random.Generator,
                    fill_empty: bool) -> list[list[int]]:
    """Each class c in ``counts[c]`` distinct images, chosen uniformly among those still below
    ``max_per_image`` classes; with ``fill_empty``, an image left empty gets a class drawn in
    proportion to the counts. Returns the class indices of each image."""
    load = np.zeros(num_images, dtype=np.int64)
    images: list[list[int]] = [[] for _ in range(num_images)]
    for c in np.argsort(-counts, kind="stable"):
        open_images = np.flatnonzero(load < max_per_image)
        for i in rng.choice(open_images, size=min(int(counts[c]), len(open_images)), replace=False):
            images[int(i)].append(int(c))
            load[i] += 1
    if fill_empty:
        p = counts / counts.sum()
        for cls in images:
            if not cls:
                cls.append(int(rng.choice(len(counts), p=p)))
    for cls in images:
        rng.shuffle(cls)
    return images


def _box_ok(box: np.ndarray, existing: list[np.ndarray]) -> bool:
    for other in existing:
        ix = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
        iy = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
        area = (other[2] - other[0]) * (other[3] - other[1])
        inside = box[0] >= other[0] and box[1] >= other[1] and box[2] <= other[2] and box[3] <= other[3]
        if ix * iy > MAX_COVER * area or inside:
            return False
    return True


def _placement(rng: np.random.Generator, size: int, existing: list[np.ndarray], tries: int = 25
               ) -> tuple[float, float, float, float] | None:
    """(cx, cy, side, angle) whose box covers no earlier box by more than MAX_COVER nor sits inside one."""
    for attempt in range(tries):
        shrink = 1.0 - 0.5 * attempt / tries  # crowded images get smaller objects before giving up
        side = rng.uniform(*SIDE_RANGE) * size * shrink
        cx, cy = rng.uniform(side / 3, size - side / 3, size=2)
        box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]).clip(0, size - 1)
        if _box_ok(box, existing):
            return cx, cy, side, rng.uniform(0, 2 * np.pi)
    return None


def _polygon_mask(poly: np.ndarray, size: int) -> np.ndarray:
    """The pixels (size, size) bool inside polygon ``poly`` (K, 2), as PIL draws it."""
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([float(v) for v in poly.reshape(-1)], fill=1)
    return np.asarray(canvas, dtype=bool)


def _paint(image: np.ndarray, cls: dict[str, Any], placement: tuple[float, float, float, float],
           rng: np.random.Generator) -> np.ndarray:
    """Draw one object into ``image`` (H, W, 3 float32, in place); returns its full mask (H, W) bool."""
    size = image.shape[0]
    cx, cy, side, angle = placement
    variant = VARIANTS.get(cls["variant"], {"shade": 1.0, "aspect": 1.0})
    unit = shape_polygon(cls["shape"]) * np.array([1.0, variant["aspect"] * rng.uniform(*ASPECT_JITTER)])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    poly = np.clip(unit @ rot.T * (side / 2) + np.array([cx, cy]), 0, size - 1)
    mask = _polygon_mask(poly, size)
    colour = (np.array(COLOURS[cls["colour"]], dtype=np.float32) * variant["shade"] * rng.uniform(*SHADE_JITTER)
              * rng.uniform(*CHANNEL_JITTER, size=3))
    yy, xx = np.nonzero(mask)
    fill = np.broadcast_to(colour, (len(yy), 3)).copy()
    period = max(3, int(side / 5))
    if cls["pattern"] == "striped":
        fill[((xx + yy) // period) % 2 == 1] *= 0.35
    elif cls["pattern"] == "checked":
        fill[((xx // period) + (yy // period)) % 2 == 1] *= 0.35
    elif cls["pattern"] == "dotted":
        fill[((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2 < (period / 3) ** 2] *= 0.35
    image[yy, xx] = fill + rng.normal(0, 6, size=fill.shape)
    return mask


def _distractor(image: np.ndarray, rng: np.random.Generator) -> None:
    """An unannotated blob (random star-shaped polygon, random colour): clutter that is no class."""
    size = image.shape[0]
    n = int(rng.integers(5, 10))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.4, 1.0, n) * rng.uniform(*SIDE_RANGE) * size / 2
    c = rng.uniform(0, size, 2)
    poly = np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], axis=1).clip(0, size - 1)
    yy, xx = np.nonzero(_polygon_mask(poly, size))
    image[yy, xx] = rng.uniform(30, 230, size=3)


def visible_polygons(mask: np.ndarray) -> list[list[float]]:
    """The outer contours of a visible mask (H, W) bool as LVIS polygons (flat x, y lists in pixels);
    holes (contours of negative orientation) are dropped, as LVIS polygons cannot hold them."""
    polygons = []
    for contour in find_contours(np.pad(mask, 1).astype(np.float32), 0.5):
        contour = approximate_polygon(contour, tolerance=0.5) - 1.0  # undo the padding
        x, y = contour[:, 1], contour[:, 0]
        if len(x) < 4 or 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) <= 1.0:
            continue
        xy = np.stack([x[:-1], y[:-1]], axis=1).clip(0, mask.shape[0] - 1)  # closed contour: drop the repeat
        polygons.append([float(round(v, 2)) for v in xy.reshape(-1)])
    return polygons


def render_image(painter: Painter, rng: np.random.Generator, classes: list[dict], class_ids: list[int],
                 instances: list[int], distractors: int, image_id: int, ann_start: int
                 ) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image: background, distractors, then every class's first instance, then the extra ones;
    annotations are the visible parts. ``instances[k]`` instances of class ``class_ids[k]``."""
    size = painter.size
    image = np.asarray(painter.background(rng), dtype=np.float32).copy()
    for _ in range(int(rng.integers(0, distractors + 1))):
        _distractor(image, rng)
    queue = [(c, True) for c in class_ids] + [(c, False) for c, n in zip(class_ids, instances) for _ in range(n - 1)]
    boxes: list[np.ndarray] = []
    drawn: list[tuple[int, bool, np.ndarray]] = []
    for c, first in queue:
        placement = _placement(rng, size, boxes)
        if placement is None:
            continue
        mask = _paint(image, classes[c], placement, rng)
        if mask.sum() < 4:
            continue
        ys, xs = np.nonzero(mask)
        boxes.append(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float))
        drawn.append((c, first, mask))
    covered = np.zeros((size, size), dtype=bool)
    anns: list[dict[str, Any]] = []
    for c, first, mask in reversed(drawn):
        visible = mask & ~covered
        covered |= mask
        if not first and visible.sum() < MIN_VISIBLE * mask.sum():
            continue
        polygons = visible_polygons(visible)
        if not polygons:
            continue
        xs = np.concatenate([p[0::2] for p in polygons])
        ys = np.concatenate([p[1::2] for p in polygons])
        if xs.max() - xs.min() < 1 or ys.max() - ys.min() < 1:
            continue
        anns.append({"image_id": image_id, "category_id": c + 1,
                     "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())],
                     "area": sum(polygon_area(p) for p in polygons), "segmentation": polygons})
    anns.reverse()
    for k, ann in enumerate(anns):
        ann["id"] = ann_start + k
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), anns


@MINILVIS_PRESETS.register("lvis_shaped")
def make_lvis_shaped(cfg: dict[str, Any], seed: int, out_dir: Path) -> dict[str, Any]:
    """The ``lvis_shaped`` preset into ``out_dir`` (the module docstring says what is derived how);
    returns a summary: classes, r/c/f counts, images, annotations and objects per image per split."""
    preset = cfg["lvis_shaped"]
    rng = np.random.default_rng(seed)
    size = cfg["image_size"]
    classes = class_table(preset["families"], preset["classes_per_family"])
    num_classes = len(classes)
    curve, curve_frequency = scaled_image_counts(num_classes, cfg["rare_max_images"], cfg["common_max_images"])
    train_counts, _ = assign_counts(classes, curve, curve_frequency, rng)
    painter = Painter(size)
    prepare_image_folders(out_dir)
    max_per_image = preset["max_categories_per_image"]
    extra = preset["instances_per_category"] - 1.0

    def build(split: str, id0: int, class_lists: list[list[int]]) -> tuple[list[dict], list[dict]]:
        images, anns = [], []
        for k, cls_ids in enumerate(tqdm(class_lists, desc=f"minilvis {split}", unit="img")):
            image_id = id0 + k
            instances = [1 + int(n) for n in rng.poisson(extra, size=len(cls_ids))]
            image, image_anns = render_image(painter, rng, classes, cls_ids, instances, preset["distractors"],
                                             image_id, len(anns) + 1 + id0 * 10)
            file_name = f"{split}/{image_id:06d}.png"
            image.save(out_dir / "images" / file_name, format="PNG")
            images.append(image_entry(image_id, file_name, size, {a["category_id"] for a in image_anns},
                                      num_classes, rng))
            anns.extend(image_anns)
        return images, anns

    num_train = int(np.ceil(train_counts.sum() / LVIS_V1_CATEGORIES_PER_IMAGE))
    train_images, train_anns = build("train", TRAIN_ID0, place_in_images(train_counts, num_train, max_per_image, rng,
                                                                         fill_empty=True))
    image_count = np.zeros(num_classes, dtype=np.int64)
    instance_count = np.zeros(num_classes, dtype=np.int64)
    for _, cid in {(a["image_id"], a["category_id"]) for a in train_anns}:
        image_count[cid - 1] += 1
    for a in train_anns:
        instance_count[a["category_id"] - 1] += 1
    if (image_count == 0).any():
        missing = [classes[c]["name"] for c in np.flatnonzero(image_count == 0)]
        raise RuntimeError(f"minilvis lvis_shaped: classes without a visible train instance: {missing}")
    frequency = np.array([frequency_group(int(n), cfg["rare_max_images"], cfg["common_max_images"]) for n in image_count])
    categories = [{"id": c + 1, "name": cls["name"], "synset": f"{cls['name']}.n.01", "synonyms": [cls["name"]],
                   "def": f"a {cls['variant'] or 'plain'} {cls['pattern']} {cls['colour']} {cls['shape']}",
                   "frequency": str(frequency[c]), "image_count": int(image_count[c]),
                   "instance_count": int(instance_count[c])}
                  for c, cls in enumerate(classes)]

    # Val: LVIS's class distribution at val's size, every class in at least val_min_images images.
    natural = train_counts / train_counts.sum() * cfg["val_images"] * LVIS_V1_CATEGORIES_PER_IMAGE
    val_counts = np.maximum(preset["val_min_images"], np.rint(natural)).astype(np.int64)
    val_images, val_anns = build("val", VAL_ID0, place_in_images(val_counts, cfg["val_images"], max_per_image, rng,
                                                                 fill_empty=True))

    # Pool: classes drawn as in train; pool_rare_fraction of the images hold a rare-class object.
    rare = np.flatnonzero(frequency == "r")
    p = train_counts / train_counts.sum()
    pool_classes = []
    for _ in range(cfg["pool_images"]):
        n = int(min(max_per_image, rng.poisson(LVIS_V1_CATEGORIES_PER_IMAGE)))
        ids = [int(c) for c in rng.choice(num_classes, size=n, replace=False, p=p)] if n else []
        if len(rare) and rng.random() < cfg["pool_rare_fraction"]:
            ids = [int(rng.choice(rare))] + [c for c in ids if frequency[c] != "r"][:max_per_image - 1]
        pool_classes.append(ids)
    pool_images, pool_anns = build("pool", POOL_ID0, pool_classes)
    truth = pool_truth(pool_images, pool_anns, frequency)
    plant_pool_duplicates(cfg, rng, out_dir, size, pool_images, val_images, truth)
    write_minilvis(out_dir, seed, categories, (train_images, train_anns), (val_images, val_anns), pool_images, truth,
                   "mini-LVIS, LVIS-shaped (generated)")
    return {"preset": "lvis_shaped", "classes": num_classes,
            "frequency": {f: int((frequency == f).sum()) for f in ("r", "c", "f")},
            "train_images": len(train_images), "train_annotations": len(train_anns),
            "train_objects_per_image": round(len(train_anns) / len(train_images), 2),
            "val_images": len(val_images), "val_annotations": len(val_anns),
            "pool_images": len(pool_images)}
