"""Input validation at LVIS v1 scale: time and peak memory of checking and importing a generated
LVIS-v1-sized train json (100k images, ~1.27M annotations with polygons, 1,203 categories).

What runs is what `import_lvis` runs before any heavy work: read the json, every structural and
cross-reference check (stages.data.lvis.find_json_problems), the image-file check at level `exists`
(the files are created, empty, in a temporary folder), the repair pass and the final check of the
result. Each measurement runs in a fresh subprocess, so its peak RSS is its own.

    .venv/bin/python -m benchmarks.bench_validation --images 100000 --out benchmarks/validation.md
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NUM_CLASSES = 1203
LVIS_SPLIT = {"r": 337, "c": 461, "f": 405}


def generate(path: Path, images: int, per_image: float, seed: int = 0) -> dict[str, int]:
    """An LVIS-v1-like train json: polygons of 12-24 points, neg/not-exhaustive lists, r/c/f classes."""
    rng = np.random.default_rng(seed)
    freqs = rng.permutation(np.repeat(list(LVIS_SPLIT), list(LVIS_SPLIT.values())))
    cats = [{"id": c + 1, "name": f"c{c + 1}", "synset": f"c{c + 1}.n.01", "synonyms": [f"c{c + 1}"], "def": "",
             "frequency": str(f), "image_count": 0, "instance_count": 0} for c, f in enumerate(freqs)]
    weight = np.select([freqs == "f", freqs == "c"], [30.0, 3.0], 0.3)
    weight /= weight.sum()
    counts = rng.poisson(per_image, size=images).clip(1, None)
    classes = rng.choice(NUM_CLASSES, size=int(counts.sum()), p=weight) + 1
    image_list, anns = [], []
    k = 0
    for i in range(images):
        h, w = 480, 640
        image_list.append({"id": i + 1, "height": h, "width": w,
                           "coco_url": f"http://images.cocodataset.org/train2017/{i + 1:012d}.jpg",
                           "neg_category_ids": rng.integers(1, NUM_CLASSES + 1, 5).tolist(),
                           "not_exhaustive_category_ids": []})  # fmt: skip
        for _ in range(counts[i]):
            x, y = float(rng.uniform(0, w - 60)), float(rng.uniform(0, h - 60))
            bw, bh = float(rng.uniform(8, 60)), float(rng.uniform(8, 60))
            n = int(rng.integers(6, 13))
            t = np.linspace(0, 2 * np.pi, n, endpoint=False)
            poly = np.column_stack([x + bw / 2 * (1 + np.cos(t)), y + bh / 2 * (1 + np.sin(t))]).round(2).ravel()
            anns.append({"id": k + 1, "image_id": i + 1, "category_id": int(classes[k]), "bbox": [x, y, bw, bh],
                         "area": 0.7 * bw * bh, "segmentation": [poly.tolist()]})  # fmt: skip
            k += 1
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": image_list, "annotations": anns,
                                "categories": cats}))  # fmt: skip
    return {"images": images, "annotations": len(anns), "categories": NUM_CLASSES,
            "json_mb": round(path.stat().st_size / 2**20)}


MEASURE = """
import json, resource, sys, time
from pathlib import Path
from stages.data.lvis import check_lvis
from stages.data.validation import validate_datasets
train, root = sys.argv[1], sys.argv[2]
start = time.perf_counter()
data, _, report = validate_datasets(train, None, root, {"on_invalid": "skip", "image_check": "exists",
                                    "allow_paths_outside_image_root": False}, 2)
check_lvis(data, "the imported train set")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "problems": len(report), "images": len(data["images"]),
                  "annotations": len(data["annotations"]),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--per-image", type=float, default=12.7)  # LVIS v1 train: 1.27M / 100k
    parser.add_argument("--out", type=Path, default=Path("benchmarks/validation.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = tmp / "lvis_v1_train.json"
        start = time.perf_counter()
        sizes = generate(train, args.images, args.per_image)
        gen_seconds = time.perf_counter() - start
        root = tmp / "images" / "train2017"
        root.mkdir(parents=True)
        for i in range(1, args.images + 1):
            (root / f"{i:012d}.jpg").touch()
        done = subprocess.run([sys.executable, "-c", MEASURE, str(train), str(tmp / "images")], capture_output=True,
                              text=True, check=True)  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])
    command = ".venv/bin/python -m benchmarks.bench_validation " + shlex.join(sys.argv[1:])
    text = (f"# Input validation at LVIS v1 scale (benchmarks/bench_validation.py)\n\n`{command}`\n\n"
            f"Generated train json: {sizes['images']:,} images, {sizes['annotations']:,} annotations with polygons, "
            f"{sizes['categories']:,} categories, {sizes['json_mb']} MiB (generated in {gen_seconds:.0f} s).\n\n"
            "| step | wall time | peak RSS |\n|---|---|---|\n"
            f"| read + structure and cross-reference checks + image files (`exists`) + repair + final check | "
            f"{result['seconds']:.1f} s | {result['peak_rss_mb'] / 1024:.2f} GiB |\n\n"
            f"Problems found: {result['problems']} (the generated data is clean). Target (issue 14): under 5 minutes "
            "and 8 GB on the 2-core, 24 GiB machine.\n")
    args.out.write_text(text)
    print(text)
    print(f"peak RSS of this process (generation): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
