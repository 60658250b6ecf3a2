"""The evaluation benchmark runs end to end at a tiny size: its three evaluators (LVISEval,
faster-coco-eval's LVIS mode, the fast path) agree, and the table it writes has every row and its
memory columns. Timings are not asserted: benchmarks/lvis_eval.md holds the measured ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_bench_lvis_eval_runs_and_the_evaluators_agree(tmp_path, iou_type):
    out = tmp_path / "lvis_eval.md"
    # --official-images below --images: the fast path also runs on all images, as at LVIS scale
    cmd = [sys.executable, "benchmarks/bench_lvis_eval.py", "--iou-type", iou_type, "--images", "16",
           "--official-images", "12", "--per-image", "40", "--profile", "3", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = out.read_text()
    section = text[text.index(f"<!-- {iou_type}:begin -->"):text.index(f"<!-- {iou_type}:end -->")]
    assert "Agreement within 1e-4 / 1e-6: **True**" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| evaluator")]
    names = [row.split("|")[1].strip() for row in rows if not row.startswith("|---")]
    assert names[:3] == ["official LVISEval", "fast", "faster-coco-eval 1.8 (LVIS mode)"]
    assert "fast" in names[3:] and any(n.startswith("official, linear extrapolation") for n in names)
    # all images once more in a process of its own, from the detections as a parquet table
    assert "fast, own process, detections from a parquet table" in names
    # faster-coco-eval's AP values agree with LVISEval's, and every run reports its memory
    peer = next(row for row in rows if row.startswith("| faster-coco-eval"))
    assert float(peer.split("|")[6].split()[0]) < 1e-4
    for row in rows[:3]:
        held, peak = (float(re.match(r"\s*([\d.]+)", cell).group(1)) for cell in row.split("|")[8:10])
        assert 0 < held <= peak + 0.05
    assert "Where the fast path's time goes" in section and "fast_lvis_eval" in section
