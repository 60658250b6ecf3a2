"""Whole-image embeddings and content hashes of an image list (the pool, or a labeled split).

Every image of the json (LVIS-style; annotations optional) is read once: the bytes give the
``sha1`` (exact-duplicate and leakage detection in stages.retrieval.dedup), the decoded image, resized to
``embed.crop_size`` square, gives the L2-normalised embedding (the retrieval database, and
near-duplicate detection).

Resumable in shards: the images (in id order) are cut into shards of ``embed.shard_size``; each
finished shard is written atomically to ``--shard-dir``. A killed job, run again, reuses the
finished shards and embeds only the rest, so it produces the same files as an uninterrupted run
(the encoder is deterministic in inference mode). ``shard-dir/signature.json`` holds a signature of
the image list and the encoder settings; shards from another signature are discarded, never mixed.
The shard directory is removed once the outputs are written.

Unreadable images (missing file, undecodable bytes): ``embed.on_unreadable_image`` ``skip`` leaves
them out of the outputs and lists them (file, id, reason) in the report; ``fail`` stops with the
same list after the whole pass (so one run shows every bad file, not just the first).

Outputs: ``X.npy`` float32 (N, D) and ``X.parquet`` with columns ``row``, ``image_id``, ``file_name``,
``sha1`` (row i describes vector i; images in id order), and ``X_report.json``: ``images``,
``embedded``, ``skipped``, ``shards``, ``shards_reused``, ``skipped_images`` [{image_id, file, reason}].
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from stages.data.images import ImageReadError, decode_rgb, read_image_bytes, to_tensor
from stages.data.lvis import image_path, load_lvis
from stages.retrieval.encoders import ImageEncoder, build_encoder, embed_dataset
from stages.utils.atomic import atomic_path, prepare_signed_dir
from stages.utils.readers import read_npz

INDEX_COLUMNS = ("row", "image_id", "file_name", "sha1")


UNREADABLE = "unreadable:"  # tag prefix of an item whose image could not be read; the reason follows


class WholeImageDataset(Dataset):
    """One item per image: ``(image [3, S, S] in [0, 1], tag)``; tag = sha1 hex of the file bytes, or
    ``UNREADABLE + reason`` with a zero image when the file is missing or corrupt (the caller drops
    those rows; raising here would kill a DataLoader worker and lose the batch)."""

    def __init__(self, paths: list[Path], size: int):
        self.paths = paths
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        path = self.paths[i]
        try:
            data = read_image_bytes(path)
            image = to_tensor(decode_rgb(data, path), self.size)
        except ImageReadError as exc:
            return torch.zeros(3, self.size, self.size), UNREADABLE + str(exc)
        return image, hashlib.sha1(data).hexdigest()


@dataclass
class Shard:
    """The embedded part of one shard: vectors of the readable images and what was skipped."""

    vectors: np.ndarray  # float32 (n_readable, D)
    image_ids: np.ndarray  # int64 (n_readable,)
    sha1: np.ndarray  # str (n_readable,)
    skipped_ids: np.ndarray  # int64 (n_skipped,)
    skipped_reasons: np.ndarray  # str (n_skipped,)

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, vectors=self.vectors, image_ids=self.image_ids, sha1=self.sha1,
                 skipped_ids=self.skipped_ids, skipped_reasons=self.skipped_reasons)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Shard:
        arrays = read_npz(path)
        return cls(**{name: arrays[name] for name in ("vectors", "image_ids", "sha1", "skipped_ids", "skipped_reasons")})


def embed_shard(encoder: ImageEncoder, images: list[dict[str, Any]], paths: list[Path], embed_cfg: dict[str, Any],
                desc: str) -> Shard:
    dataset = WholeImageDataset(paths, encoder.input_size)
    vectors, tags = embed_dataset(dataset, encoder, int(embed_cfg["batch_size"]), int(embed_cfg["workers"]), desc)
    ids = np.array([img["id"] for img in images], dtype=np.int64)
    readable = np.array([not t.startswith(UNREADABLE) for t in tags], dtype=bool)
    tags_array = np.array(tags, dtype=str)
    return Shard(
        vectors=np.ascontiguousarray(vectors[readable], dtype=np.float32),
        image_ids=ids[readable],
        sha1=tags_array[readable],
        skipped_ids=ids[~readable],
        skipped_reasons=np.array([t[len(UNREADABLE):] for t in tags_array[~readable]], dtype=str),
    )


def shard_signature(images: list[dict[str, Any]], embed_cfg: dict[str, Any], image_root: str | Path) -> dict:
    """What a finished shard depends on: the image list, the root, the encoder and the shard size."""
    keys = ("encoder", "hub_repo", "hub_model", "hub_weights", "crop_size", "shard_size")
    images_digest = hashlib.sha1(json.dumps(
        [[img["id"], str(img.get("file_name", img.get("coco_url", "")))] for img in images]).encode()).hexdigest()
    return {"embed": {k: embed_cfg.get(k) for k in keys}, "root": str(image_root), "images": images_digest}


def embed_images(
    images_json: str | Path,
    image_root: str | Path,
    embed_cfg: dict[str, Any],
    device: torch.device,
    shard_dir: str | Path,
) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """(L2-normalised float32 (N, D) embeddings of the readable images, index with INDEX_COLUMNS, the
    report dict); images in id order. Finished shards in ``shard_dir`` are reused."""
    data = load_lvis(images_json, require_annotations=False)
    images = sorted(data["images"], key=lambda img: img["id"])
    if not images:
        raise ValueError(f"{images_json}: the image list is empty")
    shard_dir = Path(shard_dir)
    if prepare_signed_dir(shard_dir, shard_signature(images, embed_cfg, image_root)):
        print(f"embed_images: {shard_dir} held shards of another image list or encoder; starting afresh",
              file=sys.stderr)
    size = int(embed_cfg["shard_size"])
    starts = range(0, len(images), size)
    encoder: ImageEncoder | None = None  # built only when a shard is missing
    shards, reused = [], 0
    for number, start in enumerate(starts):
        path = shard_dir / f"shard-{number:05d}.npz"
        chunk = images[start : start + size]
        if path.exists():
            shard = Shard.load(path)
            # in fail mode a shard with unreadable images is redone: the user has fixed the files
            if not (len(shard.skipped_ids) and embed_cfg["on_unreadable_image"] == "fail"):
                shards.append(shard)
                reused += 1
                continue
        if encoder is None:
            encoder = build_encoder(embed_cfg, device)
        shard = embed_shard(encoder, chunk, [image_path(img, image_root) for img in chunk], embed_cfg,
                            f"images shard {number + 1}/{len(starts)}")
        shard.save(path)
        shards.append(shard)
    if reused:
        print(f"embed_images: reused {reused} of {len(starts)} finished shards from {shard_dir}")

    expected = np.array([img["id"] for img in images], dtype=np.int64)
    got = np.sort(np.concatenate([np.concatenate([s.image_ids, s.skipped_ids]) for s in shards]))
    if not np.array_equal(got, expected):
        raise RuntimeError(f"{shard_dir}: the shards do not cover the image list exactly; delete the directory")
    file_of = {img["id"]: str(img.get("file_name", img.get("coco_url", ""))) for img in images}
    vectors = np.concatenate([s.vectors for s in shards])
    ids = np.concatenate([s.image_ids for s in shards])
    index = pd.DataFrame(
        {
            "row": np.arange(len(ids), dtype=np.int64),
            "image_id": ids,
            "file_name": pd.Series([file_of[int(i)] for i in ids], dtype=str),
            "sha1": pd.Series(np.concatenate([s.sha1 for s in shards]), dtype=str),
        }
    )
    skipped = [
        {"image_id": int(i), "file": file_of[int(i)], "reason": str(r)}
        for s in shards
        for i, r in zip(s.skipped_ids, s.skipped_reasons)
    ]
    report = {
        "images": len(images),
        "embedded": len(ids),
        "skipped": len(skipped),
        "shards": len(starts),
        "shards_reused": reused,
        "skipped_images": skipped,
    }
    return vectors, index, report


def unreadable_error(images_json: str | Path, skipped: list[dict[str, Any]]) -> str:
    listing = "\n".join(f"  image {s['image_id']}: {s['reason']}" for s in skipped[:20])
    more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    return (
        f"{images_json}: {len(skipped)} unreadable image(s) (embed.on_unreadable_image: fail; "
        f"set it to skip to leave them out):\n{listing}{more}"
    )
