"""Bring the user's LVIS v1 files into the run: checked copies of train/val and the pool list.

Every json is checked (stages.lvis_data.check_lvis) before any heavy work; the unlabeled pool is
the list of image files under ``dataset.unlabeled_dir`` (jpg/jpeg/png), as an images-only json
with ids above every labeled id and absolute file names.

CLI: python -m stages.import_lvis --config CFG --out-train train.json --out-val val.json --out-pool pool.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from stages.atomic import write_json
from stages.config import ConfigError, load_config
from stages.lvis_data import load_lvis

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def pool_images(unlabeled_dir: Path, first_id: int) -> list[dict[str, Any]]:
    files = sorted(p for p in unlabeled_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{unlabeled_dir}: no .jpg/.jpeg/.png images found")
    images = []
    for offset, path in enumerate(tqdm(files, desc="pool", unit="img")):
        try:
            with Image.open(path) as im:
                width, height = im.size
        except OSError as exc:
            raise ValueError(f"{path}: unreadable image ({exc})") from exc
        images.append({"id": first_id + offset, "file_name": str(path.resolve()), "height": height, "width": width})
    return images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check and import LVIS v1 train/val and the unlabeled pool")
    parser.add_argument("--config", required=True)
    parser.add_argument("--out-train", required=True)
    parser.add_argument("--out-val", required=True)
    parser.add_argument("--out-pool", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    ds = config["dataset"]
    for key in ("train_json", "val_json", "image_root", "unlabeled_dir"):
        if not ds.get(key):
            raise ConfigError(f"config key 'dataset.{key}' is required when dataset.source is 'lvis'")
    train = load_lvis(ds["train_json"])
    val = load_lvis(ds["val_json"])
    if {c["id"] for c in train["categories"]} != {c["id"] for c in val["categories"]}:
        raise ValueError(f"{ds['train_json']} and {ds['val_json']} list different categories")
    first_id = max(img["id"] for img in train["images"] + val["images"]) + 1
    pool = {"images": pool_images(Path(ds["unlabeled_dir"]), first_id), "categories": train["categories"]}
    write_json(train, args.out_train)
    write_json(val, args.out_val)
    write_json(pool, args.out_pool)
    print(f"import_lvis: {len(train['images'])} train, {len(val['images'])} val, {len(pool['images'])} pool images")


if __name__ == "__main__":
    main()
