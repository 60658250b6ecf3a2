"""Stage 1b: whole-image embeddings and content hashes of an image list (the pool, or a labeled split).

Every image of the json (LVIS-style; annotations optional) is read once: the bytes give the
``sha1`` (exact-duplicate and leakage detection in stages.dedup), the decoded image, resized to
``embed.crop_size`` square, gives the L2-normalised embedding (the retrieval database, and
near-duplicate detection).

Outputs: ``X.npy`` float32 (N, D) and ``X.parquet`` with columns ``row``, ``image_id``, ``file_name``,
``sha1`` (row i describes vector i; images in image-id order).

CLI: python -m stages.embed_images --config CFG --images-json J --image-root R --out-npy X.npy --out-index X.parquet
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from stages.config import load_config
from stages.device import configure_torch
from stages.embed_crops import decode_rgb, read_image_bytes, to_tensor
from stages.encoders import build_encoder, embed_dataset, embedding_metadata, save_embeddings
from stages.lvis_data import image_path, load_lvis

INDEX_COLUMNS = ("row", "image_id", "file_name", "sha1")


class WholeImageDataset(Dataset):
    """One item per image: ``(image [3, S, S] in [0, 1], sha1 hex of the file bytes)``."""

    def __init__(self, paths: list[Path], size: int):
        self.paths = paths
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        path = self.paths[i]
        data = read_image_bytes(path)
        return to_tensor(decode_rgb(data, path), self.size), hashlib.sha1(data).hexdigest()


def embed_images(
    images_json: str | Path, image_root: str | Path, embed_cfg: dict[str, Any], device: torch.device
) -> tuple[np.ndarray, pd.DataFrame]:
    """(L2-normalised float32 (N, D) image embeddings, index with INDEX_COLUMNS), images in id order."""
    data = load_lvis(images_json, require_annotations=False)
    images = sorted(data["images"], key=lambda img: img["id"])
    if not images:
        raise ValueError(f"{images_json}: the image list is empty")
    paths = [image_path(img, image_root) for img in images]
    encoder = build_encoder(embed_cfg, device)
    dataset = WholeImageDataset(paths, encoder.input_size)
    vectors, sha1s = embed_dataset(dataset, encoder, int(embed_cfg["batch_size"]), int(embed_cfg["workers"]), "images")
    index = pd.DataFrame(
        {
            "row": np.arange(len(images), dtype=np.int64),
            "image_id": np.array([img["id"] for img in images], dtype=np.int64),
            "file_name": pd.Series([str(img.get("file_name", img.get("coco_url", ""))) for img in images], dtype=str),
            "sha1": pd.Series(sha1s, dtype=str),
        }
    )
    return vectors, index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Embed and hash every image of an image-list json")
    parser.add_argument("--config", required=True)
    parser.add_argument("--images-json", required=True)
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--out-npy", required=True)
    parser.add_argument("--out-index", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    embed_cfg = config["embed"]
    start = time.perf_counter()
    vectors, index = embed_images(args.images_json, args.image_root, embed_cfg, configure_torch(config["num_threads"], config["device"]))
    seconds = time.perf_counter() - start
    save_embeddings(vectors, index, args.out_npy, args.out_index, embedding_metadata(embed_cfg, vectors.shape[1]))
    print(
        f"embed_images: {len(index)} images of {args.images_json} -> {args.out_npy} ({vectors.shape[1]}-d) "
        f"in {seconds:.1f} s ({len(index) / max(seconds, 1e-9):.1f} images/s incl. model load)"
    )


if __name__ == "__main__":
    main()
