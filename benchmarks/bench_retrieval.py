"""Retrieval stage throughput, side by side in one run:

1. Crop embedding: the stage's batched path (``stages.retrieval.crops.embed_crops``: DataLoader batches,
   one decode per image, inference_mode) against a naive loop (open the image, crop, one forward per
   crop), same encoder, same crops, on the generated mini-LVIS train set (all frequencies, so there
   are enough crops). Checks both give the same vectors.
2. Faiss: exact IndexFlatIP against IVF-PQ (with and without exact re-ranking of the top
   ``--refine-factor`` x k) and HNSW (as built by ``stages.retrieval.index.build_index``) on
   ``--pool`` synthetic unit vectors of dimension ``--dim`` (a Gaussian mixture, so neighbourhoods
   exist) with ``--queries`` queries and k = 64: build seconds, search seconds, queries/s and
   recall@64 against the exact result.
3. The frontier (``--frontier``): recall@64 against queries/s for flat, IVF-Flat and IVF-PQ + re-rank
   over nprobe, and HNSW over efSearch, on a harder data set than the mixture: a heavy-tailed
   (Student-t), 8-dimensional latent manifold mapped into ``--dim`` dimensions by a random two-layer
   tanh network plus a little noise -- no clusters to partition cleanly, neighbourhoods of very
   different density. Written as ``retrieval_frontier.csv`` / ``.png`` beside ``--out``.

    .venv/bin/python benchmarks/bench_retrieval.py --pool 1000000 --dim 384 --queries 2000 \
        --out benchmarks/retrieval.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
import yaml

from stages.data.images import decode_rgb, read_image_bytes, to_tensor
from stages.data.lvis import load_lvis
from stages.data.minilvis import make_minilvis
from stages.retrieval.crops import CropDataset, context_box, embed_crops, query_crops
from stages.retrieval.encoders import build_encoder, embed_dataset, l2_normalise
from stages.retrieval.index import build_index, search
from stages.utils.config import DEFAULT_CONFIG_PATH


def naive_crop_embeddings(train_json: Path, image_root: Path, embed_cfg: dict, device: torch.device) -> np.ndarray:
    """One image open and one forward pass per crop: what a first script would do."""
    encoder = build_encoder(embed_cfg, device)
    crops, _ = query_crops(load_lvis(train_json), image_root, list(embed_cfg["query_frequencies"]))
    rows = []
    for crop in crops:
        img = decode_rgb(read_image_bytes(crop["path"]), crop["path"])
        box = context_box(crop["bbox"], float(embed_cfg["context"]), img.width, img.height)
        rows.append(encoder.embed(to_tensor(img.crop(box), encoder.input_size)[None]).numpy()[0])
    return l2_normalise(np.stack(rows))


def bench_embedding(crop_size: int, batch_sizes: list[int], repeats: int) -> list[str]:
    """Median seconds over ``repeats`` rounds; each round runs every path once, interleaved, so a
    busy spell of the (shared) machine hits all paths alike."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    embed_cfg = {**config["embed"], "query_frequencies": ["r", "c", "f"], "crop_size": crop_size}
    device = torch.device("cpu")
    paths = ["naive", *batch_sizes]
    seconds: dict = {p: [] for p in paths}
    diffs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        make_minilvis(config["minilvis"], config["seed"], out)
        build_encoder(embed_cfg, device)  # warm-up: weights read once into the page cache
        for _ in range(repeats):
            for path in paths:
                start = time.perf_counter()
                if path == "naive":
                    naive = naive_crop_embeddings(out / "train.json", out / "images", embed_cfg, device)
                else:
                    batched, _ = embed_crops(out / "train.json", out / "images", {**embed_cfg, "batch_size": path},
                                             device)  # fmt: skip
                seconds[path].append(time.perf_counter() - start)
                if path != "naive":
                    diffs[path] = float(np.abs(batched - naive).max())
    n = len(naive)
    median = {p: float(np.median(t)) for p, t in seconds.items()}
    rows = [f"| naive loop (one image open + one forward per crop) | {median['naive']:.2f} | "
            f"{n / median['naive']:.1f} | 1.00x | - |"]  # fmt: skip
    rows += [f"| stage, batch {b} | {median[b]:.2f} | {n / median[b]:.1f} | {median['naive'] / median[b]:.2f}x | "
             f"{diffs[b]:.1e} |" for b in batch_sizes]  # fmt: skip
    spread = ", ".join(f"{p}: {min(t):.1f}-{max(t):.1f} s" for p, t in seconds.items())
    return [
        f"### Crop embedding ({embed_cfg['encoder']}, {crop_size} px, {n} crops of the default mini-LVIS train set)",
        "",
        f"Median of {repeats} interleaved rounds (range per path: {spread}).",
        "",
        "| path | seconds | crops/s | speed vs naive | max abs diff of the unit vectors |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]


HUB = Path(__file__).resolve().parent.parent.parent / "shared" / "dinov2-hub"


def bench_limit(encoders: list[str], crop_size: int, batch_size: int, repeats: int) -> list[str]:
    """The stage against the model's own speed: the encoder's pure forward pass on pre-decoded,
    pre-resized tensors (the limit) and the stage's loop (read, decode, crop, resize, forward, with
    the next batch read while the encoder runs), same crops, same batch size, interleaved rounds."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    device = torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        make_minilvis(config["minilvis"], config["seed"], out)
        for name in encoders:
            embed_cfg = {**config["embed"], "query_frequencies": ["r", "c", "f"], "crop_size": crop_size,
                         "batch_size": batch_size, "workers": 0}
            if name == "dinov2_vits14":
                if not (HUB / "hubconf.py").is_file():
                    rows.append(f"| {name} | skipped: no DINOv2 hub code at {HUB} | | | |")
                    continue
                embed_cfg |= {"encoder": "dinov2_hub", "hub_repo": str(HUB), "hub_model": "dinov2_vits14"}
            encoder = build_encoder(embed_cfg, device)
            crops, _ = query_crops(load_lvis(out / "train.json"), out / "images", ["r", "c", "f"])
            dataset = CropDataset(crops, float(embed_cfg["context"]), crop_size)
            tensors = torch.stack([dataset[i][0] for i in range(len(dataset))])  # decoded once, outside the timing
            limit_s, stage_s = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                for k in range(0, len(tensors), batch_size):
                    encoder.embed(tensors[k:k + batch_size])
                limit_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                embed_dataset(CropDataset(crops, float(embed_cfg["context"]), crop_size), encoder, batch_size, 0, "bench")
                stage_s.append(time.perf_counter() - start)
            limit, stage = float(np.median(limit_s)), float(np.median(stage_s))
            rows.append(f"| {name} | {len(tensors) / limit:.1f} | {len(tensors) / stage:.1f} | **{limit / stage:.2f}** | "
                        f"{len(tensors)} |")
    return [f"### The stage against the model's own speed ({crop_size} px, batch {batch_size}, medians of {repeats} "
            "interleaved rounds)", "",
            "| encoder | limit: forward only on decoded tensors (crops/s) | stage (crops/s) | stage / limit | crops |",
            "|---|---:|---:|---:|---:|", *rows, ""]


def replace_section(text: str, name: str, body: list[str]) -> str:
    """``text`` with the section between the ``name`` markers replaced (appended when absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, *body, end])
    if begin in text and end in text:
        return text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def mixture(n: int, dim: int, clusters: int, rng: np.random.Generator, centres: np.ndarray | None = None) -> np.ndarray:
    centres = rng.normal(size=(clusters, dim)).astype(np.float32) if centres is None else centres
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries
        m = min(100_000, n - start)
        out[start : start + m] = centres[rng.integers(len(centres), size=m)] + 0.6 * rng.normal(size=(m, dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth)]
    return float(np.sum(hits) / truth.size)


def bench_faiss(pool: int, dim: int, queries: int, k: int, kinds: list[str], nlist: int, pq_m: int,
                nprobes: list[int], refine: int) -> list[str]:  # fmt: skip
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(pool // 100, dim)).astype(np.float32)
    database = mixture(pool, dim, len(centres), rng, centres)
    query_vectors = mixture(queries, dim, len(centres), rng, centres)
    rows, truth, t_exact = [], None, None
    for kind in ["flat", *kinds]:
        cfg = {"index": kind, "nlist": nlist, "pq_m": pq_m, "nprobe": nprobes[0], "refine_factor": refine,
               "use_gpu": False}  # fmt: skip
        start = time.perf_counter()
        index = build_index(database, cfg, seed=0)
        t_build = time.perf_counter() - start
        settings_list = [(p, r) for p in nprobes for r in (1, refine)] if kind == "ivfpq" else [(None, None)]
        for probes, k_factor in settings_list:
            if probes is not None:  # one build: k_factor 1 returns the PQ ranking, larger re-ranks exactly
                faiss.downcast_index(index.base_index).nprobe = probes
                index.k_factor = float(k_factor)
            start = time.perf_counter()
            _, ids = search(index, query_vectors, k)
            t_search = time.perf_counter() - start
            if kind == "flat":
                truth, t_exact = ids, t_search
            settings = {"flat": "exact", "ivfpq": f"nlist {faiss.downcast_index(index.base_index).nlist if probes else nlist}, m {pq_m}, "
                                 f"nprobe {probes}, re-rank {k_factor} x k",
                        "hnsw": "M 32, efSearch 128"}[kind]  # fmt: skip
            rows.append(
                f"| {kind} ({settings}) | {t_build:.2f} | {t_search:.2f} | {queries / t_search:.0f} | "
                f"{t_exact / t_search:.2f}x | {recall_at_k(ids, truth):.3f} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
        del index
    return [
        f"### Faiss k-NN (k = {k}, {pool:,} pool vectors of dim {dim}, {queries:,} queries, "
        f"{faiss.omp_get_max_threads()} threads)",
        "",
        "| index | build s | search s | queries/s | search speed vs exact | recall@64 vs exact |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def manifold(n: int, dim: int, rng: np.random.Generator, net: tuple[np.ndarray, ...]) -> np.ndarray:
    """Unit vectors on a noisy, heavy-tailed 8-dimensional manifold (see the module docstring)."""
    w1, b1, w2 = net
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries
        m = min(100_000, n - start)
        z = rng.standard_t(df=3, size=(m, w1.shape[0])).astype(np.float32)
        out[start : start + m] = np.tanh(z @ w1 + b1) @ w2 + 0.05 * rng.normal(size=(m, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def manifold_net(dim: int, rng: np.random.Generator, latent: int = 8, hidden: int = 64) -> tuple[np.ndarray, ...]:
    return (rng.normal(size=(latent, hidden)).astype(np.float32), rng.normal(size=hidden).astype(np.float32),
            (rng.normal(size=(hidden, dim)) / np.sqrt(hidden)).astype(np.float32))


FRONTIER = {  # index kind -> (settings swept, the knob)
    "ivfflat": ([1, 2, 4, 8, 16, 32, 64, 128], "nprobe"),
    "ivfpq": ([1, 2, 4, 8, 16, 32, 64, 128], "nprobe"),
    "hnsw": ([64, 96, 128, 256, 512], "efSearch"),
}


def bench_frontier(pool: int, dim: int, queries: int, k: int, nlist: int, pq_m: int, refine: int,
                   out: Path) -> list[str]:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rng = np.random.default_rng(1)
    net = manifold_net(dim, rng)
    database, query_vectors = manifold(pool, dim, rng, net), manifold(queries, dim, rng, net)
    rows = []

    def timed_search(index: faiss.Index) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        _, ids = search(index, query_vectors, k)
        return ids, time.perf_counter() - start

    start = time.perf_counter()
    flat = build_index(database, {"index": "flat"})
    build = time.perf_counter() - start
    truth, t_exact = timed_search(flat)
    rows.append({"index": "flat", "knob": "", "setting": 0, "build_s": build, "search_s": t_exact,
                 "queries_per_s": queries / t_exact, "speed_vs_exact": 1.0, "recall": 1.0})
    for kind, (settings, knob) in FRONTIER.items():
        cfg = {"index": kind, "nlist": nlist, "pq_m": pq_m, "nprobe": 1, "refine_factor": refine, "use_gpu": False}
        start = time.perf_counter()
        index = build_index(database, cfg, seed=0)
        build = time.perf_counter() - start
        # exact search timed again just before each sweep: on a shared machine the load drifts
        # over the minutes a build takes, and a ratio is only fair between neighbouring timings
        _, t_exact = timed_search(flat)
        rows.append({"index": "flat", "knob": f"(before {kind})", "setting": 0, "build_s": 0.0, "search_s": t_exact,
                     "queries_per_s": queries / t_exact, "speed_vs_exact": 1.0, "recall": 1.0})
        inner = faiss.downcast_index(index.base_index if kind == "ivfpq" else index)
        for value in settings:
            if kind == "hnsw":
                inner.hnsw.efSearch = value
            else:
                inner.nprobe = value
            ids, t = timed_search(index)
            rows.append({"index": kind + (f" + re-rank {refine}k" if kind == "ivfpq" else ""), "knob": knob,
                         "setting": value, "build_s": build, "search_s": t, "queries_per_s": queries / t,
                         "speed_vs_exact": t_exact / t, "recall": recall_at_k(ids, truth)})
            print(rows[-1], file=sys.stderr, flush=True)
        del index
    del flat
    frame = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv, png = out.with_name("retrieval_frontier.csv"), out.with_name("retrieval_frontier.png")
    frame.to_csv(csv, index=False)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, part in frame.groupby("index", sort=False):
        ax.plot(part["recall"], part["queries_per_s"], marker="o", label=name)
        for _, r in part.iterrows():
            if r["knob"]:
                ax.annotate(f"{int(r['setting'])}", (r["recall"], r["queries_per_s"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    ax.axvline(0.95, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{k} against exact search")
    ax.set_ylabel("queries / s (log)")
    ax.set_title(f"{pool:,} x {dim} manifold vectors, {queries:,} queries, {faiss.omp_get_max_threads()} threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    good = frame[frame["recall"] >= 0.95].sort_values("queries_per_s", ascending=False)
    best = good.iloc[0] if len(good) else None
    table = ["| index | knob | setting | build s | search s | queries/s | speed vs exact | recall@64 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {r['index']} | {r['knob']} | {r['setting']} | {r['build_s']:.1f} | {r['search_s']:.2f} | "
              f"{r['queries_per_s']:.0f} | {r['speed_vs_exact']:.2f}x | {r['recall']:.3f} |" for _, r in frame.iterrows()]
    verdict = ("No setting reaches recall@64 0.95." if best is None else
               f"Fastest at recall@64 >= 0.95: **{best['index']}, {best['knob']} {best['setting']}**, "
               f"{best['speed_vs_exact']:.1f}x exact throughput at recall {best['recall']:.3f}.")
    return [f"### Recall / throughput frontier on the manifold set (k = {k}, {pool:,} x {dim}, {queries:,} "
            f"queries, nlist {nlist}, PQ m {pq_m})", "", f"![frontier]({png.name}) (data: `{csv.name}`)", "",
            *table, "", verdict, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--kinds", nargs="*", default=["ivfpq", "hnsw"])
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--pq-m", type=int, default=48)
    parser.add_argument("--nprobes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--refine-factor", type=int, default=4)
    parser.add_argument("--crop-sizes", type=int, nargs="+", default=[96, 224])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--limit-encoders", nargs="*", default=["efficientnet_lite0", "dinov2_vits14"])
    parser.add_argument("--limit-batch", type=int, default=8)
    parser.add_argument("--skip-limit", action="store_true")
    parser.add_argument("--skip-faiss", action="store_true")
    parser.add_argument("--frontier", action="store_true", help="also the recall/throughput frontier on the manifold set")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/retrieval.md"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    command = f"`{' '.join(['.venv/bin/python', *sys.argv])}`  "
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, faiss "
               f"{faiss.__version__}, CPU only (a shared 2-core VM: absolute times vary between runs).")  # fmt: skip
    text = args.out.read_text() if args.out.exists() else "# Retrieval benchmarks (benchmarks/bench_retrieval.py)\n"
    if not args.skip_embedding:
        body = [command, machine, ""]
        for crop_size in args.crop_sizes:
            body += bench_embedding(crop_size, args.batch_sizes, args.repeats)
        body += ["The stage decodes each image once for all its crops and runs batches in inference mode. On this",
                 "CPU, batching pays at small inputs; at 224 px the per-image cost is compute-bound and large",
                 "batches fall out of cache: set `embed.batch_size` per machine (on a GPU, the largest that fits)."]
        text = replace_section(text, "embedding", body)
    if not args.skip_limit:
        body = [command, machine, ""] + bench_limit(args.limit_encoders, 224, args.limit_batch, args.repeats)
        text = replace_section(text, "limit", body)
    if not args.skip_faiss:
        body = [command, machine, ""]
        body += bench_faiss(args.pool, args.dim, args.queries, args.k, args.kinds, args.nlist, args.pq_m, args.nprobes,
                            args.refine_factor)
        text = replace_section(text, "faiss", body)
    if args.frontier:
        body = [command, machine, ""] + bench_frontier(args.pool, args.dim, args.queries, args.k, args.nlist,
                                                       args.pq_m, args.refine_factor, args.out)
        text = replace_section(text, "frontier", body)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
