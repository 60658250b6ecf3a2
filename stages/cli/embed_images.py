"""Rule embed_images: whole-image embeddings and content hashes of an image list (the pool, or a labeled split).
The algorithm and its outputs are described in stages.retrieval.pool.

CLI: python -m stages.cli.embed_images --config CFG --images-json J --image-root R --out-npy X.npy
     --out-index X.parquet --out-report X_report.json --shard-dir D
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from stages.retrieval.encoders import embedding_metadata, save_embeddings
from stages.retrieval.pool import embed_images, unreadable_error
from stages.utils.atomic import write_json
from stages.utils.config import load_stage_config
from stages.utils.device import configure_torch

CONFIG_KEYS = ("embed", "device")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Embed and hash every image of an image-list json")
    parser.add_argument("--config", required=True)
    parser.add_argument("--images-json", required=True)
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--out-npy", required=True)
    parser.add_argument("--out-index", required=True)
    parser.add_argument("--out-report", required=True)
    parser.add_argument("--shard-dir", required=True, type=Path, help="finished shards, kept across a killed run")
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    embed_cfg = config["embed"]
    start = time.perf_counter()
    device = configure_torch(config["num_threads"], config["device"])
    vectors, index, report = embed_images(args.images_json, args.image_root, embed_cfg, device, args.shard_dir)
    seconds = time.perf_counter() - start
    if report["skipped"] and embed_cfg["on_unreadable_image"] == "fail":
        # the shards stay: once the files are fixed, only the shards that held them are embedded again
        sys.exit(unreadable_error(args.images_json, report["skipped_images"]))
    for s in report["skipped_images"]:
        print(f"embed_images: skipped image {s['image_id']}: {s['reason']}", file=sys.stderr)
    save_embeddings(vectors, index, args.out_npy, args.out_index, embedding_metadata(embed_cfg, vectors.shape[1]))
    write_json(report, args.out_report, indent=1)
    shutil.rmtree(args.shard_dir, ignore_errors=True)
    print(
        f"embed_images: {report['embedded']} of {report['images']} images of {args.images_json} -> {args.out_npy} "
        f"({vectors.shape[1]}-d), {report['skipped']} skipped as unreadable, {report['shards_reused']} of "
        f"{report['shards']} shards reused, in {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
