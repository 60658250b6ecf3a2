"""What every mini-LVIS preset shares: the shapes, colours and background photos objects are drawn
with, the LVIS image entry (with its negative and not-exhaustive lists), the planted pool duplicates
and the files a preset writes.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from stages.utils.atomic import write_json

TRAIN_ID0, VAL_ID0, POOL_ID0 = 1, 100_001, 200_001
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "pentagon", "arrow", "heart",
          "moon", "trapezoid")
COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 180, 60), "yellow": (240, 210, 40),
           "purple": (150, 60, 200), "orange": (250, 140, 30), "cyan": (40, 200, 210), "white": (240, 240, 240)}
PATTERNS = ("solid", "striped", "checked")
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "brick", "grass", "gravel", "rocket", "camera", "coins", "moon",
               "hubble_deep_field", "immunohistochemistry")


def shape_polygon(shape: str) -> np.ndarray:
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
            if all(box_iou(box, other) <= 0.3 for other in existing):
                return np.array([cx, cy, side, angle])
        return None

    def draw(self, image: Image.Image, cls: dict[str, Any], placement: np.ndarray, rng: np.random.Generator) -> list[float]:
        cx, cy, side, angle = placement
        unit = shape_polygon(cls["shape"])
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


def box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def polygon_area(flat: list[float]) -> float:
    x, y = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def image_entry(image_id: int, file_name: str, size: int, present: set[int], num_classes: int,
                 rng: np.random.Generator) -> dict[str, Any]:
    absent = [c for c in range(1, num_classes + 1) if c not in present]
    neg = sorted(int(c) for c in rng.choice(absent, size=min(len(absent), int(rng.integers(3, 7))), replace=False))
    not_exhaustive = [int(rng.choice(sorted(present)))] if present and rng.random() < 0.05 else []
    return {"id": image_id, "file_name": file_name, "height": size, "width": size, "neg_category_ids": neg,
            "not_exhaustive_category_ids": not_exhaustive}


def prepare_image_folders(out_dir: Path) -> None:
    """Empty images/{train,val,pool}/ under ``out_dir`` (a rerun starts clean)."""
    for split in ("train", "val", "pool"):
        folder = out_dir / "images" / split
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)


def pool_truth(pool_images: list[dict[str, Any]], pool_anns: list[dict[str, Any]], frequency: np.ndarray
               ) -> dict[str, Any]:
    """pool_truth.json's entries of the generated (not planted) pool images: their classes and
    whether one is rare (``frequency`` indexed by category id - 1)."""
    present: dict[int, set[int]] = {}
    for a in pool_anns:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    truth: dict[str, Any] = {}
    for img in pool_images:
        ids = sorted(present.get(img["id"], ()))
        truth[str(img["id"])] = {"category_ids": ids, "has_rare": any(frequency[c - 1] == "r" for c in ids),
                                 "duplicate_of": None}
    return truth


def plant_pool_duplicates(cfg: dict[str, Any], rng: np.random.Generator, out_dir: Path, size: int,
                          pool_images: list[dict[str, Any]], val_images: list[dict[str, Any]],
                          truth: dict[str, Any]) -> None:
    """Append planted duplicates to ``pool_images`` and ``truth`` (in place): exact file copies and
    near copies (1 px shift + noise) of pool images, and byte copies of val images, which dedup must
    remove (``minilvis.pool_duplicates``, ``pool_val_copies``)."""
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


def write_minilvis(out_dir: Path, seed: int, categories: list[dict[str, Any]], train: tuple[list, list],
                   val: tuple[list, list], pool_images: list[dict[str, Any]], truth: dict[str, Any],
                   description: str) -> None:
    """train.json, val.json (LVIS v1: images, annotations, categories), pool.json (images only) and
    pool_truth.json, each written atomically."""
    pool_json_images = [{k: img[k] for k in ("id", "file_name", "height", "width")} for img in pool_images]
    info = {"description": description, "version": "1.0", "seed": seed}
    write_json(truth, out_dir / "pool_truth.json")
    write_json({"info": info, "images": pool_json_images, "categories": categories}, out_dir / "pool.json")
    write_json({"info": info, "licenses": [], "images": val[0], "annotations": val[1], "categories": categories},
               out_dir / "val.json")
    write_json({"info": info, "licenses": [], "images": train[0], "annotations": train[1],
                "categories": categories}, out_dir / "train.json")
