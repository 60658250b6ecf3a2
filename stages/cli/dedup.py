"""Rule dedup: the unlabeled image list = the retrieved pool images without duplicates.
The algorithm and its outputs are described in stages.retrieval.dedup.

CLI: python -m stages.cli.dedup --config CFG --neighbours N.parquet --pool-json pool.json --pool-npy pool.npy \
     --pool-index pool.parquet --labeled-npy A.npy --labeled-index A.parquet [--labeled-npy B.npy ...] \
     --out unlabeled.json --out-counts dedup_counts.json --out-decisions dedup_decisions.parquet
"""

from __future__ import annotations

import argparse

import faiss

from stages.data.lvis import load_lvis
from stages.retrieval.dedup import dedup
from stages.retrieval.encoders import check_same_encoder, load_embeddings
from stages.utils.atomic import write_json, write_parquet
from stages.utils.config import load_stage_config
from stages.utils.readers import read_parquet

CONFIG_KEYS = ("dedup",)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Unlabeled image list: retrieved pool images minus duplicates")
    parser.add_argument("--config", required=True)
    parser.add_argument("--neighbours", required=True)
    parser.add_argument("--pool-json", required=True)
    parser.add_argument("--pool-npy", required=True)
    parser.add_argument("--pool-index", required=True)
    parser.add_argument("--labeled-npy", action="append", default=[], help="repeatable; pairs with --labeled-index")
    parser.add_argument("--labeled-index", action="append", default=[], help="repeatable; pairs with --labeled-npy")
    parser.add_argument("--out", required=True)
    parser.add_argument("--out-counts", required=True)
    parser.add_argument("--out-decisions", required=True, help="per retrieved image: kept, or removed and why")
    args = parser.parse_args(argv)
    if len(args.labeled_npy) != len(args.labeled_index):
        parser.error("--labeled-npy and --labeled-index must be given the same number of times")
    config = load_stage_config(args.config, CONFIG_KEYS)
    faiss.omp_set_num_threads(config["num_threads"])
    neighbours = read_parquet(args.neighbours, columns=["pool_image_id"])
    pool_data = load_lvis(args.pool_json, require_annotations=False)
    pool = load_embeddings(args.pool_npy, args.pool_index, ("image_id", "sha1"))
    labeled = [load_embeddings(n, i, ("image_id", "sha1")) for n, i in zip(args.labeled_npy, args.labeled_index)]
    check_same_encoder(pool, *labeled)
    unlabeled, counts, decisions = dedup(neighbours, pool_data, pool, labeled, config["dedup"]["near_duplicate_cosine"])
    write_json(unlabeled, args.out)
    write_json(counts, args.out_counts, indent=1)
    write_parquet(decisions, args.out_decisions)
    print(f"dedup: {counts}")


if __name__ == "__main__":
    main()
