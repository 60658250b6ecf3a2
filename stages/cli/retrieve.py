"""Rule retrieve: k nearest pool images of every query crop (Faiss, inner product on unit vectors = cosine).
The algorithm and its outputs are described in stages.retrieval.index.

CLI: python -m stages.cli.retrieve --config CFG --queries crops.npy --query-index crops.parquet \
     --pool pool.npy --pool-index pool.parquet --out neighbours.parquet
"""

from __future__ import annotations

import argparse
import time

import faiss

from stages.retrieval.encoders import check_same_encoder, load_embeddings
from stages.retrieval.index import build_index, neighbours_table, resolve_index, search
from stages.utils.atomic import write_parquet
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("retrieve", "seed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="k nearest pool images of every query crop (Faiss)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--queries", required=True, help="crops.npy from stages.cli.embed_crops")
    parser.add_argument("--query-index", required=True, help="crops.parquet from stages.cli.embed_crops")
    parser.add_argument("--pool", required=True, help="pool.npy from stages.cli.embed_images")
    parser.add_argument("--pool-index", required=True, help="pool.parquet from stages.cli.embed_images")
    parser.add_argument("--out", required=True, help="neighbours.parquet")
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    faiss.omp_set_num_threads(config["num_threads"])
    retrieve_cfg = config["retrieve"]
    queries = load_embeddings(args.queries, args.query_index, ("annotation_id", "category_id"))
    pool = load_embeddings(args.pool, args.pool_index, ("image_id",))
    check_same_encoder(queries, pool)
    if len(queries.vectors) == 0:
        raise ValueError(f"{args.queries}: no query vectors")
    retrieve_cfg, why = resolve_index(len(pool.vectors), len(queries.vectors), pool.vectors.shape[1], retrieve_cfg,
                                      config["num_threads"])
    print(f"retrieve: {why}")
    start = time.perf_counter()
    index = build_index(pool.vectors, retrieve_cfg, seed=config["seed"])
    scores, ids = search(index, queries.vectors, retrieve_cfg["k"])
    table = neighbours_table(scores, ids, queries.index, pool.index)
    write_parquet(table, args.out, metadata={"index": retrieve_cfg["index"], "index_choice": why,
                                             "k": str(ids.shape[1])})
    print(
        f"retrieve: {len(queries.vectors)} queries x k={ids.shape[1]} in {len(pool.vectors)} pool images "
        f"({retrieve_cfg['index']}) -> {table['pool_image_id'].nunique()} distinct images, {args.out} "
        f"in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
