"""LVIS evaluation at LVIS scale: the official LVISEval against stages.fast_lvis_eval, side by side.

Synthetic LVIS-like data: ``--images`` images, 1,203 classes (337 r / 461 c / 405 f), ~10 gt per
image (small to large), ~10 verified-absent classes and a few not-exhaustive ones per image, and
``--per-image`` detections per image (jittered gt, confusions, junk of any class). Both evaluators
get the same gt json and the same list of result dicts; the official one is LVIS (json load) +
LVISResults + LVISEval, as ``stages.evaluation.lvis_eval.run_lvis_eval`` calls them, the fast one is
``json.load`` + ``fast_lvis_eval``. The two that write into the result dicts (LVISResults,
faster-coco-eval's loadRes) get a copy made before their clock starts. Memory: each run's peak RSS
(the high-water mark reset when it starts) beside the RSS the process held before it (the data).
The official evaluator needs memory per (image, class) pair and per detection: ``--official-images M``
runs it (and the fast path again) on the first M images only, and the fast path is also timed on
all images. Writes (or updates the
section of this IoU type in) a markdown table.

    nice .venv/bin/python benchmarks/bench_lvis_eval.py --images 20000 --official-images 5000
    nice .venv/bin/python benchmarks/bench_lvis_eval.py --iou-type segm --images 1000

faster-coco-eval's LVIS mode runs on the same subset as LVISEval, and its nine AP values are compared
with LVISEval's.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.data.detections import results_frame  # noqa: E402
from stages.evaluation.fast_lvis_eval import fast_lvis_eval  # noqa: E402
from stages.utils.atomic import write_parquet  # noqa: E402
from stages.utils.compat import ensure_numpy_aliases  # noqa: E402

NUM_CLASSES = 1203
SPLIT = {"r": 337, "c": 461, "f": 405}


def _hexagon(x: float, y: float, w: float, h: float, phase: float) -> list[list[float]]:
    angles = np.linspace(0, 2 * np.pi, 7)[:-1] + phase
    return [np.column_stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))]).ravel().round(2).tolist()]


def synthetic(images: int, per_image: int, iou_type: str, seed: int = 0) -> tuple[dict, list[dict]]:
    """LVIS-like gt json dict and result dicts (boxes; plus compressed RLE masks for segm)."""
    rng = np.random.default_rng(seed)
    freqs = rng.permutation(np.repeat(list(SPLIT), list(SPLIT.values())))
    cats = [{"id": c, "name": f"c{c}", "frequency": str(f), "synset": f"c{c}.n.01", "synonyms": [f"c{c}"], "def": "",
             "image_count": 0, "instance_count": 0} for c, f in zip(range(1, NUM_CLASSES + 1), freqs)]
    weight = np.select([freqs == "f", freqs == "c"], [30.0, 3.0], 0.3)
    weight /= weight.sum()
    gt_images, anns, dets = [], [], []
    for i in range(1, images + 1):
        height, width = int(rng.integers(360, 640)), int(rng.integers(480, 640))
        present = rng.choice(np.arange(1, NUM_CLASSES + 1), size=int(rng.integers(1, 8)), replace=False, p=weight)
        mine = []
        for c in present.tolist():
            for _ in range(int(rng.integers(1, 5))):
                side = float(np.exp(rng.uniform(np.log(8), np.log(400))))
                w, h = min(side * rng.uniform(0.6, 1.4), width - 1.0), min(side * rng.uniform(0.6, 1.4), height - 1.0)
                x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
                phase = float(rng.uniform())
                ann = {"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h],
                       "area": 0.75 * w * h, "segmentation": _hexagon(x, y, w, h, phase)}
                anns.append(ann)
                mine.append((ann, phase))
        absent = np.setdiff1d(rng.choice(np.arange(1, NUM_CLASSES + 1), size=12, replace=False), present)
        gt_images.append({"id": i, "height": height, "width": width, "coco_url": f"http://x/{i:012d}.jpg",
                          "neg_category_ids": absent[:10].tolist(),
                          "not_exhaustive_category_ids": [c for c in present.tolist() if rng.random() < 0.1]})
        # detections: ~1/4 jittered gt (right class, some duplicates), ~1/10 confused class, the rest
        # junk boxes, of an annotated / verified-absent class half the time, of any class otherwise
        n_near = min(per_image // 4, 3 * len(mine))
        src = rng.integers(0, len(mine), size=n_near + per_image // 10)
        boxes = np.array([mine[k][0]["bbox"] for k in src]).reshape(-1, 4)
        boxes = boxes + rng.normal(0, 0.1, size=boxes.shape) * boxes[:, [2, 3, 2, 3]]
        classes = np.array([mine[k][0]["category_id"] for k in src], dtype=np.int64)
        classes[n_near:] = rng.integers(1, NUM_CLASSES + 1, size=len(src) - n_near)
        scores = np.r_[rng.beta(4, 2, size=n_near), rng.beta(2, 4, size=len(src) - n_near)]
        n_junk = per_image - len(src)
        side = np.exp(rng.uniform(np.log(6), np.log(300), size=(n_junk, 2)))
        junk = np.column_stack([rng.uniform(0, width - 8, n_junk), rng.uniform(0, height - 8, n_junk), side])
        known = np.r_[present, absent[:10]]
        junk_classes = np.where(rng.random(n_junk) < 0.5, rng.choice(known, size=n_junk),
                                rng.integers(1, NUM_CLASSES + 1, size=n_junk))
        boxes = np.vstack([boxes, junk])
        boxes[:, 0] = boxes[:, 0].clip(0, width - 2)
        boxes[:, 1] = boxes[:, 1].clip(0, height - 2)
        boxes[:, 2] = np.minimum(boxes[:, 2].clip(1, None), width - boxes[:, 0])
        boxes[:, 3] = np.minimum(boxes[:, 3].clip(1, None), height - boxes[:, 1])
        boxes = boxes.round(2)
        classes = np.r_[classes, junk_classes]
        scores = np.r_[scores, rng.beta(1, 6, size=n_junk)].round(4)
        rles = None
        if iou_type == "segm":  # hexagons like their gt for the detections made from gt, boxes for junk
            rles = [mask_util.frPyObjects(_hexagon(*boxes[k], mine[src[k]][1]), height, width)[0] for k in range(len(src))]
            rles += mask_util.frPyObjects(boxes[len(src):], height, width)
        for k in range(len(boxes)):
            det = {"image_id": i, "category_id": int(classes[k]), "bbox": boxes[k].tolist(), "score": float(scores[k])}
            if rles is not None:
                det["segmentation"] = {"size": rles[k]["size"], "counts": rles[k]["counts"].decode()}
            dets.append(det)
    return {"images": gt_images, "annotations": anns, "categories": cats}, dets


def subset(gt: dict, dets: list[dict], images: int) -> tuple[dict, list[dict]]:
    """The first ``images`` images of the gt with their annotations and detections."""
    keep = {img["id"] for img in gt["images"][:images]}
    return ({**gt, "images": gt["images"][:images], "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]},
            [d for d in dets if d["image_id"] in keep])


def _status_gb(key: str) -> float:
    """A /proc/self/status memory line (VmRSS, VmHWM) in GB."""
    with open("/proc/self/status") as fh:
        kb = next(line.split()[1] for line in fh if line.startswith(key + ":"))
    return int(kb) / 2**20


class Footprint:
    """The process's RSS when a run starts (what it already holds: the data) and its peak during the
    run, with the kernel's high-water mark reset at the start (``clear_refs`` 5), so each evaluator's
    peak is its own and not an earlier step's. Enter it before the clock starts."""

    def __enter__(self) -> Footprint:
        # Python's cyclic collector makes its first full pass over the millions of result dicts the
        # benchmark just made during whichever evaluator runs next (the first fast run at 2,000 segm
        # images took 2.1 s, the next 1.4 s): collected here, no evaluator pays for the benchmark's data
        gc.collect()
        self.held = _status_gb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.reset = True
        except OSError:  # a kernel that refuses the reset: the peak is then the process's so far
            self.reset = False
        return self

    def __exit__(self, *exc) -> None:
        self.peak = _status_gb("VmHWM")

    def cells(self) -> str:
        return f"{self.held:.1f} | {self.peak:.1f}" + ("" if self.reset else " (process peak so far)")


def load_and_evaluate(gt_path: Path, dets, iou_type: str, max_dets: int):
    """What the fast path's clock measures: ``json.load`` of the gt, then ``fast_lvis_eval`` (dicts or a table)."""
    with open(gt_path) as fh:
        gt = json.load(fh)
    return fast_lvis_eval(gt, dets, iou_type, max_dets)


def measured(evaluate, *args):
    """(result, seconds, Footprint) of one evaluator run: memory reset, then the clock."""
    with Footprint() as footprint:
        start = time.perf_counter()
        result = evaluate(*args)
        seconds = time.perf_counter() - start
    return result, seconds, footprint


def run_fast(gt_path: Path, dets: list[dict], iou_type: str, max_dets: int):
    return measured(load_and_evaluate, gt_path, dets, iou_type, max_dets)


def profile_fast(gt_path: Path, dets: list[dict], iou_type: str, max_dets: int, top: int) -> list[str]:
    """Where the fast path's time goes: one more run under cProfile, the project's own functions by
    cumulative time (pycocotools' C calls count in the function that makes them)."""
    import cProfile
    import pstats

    gc.collect()  # as before a timed run
    profiler = cProfile.Profile()
    profiler.enable()
    load_and_evaluate(gt_path, dets, iou_type, max_dets)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(((ct, tt, f"{Path(file).parent.name}/{Path(file).name}:{func}")
                   for (file, _, func), (_, _, tt, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
                   if "/stages/" in file or file.endswith("bench_lvis_eval.py")), reverse=True)[:top]
    total = stats.total_tt  # type: ignore[attr-defined]
    return [f"Where the fast path's time goes (cProfile, one more run, {total:.2f} s under the profiler):", "",
            "| function | cumulative s | own s (incl. C calls it makes) | share |", "|---|---:|---:|---:|",
            *[f"| `{name}` | {ct:.2f} | {tt:.2f} | {ct / total:.0%} |" for ct, tt, name in rows], ""]


def evaluate_table(gt_path: Path, table_path: Path, iou_type: str, max_dets: int) -> dict:
    """The fast path as a process of its own would run it on LVIS val: read the gt json and the
    detections parquet (stages.data.detections.results_frame's layout), evaluate. Seconds from
    reading to result, the process's peak RSS (imports included)."""
    import pandas as pd

    start = time.perf_counter()
    # Arrow-backed columns: the masks stay in one Arrow buffer, no Python object per detection
    result = load_and_evaluate(gt_path, pd.read_parquet(table_path, dtype_backend="pyarrow"), iou_type, max_dets)
    return {"seconds": time.perf_counter() - start, "peak_gb": _status_gb("VmHWM"), "AP": result.results["AP"]}


def run_table_process(gt_path: Path, table_path: Path, iou_type: str, max_dets: int) -> dict:
    """evaluate_table in a fresh interpreter, so its peak memory is the evaluation's alone."""
    cmd = [sys.executable, __file__, "--evaluate-table", str(gt_path), str(table_path), "--iou-type", iou_type,
           "--max-dets", str(max_dets)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_official(gt_path: Path, dets: list[dict], iou_type: str, max_dets: int):
    """LVIS(gt) + LVISResults + LVISEval.run(), as ``run_lvis_eval`` does, on a copy made before the
    clock starts (LVISResults writes into the dicts; the copy is the caller's cost, not the evaluator's)."""
    ensure_numpy_aliases()  # lvis 0.5.3 uses np.float
    import lvis

    def evaluate(dets: list[dict]):
        gt = lvis.LVIS(str(gt_path))
        evaluator = lvis.LVISEval(gt, lvis.LVISResults(gt, dets, max_dets=max_dets), iou_type)
        evaluator.params.max_dets = max_dets
        evaluator.run()
        return evaluator

    return measured(evaluate, copy.deepcopy(dets))


def run_peer(gt_path: Path, dets: list[dict], iou_type: str, max_dets: int):
    """faster-coco-eval's LVIS mode (COCOeval_faster, lvis_style=True), the evaluator a speed-minded
    user would pick: its own json loading and results conversion included, as for the others. loadRes
    writes into the dicts, so it gets a copy made before the clock starts."""
    from faster_coco_eval import COCO, COCOeval_faster

    def evaluate(dets: list[dict]):
        gt = COCO(str(gt_path))
        evaluator = COCOeval_faster(gt, gt.loadRes(dets), iou_type, lvis_style=True, print_function=lambda *a, **k: None)
        evaluator.params.maxDets = [max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        return evaluator

    return measured(evaluate, copy.deepcopy(dets))


PEER_KEYS = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", "APs": "AP_small", "APm": "AP_medium",
             "APl": "AP_large", "APr": "APr", "APc": "APc", "APf": "APf"}


def peer_difference(peer, official_results: dict) -> float:
    """max |difference| of the nine AP values between faster-coco-eval and LVISEval (-1 equal to -1)."""
    stats = peer.stats_as_dict
    worst = 0.0
    for ours, theirs in PEER_KEYS.items():
        a, b = float(stats[theirs]), float(official_results[ours])
        if (a < 0) != (b < 0):
            return math.inf
        worst = max(worst, abs(a - b))
    return worst


def differences(fast, official) -> tuple[float, float]:
    """max |difference| over the summary metrics (-1 on both sides counts as equal) and the precision."""
    worst = 0.0
    for key, value in official.results.items():
        a, b = float(fast.results[key]), float(value)
        if (a < 0) != (b < 0):
            return math.inf, math.inf
        worst = max(worst, abs(a - b))
    return worst, float(np.abs(fast.precision - official.eval["precision"]).max())


def update_markdown(path: Path, iou_type: str, section: str) -> None:
    """Replace this IoU type's section of the table file (the other one stays)."""
    head = ("# LVIS evaluation benchmark (benchmarks/bench_lvis_eval.py)\n\n"
            "Official `lvis` 0.5.3 LVISEval (LVIS, LVISResults, LVISEval as `stages.evaluation.lvis_eval.run_lvis_eval` calls them), "
            "`stages.evaluation.fast_lvis_eval.fast_lvis_eval` and faster-coco-eval 1.8's LVIS mode "
            "(`COCOeval_faster(..., lvis_style=True)`, maxDets [300]), same gt json and detections, one process, "
            "timed one after the other on a shared 2-core machine. Times include loading the gt json. Agreement: max |difference| "
            "of the 13 summary values (AP..APf, AR) and of the whole precision array (T x R x K x A).\n")
    text = path.read_text() if path.exists() else head
    begin, end = f"<!-- {iou_type}:begin -->", f"<!-- {iou_type}:end -->"
    block = f"{begin}\n{section}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--per-image", type=int, default=300)
    parser.add_argument("--iou-type", choices=["bbox", "segm"], default="bbox")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-dets", type=int, default=300)
    parser.add_argument("--official-images", type=int, default=None,
                        help="run LVISEval on the first M images only (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "lvis_eval.md")
    parser.add_argument("--profile", type=int, default=12, metavar="N",
                        help="profile one more fast run and list its N costliest functions (0: off)")
    parser.add_argument("--evaluate-table", nargs=2, type=Path, metavar=("GT_JSON", "DETECTIONS_PARQUET"),
                        help="internal: evaluate_table in this process and print its json")
    args = parser.parse_args()
    if args.evaluate_table:
        print(json.dumps(evaluate_table(*args.evaluate_table, args.iou_type, args.max_dets)))
        return
    command = "nice .venv/bin/python benchmarks/bench_lvis_eval.py " + shlex.join(sys.argv[1:])

    start = time.perf_counter()
    gt, dets = synthetic(args.images, args.per_image, args.iou_type, args.seed)
    print(f"data: {len(gt['images'])} images, {len(gt['annotations'])} gt, {len(dets):,} detections "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    n_official = min(args.official_images or args.images, args.images)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        full_path = Path(tmp) / "gt.json"
        full_path.write_text(json.dumps(gt))
        if n_official < args.images:
            fast_full, t_full, mem_full = run_fast(full_path, dets, args.iou_type, args.max_dets)
            print(f"fast, all {args.images} images: {t_full:.1f} s, AP {fast_full.results['AP']:.4f}", flush=True)
            rows.append(f"| fast | {args.images:,} | {len(dets):,} | {t_full:.1f} | | | | {mem_full.cells()} |")
            table_path = Path(tmp) / "detections.parquet"
            write_parquet(results_frame(dets), table_path)
            own = run_table_process(full_path, table_path, args.iou_type, args.max_dets)
            print(f"fast from a parquet table, own process, all {args.images} images: {own['seconds']:.1f} s, "
                  f"peak {own['peak_gb']:.1f} GB, AP {own['AP']:.4f}", flush=True)
            if own["AP"] != fast_full.results["AP"]:
                raise SystemExit(f"the table input gave AP {own['AP']} against {fast_full.results['AP']} from the dicts")
            rows.append(f"| fast, own process, detections from a parquet table | {args.images:,} | {len(dets):,} | "
                        f"{own['seconds']:.1f} | | | | 0 (new process) | {own['peak_gb']:.1f} |")
            sub_gt, sub_dets = subset(gt, dets, n_official)
            sub_path = Path(tmp) / "gt_subset.json"
            sub_path.write_text(json.dumps(sub_gt))
        else:
            sub_gt, sub_dets, sub_path = gt, dets, full_path
        del gt, dets
        fast, t_fast, mem_fast = run_fast(sub_path, sub_dets, args.iou_type, args.max_dets)
        print(f"fast, {n_official} images: {t_fast:.1f} s, AP {fast.results['AP']:.4f}", flush=True)
        profile = profile_fast(sub_path, sub_dets, args.iou_type, args.max_dets, args.profile) if args.profile else []
        peer, t_peer, mem_peer = run_peer(sub_path, sub_dets, args.iou_type, args.max_dets)
        print(f"faster-coco-eval, {n_official} images: {t_peer:.1f} s", flush=True)
        official, t_official, mem_official = run_official(sub_path, sub_dets, args.iou_type, args.max_dets)
        print(f"official, {n_official} images: {t_official:.1f} s, AP {float(official.results['AP']):.4f}", flush=True)
    d_summary, d_precision = differences(fast, official)
    agree = d_summary <= 1e-4 and d_precision <= 1e-6
    rows.insert(0, f"| official LVISEval | {n_official:,} | {len(sub_dets):,} | {t_official:.1f} | | | | "
                   f"{mem_official.cells()} |")
    rows.insert(1, f"| fast | {n_official:,} | {len(sub_dets):,} | {t_fast:.2f} | **{t_official / t_fast:.0f}x** | "
                   f"{d_summary:.1e} | {d_precision:.1e} | {mem_fast.cells()} |")
    d_peer = peer_difference(peer, official.results)
    rows.insert(2, f"| faster-coco-eval 1.8 (LVIS mode) | {n_official:,} | {len(sub_dets):,} | {t_peer:.2f} | "
                   f"{t_official / t_peer:.1f}x (fast is **{t_peer / t_fast:.1f}x** faster) | {d_peer:.1e} (AP values) | | "
                   f"{mem_peer.cells()} |")
    if n_official < args.images:
        rows.append(f"| official, linear extrapolation (not measured) | {args.images:,} | | "
                    f"~{t_official * args.images / n_official:.0f} | ~{t_official * args.images / n_official / t_full:.0f}x | "
                    f"| | | |")
    metrics = ", ".join(f"{k} {float(v):.4f}" for k, v in fast.results.items() if k.startswith("AP"))
    section = "\n".join([
        f"## {args.iou_type}",
        "",
        f"`{command}`",
        "",
        f"{args.images:,} images x {args.per_image} detections, {NUM_CLASSES} classes, max_dets {args.max_dets}, "
        f"seed {args.seed}. Agreement within 1e-4 / 1e-6: **{agree}**.",
        "",
        "| evaluator | images | detections | seconds | speed-up | max diff summaries | max diff precision | "
        "RSS held before (GB) | peak RSS during (GB) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Fast-path metrics on the {n_official:,}-image set: {metrics}.",
        "",
        *profile,
    ])
    update_markdown(args.out, args.iou_type, section)
    print(section)
    if not agree:
        raise SystemExit("the two evaluators disagree")


if __name__ == "__main__":
    main()
