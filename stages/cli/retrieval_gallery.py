"""Rule retrieval_gallery: rare-class query crops, their nearest pool images with cosine scores and
dedup's decision on each, and one example of every dedup removal (stages.reporting.retrieval_gallery).

CLI: python -m stages.cli.retrieval_gallery --config CFG --train-json train.json --pool-json pool.json \
     --image-root R --crops crops.parquet --neighbours neighbours.parquet --decisions dedup_decisions.parquet \
     --unlabeled unlabeled.json --out-png P --out-csv C
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.data.artifacts import read_dedup_decisions
from stages.data.lvis import load_lvis
from stages.reporting.retrieval_gallery import retrieval_figure, retrieval_table, select_queries
from stages.retrieval.index import NEIGHBOUR_COLUMNS
from stages.utils.atomic import write_csv, write_figure
from stages.utils.config import load_stage_config
from stages.utils.readers import read_parquet

CONFIG_KEYS = ("seed", "figures", "embed.context")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Retrieval gallery: query crops, retrieved pool images, dedup")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True, type=Path, help="the labeled train json the queries come from")
    parser.add_argument("--pool-json", required=True, type=Path)
    parser.add_argument("--image-root", required=True, type=Path)
    parser.add_argument("--crops", required=True, type=Path, help="crops.parquet (the queries' index)")
    parser.add_argument("--neighbours", required=True, type=Path)
    parser.add_argument("--decisions", required=True, type=Path, help="dedup_decisions.parquet")
    parser.add_argument("--unlabeled", required=True, type=Path, help="unlabeled.json (checks the decisions)")
    parser.add_argument("--out-png", required=True, type=Path)
    parser.add_argument("--out-csv", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    train, pool = load_lvis(args.train_json), load_lvis(args.pool_json, require_annotations=False)
    unlabeled = load_lvis(args.unlabeled, require_annotations=False)
    decisions = read_dedup_decisions(args.decisions, [img["id"] for img in unlabeled["images"]])
    neighbours = read_parquet(args.neighbours)
    missing = [c for c in NEIGHBOUR_COLUMNS if c not in neighbours.columns]
    if missing:
        raise ValueError(f"{args.neighbours}: missing columns {missing}")
    crops = read_parquet(args.crops, columns=["annotation_id", "image_id", "category_id"])
    figures = config["figures"]
    table = retrieval_table(select_queries(crops, figures["retrieval_classes"], config["seed"]), neighbours, decisions,
                            train, pool, figures["retrieval_neighbours"])
    write_csv(table, args.out_csv)
    write_figure(retrieval_figure(table, train, args.image_root, config["embed"]["context"]), args.out_png)
    print(f"retrieval_gallery: {table['row'].nunique() if len(table) else 0} rows -> {args.out_png}")


if __name__ == "__main__":
    main()
