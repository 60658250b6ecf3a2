"""Rule embed_crops: embeddings of the labeled train set's rare-class object crops (the retrieval queries).
The algorithm and its outputs are described in stages.retrieval.crops.

CLI: python -m stages.cli.embed_crops --config CFG --train-json J --image-root R --out-npy crops.npy --out-index crops.parquet
"""

from __future__ import annotations

import argparse
import time

from stages.retrieval.crops import embed_crops
from stages.retrieval.encoders import embedding_metadata, save_embeddings
from stages.utils.config import load_stage_config
from stages.utils.device import configure_torch

CONFIG_KEYS = ("embed", "device")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Embed the query-frequency object crops of the labeled train set")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True)
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--out-npy", required=True)
    parser.add_argument("--out-index", required=True)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    embed_cfg = config["embed"]
    device = configure_torch(config["num_threads"], config["device"])
    start = time.perf_counter()
    vectors, index = embed_crops(args.train_json, args.image_root, embed_cfg, device)
    seconds = time.perf_counter() - start
    save_embeddings(vectors, index, args.out_npy, args.out_index, embedding_metadata(embed_cfg, vectors.shape[1]))
    print(
        f"embed_crops: {len(index)} crops ({'+'.join(embed_cfg['query_frequencies'])}) from "
        f"{index['image_id'].nunique()} images -> {args.out_npy} ({vectors.shape[1]}-d) "
        f"in {seconds:.1f} s ({len(index) / max(seconds, 1e-9):.1f} crops/s incl. model load)"
    )


if __name__ == "__main__":
    main()
