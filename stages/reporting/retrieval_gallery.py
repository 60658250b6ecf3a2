"""The retrieval gallery: what rare-class crops pulled in from the pool, and what dedup removed.

Rule (fixed, seeded with ``seed``; config ``figures``):

* Rows 1..n: ``retrieval_classes`` rare classes drawn at random (seeded) among those with query crops,
  in category-id order; for each, one of its query crops drawn at random, shown as it was embedded
  (the box grown by ``embed.context``), followed by its ``retrieval_neighbours`` nearest pool images
  (rank order) with their cosine scores and dedup's decision on each (kept, or removed and why).
* Last row: what dedup removed, one example per reason (the lowest image id removed for it), each
  beside the image it copies, with their cosine.

The figure's data (RETRIEVAL_COLUMNS, one row per panel) is written beside the PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from stages.data.artifacts import DEDUP_DECISIONS  # noqa: E402
from stages.data.lvis import image_path  # noqa: E402
from stages.reporting.drawing import blank_axis, image_axis, read_rgb  # noqa: E402
from stages.retrieval.crops import context_box  # noqa: E402

# row / column: the panel's place; panel: query | neighbour | removed | duplicate_of; category: the
# query's class; query_annotation_id: the query crop's annotation; image_id / file_name: the image shown
# (file_name relative to the image root); rank / score: the neighbour's rank (0 = nearest) and cosine
# to the query; decision: dedup's (DEDUP_DECISIONS); duplicate_of / cosine: the image a removed one
# copies and their whole-image cosine
RETRIEVAL_COLUMNS = ("row", "column", "panel", "category_id", "category", "query_annotation_id", "image_id",
                     "file_name", "rank", "score", "decision", "duplicate_of", "cosine")


def select_queries(crops: pd.DataFrame, classes: int, seed: int) -> pd.DataFrame:
    """The shown query crops (rows of crops.parquet: annotation_id, image_id, category_id, ...): ``classes``
    classes drawn at random among those with crops, one crop drawn at random per class, in category
    order. Empty when there are no crops."""
    rng = np.random.default_rng(seed)
    with_crops = np.unique(crops["category_id"].to_numpy(np.int64))
    chosen = np.sort(rng.choice(with_crops, size=min(classes, len(with_crops)), replace=False))
    rows = []
    for category in chosen:
        of_class = crops[crops["category_id"] == category].sort_values("annotation_id")
        rows.append(of_class.iloc[int(rng.integers(len(of_class)))])
    return pd.DataFrame(rows, columns=crops.columns).reset_index(drop=True)


def _file(image: dict[str, Any]) -> str:
    return str(image_path(image, ""))


def retrieval_table(queries: pd.DataFrame, neighbours: pd.DataFrame, decisions: pd.DataFrame, train: dict[str, Any],
                    pool: dict[str, Any], neighbours_shown: int) -> pd.DataFrame:
    """The gallery's panels (RETRIEVAL_COLUMNS) for the chosen ``queries``, the retrieval result
    (neighbours.parquet), dedup's decisions table, the labeled train json (the queries' images and
    class names) and the pool json."""
    names = {c["id"]: c["name"] for c in train["categories"]}
    train_images = {i["id"]: i for i in train["images"]}
    pool_images = {i["id"]: i for i in pool["images"]}
    decision_of = decisions.set_index("image_id")
    rows: list[dict[str, Any]] = []
    for r, query in enumerate(queries.itertuples()):
        category = int(query.category_id)
        base = {"row": r, "category_id": category, "category": names.get(category, str(category)),
                "query_annotation_id": int(query.annotation_id)}
        rows.append({**base, "column": 0, "panel": "query", "image_id": int(query.image_id),
                     "file_name": _file(train_images[int(query.image_id)])})
        found = neighbours[neighbours["annotation_id"] == query.annotation_id].sort_values("rank")
        for c, hit in enumerate(found.head(neighbours_shown).itertuples(), start=1):
            image_id = int(hit.pool_image_id)
            verdict = decision_of.loc[image_id] if image_id in decision_of.index else None
            rows.append({**base, "column": c, "panel": "neighbour", "image_id": image_id,
                         "file_name": _file(pool_images[image_id]), "rank": int(hit.rank), "score": float(hit.score),
                         **({} if verdict is None else {"decision": verdict["decision"],
                                                        "duplicate_of": int(verdict["duplicate_of"]),
                                                        "cosine": float(verdict["cosine"])})})
    column = 0
    for reason in DEDUP_DECISIONS[1:]:  # every reason but "kept"
        of_reason = decisions[decisions["decision"] == reason].sort_values("image_id")
        if of_reason.empty:
            continue
        example = of_reason.iloc[0]
        common = {"row": len(queries), "decision": reason, "duplicate_of": int(example["duplicate_of"]),
                  "cosine": float(example["cosine"])}
        rows.append({**common, "column": column, "panel": "removed", "image_id": int(example["image_id"]),
                     "file_name": _file(pool_images[int(example["image_id"])])})
        if example["duplicate_of"] >= 0:  # the original is named (always, from the dedup stage)
            original = (_file(pool_images[int(example["duplicate_of"])]) if example["duplicate_of_set"] == "pool"
                        else str(example["duplicate_of_file"]))
            rows.append({**common, "column": column + 1, "panel": "duplicate_of",
                         "image_id": int(example["duplicate_of"]), "file_name": original})
        column += 2
    table = pd.DataFrame(rows, columns=list(RETRIEVAL_COLUMNS))
    # ids and ranks stay integers where a panel has none (nullable Int64, empty in the CSV)
    return table.astype({c: "Int64" for c in ("row", "column", "category_id", "query_annotation_id", "image_id",
                                              "rank", "duplicate_of")})


def _picture(panel: Any, train: dict[str, Any], image_root: Path, context: float) -> np.ndarray:
    """The pixels of one panel: the query's crop as it was embedded, or a whole image."""
    name = str(panel.file_name)
    pixels = read_rgb(image_path({"coco_url": name} if "://" in name else {"file_name": name}, image_root))
    if panel.panel != "query":
        return pixels
    ann = next(a for a in train["annotations"] if a["id"] == panel.query_annotation_id)
    x0, y0, x1, y1 = context_box(ann["bbox"], context, pixels.shape[1], pixels.shape[0])
    return pixels[y0:y1, x0:x1]


def _title(panel: Any) -> str:
    if panel.panel == "query":
        return f"query: {panel.category}\n(annotation {panel.query_annotation_id})"
    if panel.panel == "neighbour":
        verdict = "kept" if panel.decision == "kept" else f"REMOVED: {panel.decision}"
        return f"#{panel.rank + 1}  cos {panel.score:.3f}\nimage {panel.image_id}: {verdict}"
    if panel.panel == "removed":
        return f"removed: image {panel.image_id}\n{panel.decision}"
    return f"... a copy of image {panel.image_id}\ncos {panel.cosine:.3f}"


def retrieval_figure(table: pd.DataFrame, train: dict[str, Any], image_root: Path, context: float) -> plt.Figure:
    """The gallery: one row per query (its crop, then its neighbours), and the dedup row."""
    if table.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        blank_axis(ax, "retrieval gallery: no rare-class query crop, and dedup removed nothing")
        return fig
    rows, columns = int(table["row"].max()) + 1, int(table["column"].max()) + 1
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for panel in table.itertuples():
        removed = panel.panel in ("removed", "neighbour") and isinstance(panel.decision, str) and panel.decision != "kept"
        image_axis(axes[panel.row, panel.column], _picture(panel, train, image_root, context), _title(panel),
                   "tab:red" if removed else "black")
    fig.suptitle("Retrieval: a random query crop of random rare classes, its nearest pool images (cosine) and "
                 "dedup's decision; last row: one removal per reason", fontsize=9)
    fig.tight_layout()
    return fig
