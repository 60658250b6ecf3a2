"""The GPU check: the paper-scale code paths that only a GPU runs, in one call of a few minutes.

    (a) the teacher, ~50 iterations on CUDA at paper-like resolution (1024 px) with vit_sfp as the
        paper configures it (EVA-02-L architecture, random weights: windows, global blocks,
        drop-path, layer decay, AdamW): seconds per iteration and peak GPU memory;
    (b) DDP over NCCL with world size 1: a process group, an all-reduce, DDP training steps;
    (c) the student, ~20 iterations from that teacher (soft + correction pseudo-labels);
    (d) DINOv2 ViT-L/14 (the real hub code, random weights) embedding throughput at 224 px at the
        largest batch that fits, fp32 and bf16;
    (e) GPU Faiss, if faiss with GPU support is installed (its wheel needs CUDA 12 runtimes; the
        GPU machine's torch is CUDA 13, so the check says whether it is there).

Each part runs on its own and a failure is written into the table instead of stopping the rest.
`--dry` runs the same code on the CPU with tiny sizes (the test suite does, so the script is known
to work before a GPU is there). Writes a markdown table to --out.

    python -m benchmarks.gpu_check --out OUT/gpu.md            # on the GPU machine (benchmarks/gpu_check.sh)
    python -m benchmarks.gpu_check --dry --out /tmp/gpu_dry.md # anywhere
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
HUB_PLACES = (REPO / ".whl" / "dinov2-hub", REPO.parent / "shared" / "dinov2-hub")

# paper-scale model settings (configs/lvis.yaml), random weights; dry: the same code, tiny
FULL = {"image_size": 1024, "images": 16, "timm_model": "eva02_large_patch14_224", "teacher_iters": 50,
        "student_iters": 20, "fpn": 256, "roi": 512, "hub_model": "dinov2_vitl14", "crop": 224, "batches": (32, 64, 128,
        256, 512, 1024), "window": 16, "global": [5, 11, 17, 23]}  # fmt: skip
DRY = {"image_size": 64, "images": 6, "timm_model": "vit_tiny_patch16_224", "teacher_iters": 2, "student_iters": 2,
       "fpn": 32, "roi": 32, "hub_model": "dinov2_vits14", "crop": 56, "batches": (2, 4), "window": 2,
       "global": [5]}  # fmt: skip


def _config(size: dict[str, Any], device: str, results: Path) -> dict[str, Any]:
    from stages.utils.config import load_config

    config = load_config(REPO / "configs" / "lvis.yaml")
    config.update(device=device, num_threads=os.cpu_count() or 1, data_workers=0, results_dir=str(results))
    config["distributed"].update(processes_per_machine=1, teacher_machines=1, student_machines=1)
    base = load_config()["minilvis"]
    config["minilvis"] = {**base, "preset": "shapes", "image_size": size["image_size"], "val_images": 2,
                          "pool_images": size["images"], "pool_duplicates": 0, "pool_val_copies": 0,
                          "shapes": {**base["shapes"], "train_images": size["images"]}}
    config["model"].update(timm_model=size["timm_model"], backbone_weights=None, min_size=size["image_size"],
                           max_size=size["image_size"], fpn_channels=size["fpn"], roi_batch_size=size["roi"],
                           window_size=size["window"], global_blocks=size["global"])  # fmt: skip
    config["teacher"].update(smoothing="uniform", iterations=size["teacher_iters"], batch_size=2, warmup_iters=5,
                             checkpoint_period=1000)  # fmt: skip
    config["student"].update(iterations=size["student_iters"], labeled_batch_size=1, unlabeled_batch_size=1,
                             warmup_iters=2, checkpoint_period=1000, ema_decay=None, score_threshold=0.05)
    return config


def _seconds_per_iteration(metrics: Path) -> float:
    times = [json.loads(line)["time"] for line in metrics.read_text().splitlines() if '"time"' in line]
    return statistics.median(times) if times else float("nan")


def _peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def check_teacher(ctx: dict[str, Any]) -> dict[str, Any]:
    from stages.data.minilvis import make_minilvis
    from stages.modeling.teacher import train_teacher

    config, work, device = ctx["config"], ctx["work"], ctx["device"]
    data = work / "data"
    make_minilvis(config["minilvis"], 0, data)
    train_json = data / "train.json"
    n = len(json.loads(train_json.read_text())["categories"])
    np.save(work / "identity.npy", np.eye(n, dtype=np.float32))
    _reset_peak(device)
    start = time.perf_counter()
    train_teacher(copy.deepcopy(config), train_json, data / "images", work / "identity.npy", work / "teacher.pth",
                  work / "teacher_ckpt")
    ctx["teacher"] = work / "teacher.pth"
    return {"what": f"teacher, {config['teacher']['iterations']} iterations, batch 2, {config['model']['min_size']} px, "
                    f"{config['model']['timm_model']} windows {config['model']['window_size']}",
            "s/iter": _seconds_per_iteration(work / "teacher_ckpt" / "metrics.json"),
            "peak GPU GiB": _peak_gib(device), "wall s": time.perf_counter() - start}


def check_ddp(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch.distributed as dist
    from detectron2.utils.events import EventStorage

    from stages.modeling.build import build_detector, detectron2_config
    from stages.modeling.data import train_mapper
    from stages.modeling.distributed import _free_port

    config, device = ctx["config"], ctx["device"]
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", world_size=1, rank=0)
    try:
        probe = torch.ones(4, device=device)
        dist.all_reduce(probe)
        data = json.loads((ctx["work"] / "data" / "train.json").read_text())
        model = build_detector(detectron2_config(config, len(data["categories"]), solver=config["teacher"]))
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0] if device == "cuda" else None)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-4)
        from stages.data.lvis import dataset_dicts

        dicts = dataset_dicts(data, ctx["work"] / "data" / "images")[:2]
        batch = [train_mapper(config)(copy.deepcopy(d)) for d in dicts]
        steps = []
        with EventStorage():
            for _ in range(3):
                start = time.perf_counter()
                loss = sum(ddp(batch).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if device == "cuda":
                    torch.cuda.synchronize()
                steps.append(time.perf_counter() - start)
        return {"what": f"DDP over {backend.upper()}, world size 1: all-reduce {probe.sum().item():.0f}/4, 3 steps",
                "s/iter": statistics.median(steps[1:]), "peak GPU GiB": _peak_gib(device), "wall s": sum(steps)}
    finally:
        dist.destroy_process_group()


def check_student(ctx: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    from stages.modeling.student import train_student

    config, work, device = ctx["config"], ctx["work"], ctx["device"]
    data = json.loads((work / "data" / "train.json").read_text())
    cats = sorted(data["categories"], key=lambda c: c["id"])
    n = len(cats)
    pd.DataFrame({"category_id": [c["id"] for c in cats], "name": [c["name"] for c in cats],
                  "frequency": [c["frequency"] for c in cats], "n_detections": np.zeros(n, dtype=np.int64),
                  "accuracy": np.full(n, np.nan), "confidence": np.full(n, np.nan), "ccece": np.zeros(n),
                  "ccece_se": np.full(n, np.nan), "delta": np.full(n, 0.05)}).to_parquet(work / "ccece.parquet")
    _reset_peak(device)
    start = time.perf_counter()
    train_student(copy.deepcopy(config), "soft_corrected", work / "data" / "train.json", work / "data" / "pool.json",
                  work / "data" / "images", ctx["teacher"], work / "ccece.parquet", work / "student.pth",
                  work / "student_ckpt")
    return {"what": f"student (soft + correction), {config['student']['iterations']} iterations, 1 labeled + 1 unlabeled",
            "s/iter": _seconds_per_iteration(work / "student_ckpt" / "metrics.json"),
            "peak GPU GiB": _peak_gib(device), "wall s": time.perf_counter() - start}


def check_dinov2(ctx: dict[str, Any]) -> dict[str, Any]:
    size, device = ctx["size"], ctx["device"]
    hub = next((p for p in HUB_PLACES if (p / "hubconf.py").is_file()), None)
    if hub is None:
        return {"what": "DINOv2 embedding", "note": f"skipped: the DINOv2 hub code is not at {HUB_PLACES[0]}"}
    model = torch.hub.load(str(hub), size["hub_model"], source="local", pretrained=False).to(device).eval()
    rates = {}
    for dtype in ("fp32", "bf16") if device == "cuda" else ("fp32",):
        best = None
        for batch in size["batches"]:
            try:
                x = torch.rand(batch, 3, size["crop"], size["crop"], device=device)
                with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                    model(x)  # warm-up
                    if device == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    for _ in range(3):
                        model(x)
                    if device == "cuda":
                        torch.cuda.synchronize()
                best = (batch, 3 * batch / (time.perf_counter() - start))
            except torch.OutOfMemoryError:
                break
            finally:
                if device == "cuda":
                    torch.cuda.empty_cache()
        rates[dtype] = best
    text = ", ".join(f"{k}: {v[1]:.0f} img/s at batch {v[0]}" for k, v in rates.items() if v)
    return {"what": f"{size['hub_model']} (real hub code, random weights) at {size['crop']} px", "note": text,
            "img/s": max(v[1] for v in rates.values() if v)}


def check_faiss(ctx: dict[str, Any]) -> dict[str, Any]:
    try:
        import faiss
    except ImportError:
        return {"what": "GPU Faiss", "note": "faiss is not installed here (faiss-gpu wants CUDA 12 runtimes; "
                                             "this machine's torch is CUDA 13, so no wheel was carried)"}
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return {"what": "GPU Faiss", "note": f"faiss {faiss.__version__} has no GPU support or sees no GPU"}
    from stages.retrieval.index import build_index, search

    rng = np.random.default_rng(0)
    pool = rng.standard_normal((ctx["size"].get("pool", 200_000), 1024)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    start = time.perf_counter()
    index = build_index(pool, {"index": "flat", "use_gpu": True, "gpu_shard": True})
    search(index, pool[:2000], 64)
    return {"what": "GPU Faiss flat, 200k x 1024, 2,000 queries, k 64", "wall s": time.perf_counter() - start}


CHECKS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("a", check_teacher), ("b", check_ddp), ("c", check_student), ("d", check_dinov2), ("e", check_faiss)]


def environment(device: str) -> str:
    lines = [f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPU cores"]
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        lines.append(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
    return "; ".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry", action="store_true", help="the CPU dry mode: same code, tiny sizes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default="abcde", help="the parts to run, e.g. 'ad'")
    args = parser.parse_args(argv)
    device = "cpu" if args.dry else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on the GPU machine, or with --dry")
    size = DRY if args.dry else FULL
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ctx = {"device": device, "size": size, "work": work, "config": _config(size, device, work / "results")}
        for key, check in CHECKS:
            if key not in args.only:
                continue
            start = time.perf_counter()
            try:
                row = check(ctx)
            except Exception as exc:  # one failing part must not lose the others
                row = {"what": check.__name__, "note": f"FAILED: {type(exc).__name__}: {exc}"}
                traceback.print_exc()
            row.setdefault("wall s", time.perf_counter() - start)
            rows.append({"part": key, **row})
            print(json.dumps(rows[-1], default=str), flush=True)
    columns = ["part", "what", "s/iter", "peak GPU GiB", "img/s", "wall s", "note"]

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    mode = "CPU dry mode (tiny sizes)" if args.dry else "GPU"
    text = (f"# GPU check ({mode})\n\n`python -m benchmarks.gpu_check {' '.join(argv or sys.argv[1:])}`\n\n"
            f"{environment(device)}\n\n" + "\n".join(table) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 1 if any(str(r.get("note", "")).startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
