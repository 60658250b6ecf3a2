"""Two training jobs at 1 torch thread each against one job at 2 threads, on 2 CPU cores, side by side.

Snakemake runs ``--cores 2`` as one job at a time when every training rule declares
``threads: num_threads`` = 2, and as two jobs at once with ``--config num_threads=1``. The sweeps
with many independent teachers (``snakemake seeds``, ``snakemake fig2``) can run either way; which
finishes sooner depends on how well one iteration uses the second core (parts of it, such as
torchvision's CPU roi_align backward and the data mapper, run on one thread). This measures it on a
finished run of the default: the same teacher iterations (``bench_detector_cost.seconds_per_iteration``)

- in one process at 2 threads;
- in two processes at once, at 1 thread each;

and writes the teacher iterations per second of each, and their ratio, as a markdown table.

    .venv/bin/python -m benchmarks.bench_parallel_jobs --run results/default --out benchmarks/parallel_jobs.md
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import queue
import time
from pathlib import Path

import yaml

from benchmarks.bench_detector_cost import seconds_per_iteration
from stages.utils.device import configure_torch


def _job(config: dict, run: str, iterations: int, warmup: int, threads: int, barrier, out) -> None:
    configure_torch(threads, "cpu")
    # every job builds its model and warms up first; the timed stretches start together
    out.put(seconds_per_iteration(config, Path(run), iterations, warmup, on_warm=barrier.wait))


def iterations_per_second(config: dict, run: Path, iterations: int, warmup: int, jobs: int, threads: int) -> list[float]:
    """Each of ``jobs`` concurrent processes' teacher iterations per second, at ``threads`` each.
    RuntimeError if a job dies (its exit code)."""
    context = mp.get_context("spawn")
    barrier, out = context.Barrier(jobs, timeout=1800), context.Queue()
    processes = [context.Process(target=_job, args=(config, str(run), iterations, warmup, threads, barrier, out))
                 for _ in range(jobs)]
    for process in processes:
        process.start()
    results = []
    for _ in processes:
        try:
            results.append(1.0 / out.get(timeout=3600))
        except queue.Empty:
            codes = [p.exitcode for p in processes]
            raise RuntimeError(f"a benchmark job produced no result (exit codes {codes})") from None
    for process in processes:
        process.join()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("results/default"))
    parser.add_argument("--config", type=Path, help="the run's config (default: <run>/config/train_teacher.yaml)")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/parallel_jobs.md"))
    args = parser.parse_args(argv)
    config = yaml.safe_load((args.config or args.run / "config" / "train_teacher.yaml").read_text())
    config["device"] = "cpu"
    started = time.perf_counter()
    one = iterations_per_second(config, args.run, args.iterations, args.warmup, jobs=1, threads=2)
    two = iterations_per_second(config, args.run, args.iterations, args.warmup, jobs=2, threads=1)
    total_one, total_two = sum(one), sum(two)
    lines = [
        f"# One training job at 2 threads against two at 1 thread each ({os.cpu_count()} CPU cores)", "",
        f"`python -m benchmarks.bench_parallel_jobs --run {args.run} --iterations {args.iterations}` on "
        f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}: teacher iterations of the "
        f"default (batch {config['teacher']['batch_size']}, roi batch {config['model']['roi_batch_size']}), "
        f"{args.iterations} timed per job after {args.warmup} warm-up iterations, the jobs' timed stretches started "
        f"together; {time.perf_counter() - started:.0f} s in all.", "",
        "| jobs x threads | iterations/s per job | iterations/s in all | ratio to 1 x 2 |",
        "|---|---|---|---|",
        f"| 1 x 2 | {one[0]:.3f} | {total_one:.3f} | 1.00 |",
        f"| 2 x 1 | {', '.join(f'{v:.3f}' for v in two)} | {total_two:.3f} | {total_two / total_one:.2f} |",
        "",
        ("Two jobs at once are faster: `snakemake --cores 2 --config num_threads=1 -- seeds` finishes the independent"
         " teachers of `seeds` and `fig2` sooner than the default's one job at 2 threads." if total_two > total_one else
         "One job at 2 threads is as fast or faster: keep `num_threads: 2` for `seeds` and `fig2`."), "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
