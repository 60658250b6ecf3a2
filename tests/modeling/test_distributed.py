"""The distributed path on CPU: two gloo processes train one teacher (DDP), as N GPUs would."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from stages.modeling.distributed import world
from tests.conftest import identity_similarity, tiny_config


def test_world_is_explicit():
    cfg = {"processes_per_machine": 2, "teacher_machines": 1, "student_machines": 1, "dist_url": "auto", "port": 29500}
    per_machine, machines, rank, url = world(cfg, "teacher")
    assert (per_machine, machines, rank) == (2, 1, 0) and url.startswith("tcp://127.0.0.1:")
    with pytest.raises(RuntimeError, match="teacher_machines=2"):
        world(cfg | {"teacher_machines": 2}, "teacher")


@pytest.mark.slow
def test_two_process_gloo_teacher(repo, tiny_minilvis, tmp_path):
    config = tiny_config(tmp_path / "results")
    config["distributed"] = {"processes_per_machine": 2, "teacher_machines": 1, "student_machines": 1,
                             "dist_url": "auto", "port": 29500}
    config["num_threads"] = 1
    config["teacher"].update(smoothing="uniform", iterations=8, batch_size=4, checkpoint_period=4)
    # every batch must split over the 2 processes (validate_config refuses the config otherwise)
    config["student"].update(labeled_batch_size=2, unlabeled_batch_size=2)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out, ckpt = tmp_path / "teacher.pth", tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, "-m", "stages.cli.train_teacher", "--config", str(cfg),
                           "--train-json", str(tiny_minilvis / "train.json"), "--image-root",
                           str(tiny_minilvis / "images"), "--similarity",
                           str(identity_similarity(tmp_path / "identity.npy", tiny_minilvis / "train.json")), "--out", str(out),
                           "--checkpoint-dir", str(ckpt)], cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "launching 1 x 2 processes (cpu" in proc.stdout + proc.stderr
    state = torch.load(out, map_location="cpu", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # one writer: the main process's checkpoints and log; each rank's own log file
    assert sorted(p.name for p in ckpt.glob("model_*.pth")) == ["model_0000003.pth", "model_0000007.pth", "model_final.pth"]
    assert (ckpt / "log.txt").exists() and (ckpt / "log.txt.rank1").exists()
