"""The retrieval gallery: the queries come from the rule, each neighbour row carries its rank, cosine
and dedup's decision, the dedup row shows one removal per reason beside its original, and a class
without neighbours or a run without rare crops is drawn without a crash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from stages.cli import retrieval_gallery as gallery_stage
from stages.reporting.retrieval_gallery import RETRIEVAL_COLUMNS, retrieval_figure, retrieval_table, select_queries
from tests.conftest import tiny_config
from tests.reporting.tiny_lvis import annotation, write_dataset

# rare-class query crops: teapot (id 1) from three annotations, category 7 from one
CROPS = pd.DataFrame({"row": range(4), "annotation_id": [11, 12, 13, 14], "image_id": [1, 1, 2, 3],
                      "category_id": [1, 1, 1, 7], "frequency": ["r"] * 4})  # fmt: skip
# pool images 100..105; 104 copies the train file of image 2, 105 copies pool image 101 byte for byte,
# 103 is a near copy of 100
DECISIONS = pd.DataFrame({
    "image_id": [100, 101, 102, 103, 104, 105],
    "decision": ["kept", "kept", "kept", "near_duplicate", "labeled_duplicate", "exact_duplicate"],
    "duplicate_of": [-1, -1, -1, 100, 2, 101],
    "duplicate_of_set": ["", "", "", "pool", "images_train", "pool"],
    "duplicate_of_file": ["", "", "", "pool/100.png", "train/2.png", "pool/101.png"],
    "cosine": [np.nan, np.nan, np.nan, 0.99, 1.0, 1.0]})  # fmt: skip


def _neighbours(annotation_id: int, category_id: int, pool_ids: list[int]) -> pd.DataFrame:
    k = len(pool_ids)
    return pd.DataFrame({"query_row": 0, "annotation_id": annotation_id, "category_id": category_id,
                         "rank": np.arange(k), "pool_row": np.arange(k), "pool_image_id": pool_ids,
                         "score": np.linspace(0.9, 0.5, k).astype(np.float32)})


NEIGHBOURS = pd.concat([_neighbours(a, 1, [104, 100, 103, 101, 102, 105]) for a in (11, 12, 13)]
                       + [_neighbours(14, 7, [])], ignore_index=True).sample(frac=1.0, random_state=0)  # shuffled


def _data(root: Path) -> tuple[dict, dict]:
    train = json.loads(write_dataset(root, "train", [1, 2, 3], [annotation(11, 1, 1, (4, 4, 20, 20)),
                                                                annotation(12, 1, 1, (30, 30, 10, 10)),
                                                                annotation(13, 2, 1, (0, 0, 64, 64)),
                                                                annotation(14, 3, 7, (10, 10, 5, 5))]).read_text())
    pool = json.loads(write_dataset(root, "pool", list(range(100, 106)), []).read_text())
    train["categories"].append({"id": 7, "name": "gong", "frequency": "r", "image_count": 1, "instance_count": 1})
    return train, pool


def test_queries_are_one_random_crop_of_random_rare_classes() -> None:
    one = select_queries(CROPS, classes=1, seed=0)
    assert len(one) == 1 and one["category_id"].iloc[0] in (1, 7)
    both = select_queries(CROPS, classes=5, seed=0)  # more classes asked than have crops: all of them
    assert both["category_id"].tolist() == [1, 7]
    assert set(both["annotation_id"]) <= {11, 12, 13, 14} and both["annotation_id"].iloc[1] == 14
    assert select_queries(CROPS, classes=1, seed=0).equals(one)  # the seed fixes the draw
    assert {int(select_queries(CROPS, 1, s)["category_id"].iloc[0]) for s in range(20)} == {1, 7}
    assert {int(select_queries(CROPS, 2, s)["annotation_id"].iloc[0]) for s in range(30)} == {11, 12, 13}
    assert select_queries(CROPS.iloc[:0], classes=3, seed=0).empty  # no rare-class crop at all


def test_table_rows_follow_rank_and_carry_dedups_decision(tmp_path: Path) -> None:
    train, pool = _data(tmp_path)
    queries = CROPS[CROPS["annotation_id"].isin([12, 14])].reset_index(drop=True)
    table = retrieval_table(queries, NEIGHBOURS, DECISIONS, train, pool, neighbours_shown=4)
    assert list(table.columns) == list(RETRIEVAL_COLUMNS)
    first = table[table["row"] == 0]
    assert first["panel"].tolist() == ["query", "neighbour", "neighbour", "neighbour", "neighbour"]
    assert first["image_id"].tolist() == [1, 104, 100, 103, 101] and first["rank"].tolist()[1:] == [0, 1, 2, 3]
    assert first["decision"].tolist()[1:] == ["labeled_duplicate", "kept", "near_duplicate", "kept"]
    assert first["category"].iloc[0] == "teapot" and first["file_name"].iloc[1] == "pool/104.png"
    np.testing.assert_allclose(first["score"].tolist()[1:], [0.9, 0.82, 0.74, 0.66], atol=1e-6)
    # the class without neighbours: its crop alone
    assert table[table["row"] == 1]["panel"].tolist() == ["query"]
    removed = table[table["row"] == 2]
    assert removed["panel"].tolist() == ["removed", "duplicate_of"] * 3
    assert removed["image_id"].tolist() == [104, 2, 105, 101, 103, 100]  # one per reason, beside its original
    assert removed["decision"].tolist()[::2] == ["labeled_duplicate", "exact_duplicate", "near_duplicate"]
    assert removed["file_name"].tolist()[:4] == ["pool/104.png", "train/2.png", "pool/105.png", "pool/101.png"]


def test_nothing_to_show_draws_without_a_crash(tmp_path: Path) -> None:
    train, pool = _data(tmp_path)
    nothing_removed = DECISIONS.assign(decision="kept", duplicate_of=-1, cosine=np.nan)
    table = retrieval_table(CROPS.iloc[:0], NEIGHBOURS.iloc[:0], nothing_removed, train, pool, 4)
    assert table.empty and list(table.columns) == list(RETRIEVAL_COLUMNS)
    fig = retrieval_figure(table, train, tmp_path / "images", 0.1)
    assert "no rare-class query crop" in fig.axes[0].texts[0].get_text()


def test_cli_writes_the_documented_columns_and_a_figure(tmp_path: Path) -> None:
    train, pool = _data(tmp_path)
    (tmp_path / "train.json").write_text(json.dumps(train))
    CROPS.to_parquet(tmp_path / "crops.parquet")
    NEIGHBOURS.to_parquet(tmp_path / "neighbours.parquet")
    DECISIONS.to_parquet(tmp_path / "decisions.parquet")
    (tmp_path / "unlabeled.json").write_text(json.dumps({"images": [i for i in pool["images"] if i["id"] <= 102],
                                                         "categories": pool["categories"]}))
    config = tiny_config(tmp_path / "results")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    gallery_stage.main(["--config", str(tmp_path / "cfg.yaml"), "--train-json", str(tmp_path / "train.json"),
                        "--pool-json", str(tmp_path / "pool.json"), "--image-root", str(tmp_path / "images"),
                        "--crops", str(tmp_path / "crops.parquet"), "--neighbours", str(tmp_path / "neighbours.parquet"),
                        "--decisions", str(tmp_path / "decisions.parquet"), "--unlabeled",
                        str(tmp_path / "unlabeled.json"), "--out-png", str(tmp_path / "g.png"), "--out-csv",
                        str(tmp_path / "g.csv")])  # fmt: skip
    table = pd.read_csv(tmp_path / "g.csv")
    assert list(table.columns) == list(RETRIEVAL_COLUMNS)
    shown = config["figures"]["retrieval_neighbours"]
    assert (table["panel"] == "query").sum() == 2 and (table["panel"] == "neighbour").sum() == min(shown, 6)
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
