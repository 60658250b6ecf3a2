"""Teacher training on mini-LVIS: the loss decreases, a killed run resumes to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import identity_similarity, tiny_config, write_ccece


def _config_file(tmp_path: Path, **teacher) -> Path:
    config = tiny_config(tmp_path / "results")
    config["teacher"].update(smoothing="uniform", **teacher)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _teacher_cmd(repo, cfg, data: Path, out: Path, ckpt: Path) -> list[str]:
    return [sys.executable, "-m", "stages.cli.train_teacher", "--config", str(cfg), "--train-json", str(data / "train.json"),
            "--image-root", str(data / "images"), "--similarity",
            str(identity_similarity(out.parent / "identity.npy", data / "train.json")), "--out", str(out),
            "--checkpoint-dir", str(ckpt)]


def _kill_after_checkpoint(cmd: list[str], repo: Path, checkpoint: Path) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``checkpoint`` exists (a job killed mid-run)."""
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not checkpoint.exists():
        assert proc.poll() is None, "training ended before the checkpoints"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.fault_injection
@pytest.mark.slow
def test_killed_teacher_resumes_to_identical_weights(repo, tiny_minilvis, tmp_path):
    cfg = _config_file(tmp_path, iterations=30, checkpoint_period=5)
    subprocess.run(_teacher_cmd(repo, cfg, tiny_minilvis, tmp_path / "a.pth", tmp_path / "a"), cwd=repo, check=True,
                   capture_output=True)

    _kill_after_checkpoint(_teacher_cmd(repo, cfg, tiny_minilvis, tmp_path / "b.pth", tmp_path / "b"), repo,
                           tmp_path / "b" / "model_0000009.pth")
    assert not (tmp_path / "b.pth").exists()
    resumed = subprocess.run(_teacher_cmd(repo, cfg, tiny_minilvis, tmp_path / "b.pth", tmp_path / "b"), cwd=repo,
                             capture_output=True, text=True, check=True)
    assert "resuming from" in resumed.stdout + resumed.stderr
    a, b = _weights(tmp_path / "a.pth"), _weights(tmp_path / "b.pth")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_teacher_loss_decreases(repo, tiny_minilvis, tmp_path):
    cfg = _config_file(tmp_path, iterations=60, checkpoint_period=60, warmup_iters=5)
    subprocess.run(_teacher_cmd(repo, cfg, tiny_minilvis, tmp_path / "t.pth", tmp_path / "t"), cwd=repo, check=True,
                   capture_output=True)
    import json

    lines = [json.loads(x) for x in (tmp_path / "t" / "metrics.json").read_text().splitlines() if x.strip()]
    losses = [x["total_loss"] for x in lines if "total_loss" in x]
    assert len(losses) >= 3
    assert np.mean(losses[-1:]) < losses[0]


@pytest.mark.fault_injection
@pytest.mark.slow
def test_killed_student_with_ema_teacher_resumes_to_identical_weights(repo, tiny_minilvis, tmp_path):
    """The student's resumable state includes its EMA teacher: kill + resume = uninterrupted."""
    import json as _json

    config = tiny_config(tmp_path / "results")
    config["teacher"].update(iterations=6, checkpoint_period=6)
    config["student"].update(iterations=24, checkpoint_period=4, ema_decay=0.9, score_threshold=0.05)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    teacher = tmp_path / "teacher.pth"
    subprocess.run(_teacher_cmd(repo, cfg, tiny_minilvis, teacher, tmp_path / "t"), cwd=repo, check=True,
                   capture_output=True)
    data = _json.loads((tiny_minilvis / "train.json").read_text())
    ccece = write_ccece(tmp_path / "ccece.parquet", data["categories"], np.linspace(-0.1, 0.2, len(data["categories"])))
    unlabeled = tmp_path / "unlabeled.json"
    unlabeled.write_text(_json.dumps({"images": data["images"][:10], "categories": data["categories"]}))

    def cmd(name: str) -> list[str]:
        return [sys.executable, "-m", "stages.cli.train_student", "--config", str(cfg), "--variant", "soft_corrected",
                "--labeled-json", str(tiny_minilvis / "train.json"), "--unlabeled-json", str(unlabeled),
                "--image-root", str(tiny_minilvis / "images"), "--teacher", str(teacher), "--ccece", str(ccece),
                "--out", str(tmp_path / f"{name}.pth"), "--checkpoint-dir", str(tmp_path / name)]

    subprocess.run(cmd("a"), cwd=repo, check=True, capture_output=True)
    _kill_after_checkpoint(cmd("b"), repo, tmp_path / "b" / "model_0000011.pth")
    subprocess.run(cmd("b"), cwd=repo, check=True, capture_output=True)
    a, b = _weights(tmp_path / "a.pth"), _weights(tmp_path / "b.pth")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # the EMA teacher is part of each checkpoint
    last = torch.load(tmp_path / "b" / "model_final.pth", map_location="cpu", weights_only=True)
    assert "teacher" in last


@pytest.mark.slow
def test_teacher_checkpoint_carries_the_configured_targets(tiny_minilvis, tmp_path):
    """The teacher's class targets are eq. (3) of its smoothing, eps and S'; another eps, other targets."""
    import copy

    from stages.core.smoothing import smoothed_targets
    from stages.modeling.teacher import train_teacher

    train_json = tiny_minilvis / "train.json"
    num_classes = len(json.loads(train_json.read_text())["categories"])
    sprime = np.random.default_rng(0).dirichlet(np.ones(num_classes), size=num_classes).astype(np.float32)
    np.save(tmp_path / "s.npy", sprime)
    config = tiny_config(tmp_path / "results")
    config["teacher"].update(smoothing="similarity_frequency", iterations=1, warmup_iters=0)
    targets = {}
    for eps in (0.1, 0.3):
        config["teacher"]["eps"] = eps
        out = tmp_path / f"teacher_{eps}.pth"
        train_teacher(copy.deepcopy(config), train_json, tiny_minilvis / "images", tmp_path / "s.npy", out,
                      tmp_path / f"ckpt_{eps}")
        targets[eps] = _weights(out)["roi_heads.class_targets"].numpy()
        np.testing.assert_array_equal(targets[eps], smoothed_targets("similarity_frequency", sprime, eps))
    assert not np.allclose(targets[0.1], targets[0.3])


def test_a_saved_checkpoint_has_the_same_bytes_for_the_same_tensors(tmp_path):
    """Reproducibility checks compare artifacts by hash: two saves of equal weights must not
    differ by the atomic writer's random temporary name (torch.save stores the path's stem)."""
    from stages.modeling.training import save_torch_file

    data = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "iteration": 5}
    paths = [tmp_path / "a" / "model_final.pth", tmp_path / "b" / "model_final.pth"]
    for path in paths:
        save_torch_file(data, path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    loaded = torch.load(paths[0], weights_only=True)
    assert torch.equal(loaded["model"]["w"], data["model"]["w"]) and loaded["iteration"] == 5
    assert list((tmp_path / "a").iterdir()) == [paths[0]]  # no temporary file left behind


def test_event_storage_goes_to_metrics_json_and_tensorboard(tmp_path: Path) -> None:
    """The trainer's writers: every WRITE_PERIOD iterations, the storage's losses and lr as one line of
    metrics.json and as TensorBoard scalars (read back with TensorBoard's own reader)."""
    from detectron2.utils.events import EventStorage
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from stages.modeling.training import WRITE_PERIOD, metric_writers

    [hook] = metric_writers(tmp_path, max_iter=2 * WRITE_PERIOD)
    with EventStorage(0) as storage:
        for it in range(2 * WRITE_PERIOD):
            storage.iter = it
            storage.put_scalar("total_loss", 10.0 - it)  # smoothing hint: median of the last 20
            storage.put_scalar("lr", 0.01, smoothing_hint=False)
            if (it + 1) % WRITE_PERIOD == 0:
                for writer in hook._writers:
                    writer.write()
        for writer in hook._writers:
            writer.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [WRITE_PERIOD - 1, 2 * WRITE_PERIOD - 1]
    assert lines[0]["total_loss"] == pytest.approx(float(np.median(10.0 - np.arange(WRITE_PERIOD))))
    [events] = list(tmp_path.glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert {"total_loss", "lr"} <= set(accumulator.Tags()["scalars"])
    assert [e.step for e in accumulator.Scalars("total_loss")] == [x["iteration"] for x in lines]
    assert [e.value for e in accumulator.Scalars("total_loss")] == pytest.approx([x["total_loss"] for x in lines])
