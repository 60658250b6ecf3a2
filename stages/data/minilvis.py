"""Mini-LVIS: a seeded, long-tailed instance segmentation dataset in the LVIS v1 json format.

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

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from stages.data.lvis import frequency_group
from stages.utils.atomic import write_json

TRAIN_ID0, VAL_ID0, POOL_ID0 = 1, 100_001, 200_001
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "pentagon", "arrow", "heart",
          "moon", "trapezoid")
COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 180, 60), "yellow": (240, 210, 40),
           "purple": (150, 60, 200), "orange": (250, 140, 30), "cyan": (40, 200, 210), "white": (240, 240, 240)}
PATTERNS = ("solid", "striped", "checked")
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "brick", "grass", "gravel", "rocket", "camera", "coins", "moon",
               "hubble_deep_field", "immunohistochemistry")


def _shape_polygon(shape: str) -> np.ndarray:
    """Unit polygon (K, 2) within [-1, 1]^2."""
    def ring(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
        t = phase + 2 * np.pi * np.arange(n) / n
        return radius * np.stack([np.cos(t), np.sin(t)], axis=1)

    if shape == "circle":
        return ring(24)
    if shape == "square":
        return ring(4, math.sqrt(2), np.pi / 4) * 0.8
    if shape == "triangle":
        return ring(3, 1.0, -np.pi / 2)
    if shape == "star":
        outer, inner = ring(5, 1.0, -np.pi / 2), ring(5, 0.45, -np.pi / 2 + np.pi / 5)
        return np.stack([outer, inner], axis=1).reshape(-1, 2)
    if shape == "hexagon":
        return ring(6)
    if shape == "pentagon":
        return ring(5, 1.0, -np.pi / 2)
    if shape == "diamond":
        return np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], dtype=float)
    if shape == "cross":
        a = 0.33
        return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                         [-1, -a], [-a, -a]], dtype=float)
    if shape == "arrow":
        return np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.8], [1, 0], [0.2, 0.8], [0.2, 0.3], [-1, 0.3]], dtype=float)
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y], axis=1) / 17.0
    if shape == "moon":
        t = np.linspace(-np.pi / 2, np.pi / 2, 14)
        outer = np.stack([np.cos(t), np.sin(t)], axis=1)
        inner = np.stack([0.35 * np.cos(t[::-1]), np.sin(t[::-1])], axis=1)
        return np.concatenate([outer, inner]) - np.array([0.3, 0])
    if shape == "trapezoid":
        return np.array([[-1, 0.7], [1, 0.7], [0.5, -0.7], [-0.5, -0.7]], dtype=float)
    raise ValueError(f"unknown shape {shape!r}")


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


class Painter:
    """Draws objects on background crops; keeps the background photos in memory."""

    def __init__(self, size: int):
        import skimage.data

        self.size = size
        self.backgrounds = []
        for name in BACKGROUNDS:
            image = np.asarray(getattr(skimage.data, name)())
            if image.ndim == 2:
                image = np.stack([image] * 3, axis=-1)
            self.backgrounds.append(image[..., :3].astype(np.uint8))

    def background(self, rng: np.random.Generator) -> Image.Image:
        src = self.backgrounds[rng.integers(len(self.backgrounds))]
        h, w = src.shape[:2]
        side = int(min(h, w) * rng.uniform(0.3, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(src[y:y + side, x:x + side])
        return crop.resize((self.size, self.size), Image.BILINEAR)

    def place(self, rng: np.random.Generator, existing: list[list[float]]) -> np.ndarray | None:
        """A placement (cx, cy, side, angle) whose box overlaps no existing box by IoU > 0.3."""
        s = self.size
        for _ in range(20):
            side = rng.uniform(0.2, 0.45) * s
            cx, cy = rng.uniform(side / 3, s - side / 3, size=2)
            angle = rng.uniform(0, 2 * np.pi)
            box = [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]
            if all(_iou(box, other) <= 0.3 for other in existing):
                return np.array([cx, cy, side, angle])
        return None

    def draw(self, image: Image.Image, cls: dict[str, Any], placement: np.ndarray, rng: np.random.Generator) -> list[float]:
        cx, cy, side, angle = placement
        unit = _shape_polygon(cls["shape"])
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        poly = unit @ rot.T * (side / 2) + np.array([cx, cy])
        # Clamping to the image keeps the drawn pixels and the annotated polygon identical.
        poly = np.clip(poly, 0, self.size - 1)
        flat = [float(round(v, 2)) for v in poly.reshape(-1)]
        mask = Image.new("L", image.size, 0)
        ImageDraw.Draw(mask).polygon(flat, fill=255)
        colour = np.array(COLOURS[cls["colour"]], dtype=np.float32) * rng.uniform(0.85, 1.1)
        fill = np.broadcast_to(colour, (self.size, self.size, 3)).copy()
        yy, xx = np.mgrid[0:self.size, 0:self.size]
        period = max(3, int(side / 5))
        if cls["pattern"] == "striped":
            fill[((xx + yy) // period) % 2 == 1] *= 0.35
        elif cls["pattern"] == "checked":
            fill[((xx // period) + (yy // period)) % 2 == 1] *= 0.35
        fill += rng.normal(0, 6, size=fill.shape)
        paint = Image.fromarray(np.clip(fill, 0, 255).astype(np.uint8))
        image.paste(paint, (0, 0), mask)
        return flat


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _polygon_area(flat: list[float]) -> float:
    x, y = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


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
                     "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "area": _polygon_area(flat),
                     "segmentation": [flat]})
    # Later objects may cover earlier ones; annotations keep the full polygons (as in LVIS).
    return image, anns


def _objects_per_image(rng: np.random.Generator, count: int, max_objects: int) -> np.ndarray:
    return rng.integers(1, max_objects + 1, size=count)


def _image_entry(image_id: int, file_name: str, size: int, present: set[int], num_classes: int,
                 rng: np.random.Generator) -> dict[str, Any]:
    absent = [c for c in range(1, num_classes + 1) if c not in present]
    neg = sorted(int(c) for c in rng.choice(absent, size=min(len(absent), int(rng.integers(3, 7))), replace=False))
    not_exhaustive = [int(rng.choice(sorted(present)))] if present and rng.random() < 0.05 else []
    return {"id": image_id, "file_name": file_name, "height": size, "width": size, "neg_category_ids": neg,
            "not_exhaustive_category_ids": not_exhaustive}


def make_minilvis(cfg: dict[str, Any], seed: int, out_dir: Path) -> dict[str, Any]:
    """Generate mini-LVIS into ``out_dir``; returns a summary (counts per frequency, images, annotations)."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    size = cfg["image_size"]
    classes = class_table(cfg["families"], cfg["classes_per_family"])
    num_classes = len(classes)
    painter = Painter(size)
    for split in ("train", "val", "pool"):
        folder = out_dir / "images" / split
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)

    # Train: Zipf over interleaved ranks; the first images cover every class once so that no
    # class is empty (LVIS has at least one train image per category).
    probs = zipf_probabilities(num_classes, cfg["families"], cfg["zipf_exponent"])
    counts = _objects_per_image(rng, cfg["train_images"], cfg["max_objects_per_image"])
    train_classes = [[int(c) for c in rng.choice(num_classes, size=n, p=probs)] for n in counts]
    for c in range(min(num_classes, cfg["train_images"])):
        train_classes[c][0] = c

    def build(split: str, id0: int, class_lists: list[list[int]]) -> tuple[list[dict], list[dict]]:
        images, anns = [], []
        for k, cls_ids in enumerate(tqdm(class_lists, desc=f"minilvis {split}", unit="img")):
            image_id = id0 + k
            image, image_anns = _render(painter, rng, classes, cls_ids, image_id, len(anns) + 1 + id0 * 10)
            file_name = f"{split}/{image_id:06d}.png"
            image.save(out_dir / "images" / file_name, format="PNG")
            images.append(_image_entry(image_id, file_name, size, {a["category_id"] for a in image_anns},
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
    val_counts = _objects_per_image(rng, cfg["val_images"], cfg["max_objects_per_image"])
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
        n = int(rng.integers(1, cfg["max_objects_per_image"] + 1))
        if rare and rng.random() < cfg["pool_rare_fraction"]:
            ids = [int(rng.choice(rare))] + [int(rng.choice(common)) for _ in range(n - 1)]
        elif rng.random() < 0.2:
            ids = []
        else:
            ids = [int(rng.choice(common)) for _ in range(n)]
        pool_classes.append(ids)
    pool_images, pool_anns = build("pool", POOL_ID0, pool_classes)
    truth: dict[str, Any] = {}
    for img in pool_images:
        present = sorted({a["category_id"] for a in pool_anns if a["image_id"] == img["id"]})
        truth[str(img["id"])] = {"category_ids": present,
                                 "has_rare": any(frequency[c - 1] == "r" for c in present), "duplicate_of": None}

    # Planted duplicates: exact file copies, near copies (noise + 1 px shift), copies of val files.
    next_id = POOL_ID0 + len(pool_images)
    plants = [("exact", pool_images), ("near", pool_images)]
    n_exact = cfg["pool_duplicates"] - cfg["pool_duplicates"] // 2
    n_near = cfg["pool_duplicates"] // 2
    for kind, count in (("exact", n_exact), ("near", n_near), ("val_copy", cfg["pool_val_copies"])):
        sources = val_images if kind == "val_copy" else dict(plants)[kind]
        for src in rng.choice(len(sources), size=min(count, len(sources)), replace=False):
            source = sources[int(src)]
            file_name = f"pool/{next_id:06d}.png"
            target = out_dir / "images" / file_name
            if kind == "near":
                pixels = np.asarray(Image.open(out_dir / "images" / source["file_name"]).convert("RGB"), dtype=np.int16)
                pixels = np.roll(pixels, 1, axis=1) + rng.integers(-3, 4, size=pixels.shape)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target, format="PNG")
            else:
                shutil.copyfile(out_dir / "images" / source["file_name"], target)
            pool_images.append({"id": next_id, "file_name": file_name, "height": size, "width": size})
            source_truth = truth.get(str(source["id"]), {"category_ids": [], "has_rare": False})
            truth[str(next_id)] = {"category_ids": source_truth["category_ids"], "has_rare": source_truth["has_rare"],
                                   "duplicate_of": {"kind": kind, "of": source["file_name"], "id": source["id"]}}
            next_id += 1
    pool_json_images = [{k: img[k] for k in ("id", "file_name", "height", "width")} for img in pool_images]

    info = {"description": "mini-LVIS (generated)", "version": "1.0", "seed": seed}
    write_json(truth, out_dir / "pool_truth.json")
    write_json({"info": info, "images": pool_json_images, "categories": categories}, out_dir / "pool.json")
    write_json({"info": info, "licenses": [], "images": val_images, "annotations": val_anns, "categories": categories},
               out_dir / "val.json")
    write_json({"info": info, "licenses": [], "images": train_images, "annotations": train_anns,
                "categories": categories}, out_dir / "train.json")
    by_freq = {f: int((frequency == f).sum()) for f in ("r", "c", "f")}
    return {"classes": num_classes, "frequency": by_freq, "train_images": len(train_images),
            "train_annotations": len(train_anns), "val_images": len(val_images), "val_annotations": len(val_anns),
            "pool_images": len(pool_images)}
