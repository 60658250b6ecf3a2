"""Fault injection, runs: a job killed mid-write, a full disk, non-finite numbers, a damaged checkpoint.
Each must end with a clear error naming the place, or with nothing half-done left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stages.data.lvis import category_order, load_lvis
from tests.conftest import REPO, tiny_config

pytestmark = pytest.mark.fault_injection


def test_artifact_killed_mid_write_leaves_no_artifact(tmp_path: Path) -> None:
    target = tmp_path / "big.npy"
    writer = textwrap.dedent(f"""
        import numpy as np
        from stages.utils.atomic import write_npy
        write_npy(np.ones((64, 1024, 1024), dtype=np.float32), {str(target)!r})  # 256 MiB
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=REPO)
    deadline = time.time() + 120
    while not any(p.stat().st_size > 0 for p in tmp_path.glob(".big.npy.*")):  # the write has begun
        assert proc.poll() is None and time.time() < deadline, "the writer ended before it could be killed"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()  # the only name a later run (or Snakemake) would take for complete
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".big.npy.") and ".tmp" in p.name for p in leftovers)


def _in_full_filesystem(script: str, tmp_path: Path, size: str = "512k") -> dict:
    """Run python ``script`` with DIR = a private tmpfs of ``size`` (a real ENOSPC, in a mount
    namespace so nothing is mounted outside the test); the script prints a json result."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux unshare is not installed")
    ns = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-rm"]
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "script.py").write_text(script)
    cmd = ns + ["sh", "-c", f'mount -t tmpfs -o size={size} none "{disk}" && exec "{sys.executable}" "{tmp_path / "script.py"}" "{disk}"']
    probe = subprocess.run(ns + ["sh", "-c", f'mount -t tmpfs -o size=64k none "{disk}"'], capture_output=True)
    if probe.returncode:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {probe.stderr.decode().strip()}")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_full_disk_on_an_atomic_write_leaves_nothing(tmp_path: Path) -> None:
    result = _in_full_filesystem(textwrap.dedent("""
        import json, sys
        from pathlib import Path
        import numpy as np
        from stages.utils.atomic import write_npy, write_json
        disk = Path(sys.argv[1])
        write_json({"small": 1}, disk / "small.json")
        try:
            write_npy(np.ones(1 << 20, dtype=np.float32), disk / "big.npy")  # 4 MiB into 512 KiB
            error = None
        except OSError as exc:
            error = str(exc)
        print(json.dumps({"error": error, "left": sorted(p.name for p in disk.iterdir())}))
    """), tmp_path)
    assert "big.npy: could not be written" in result["error"] and "No space left on device" in result["error"]
    assert result["left"] == ["small.json"]  # no partial big.npy, no temporary file


def test_full_disk_during_a_stage_is_a_clear_error_and_leaves_no_json(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "results")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    result = _in_full_filesystem(textwrap.dedent(f"""
        import json, subprocess, sys
        from pathlib import Path
        disk = Path(sys.argv[1])
        done = subprocess.run([sys.executable, "-m", "stages.cli.make_minilvis", "--config", {str(tmp_path / "cfg.yaml")!r},
                               "--out", str(disk / "data")], capture_output=True, text=True)
        jsons = {{p.name: p.stat().st_size for p in disk.rglob("*.json")}}
        print(json.dumps({{"rc": done.returncode, "stderr": done.stderr[-2000:], "jsons": jsons}}))
    """), tmp_path, size="256k")
    assert result["rc"] != 0
    assert "No space left on device" in result["stderr"]
    assert result["jsons"] == {}  # train/val/pool.json are written last, atomically: none is half there


def test_non_finite_loss_stops_training_naming_iteration_and_loss() -> None:
    from stages.modeling.training import SeededTrainer

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            return {"loss_cls": self.w.sum() * batch, "loss_box_reg": self.w.sum()}

    model = Broken().train()
    batches = iter([torch.tensor(1.0), torch.tensor(1.0), torch.tensor(float("nan"))])
    trainer = SeededTrainer(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), seed=0,
                            loss_fn=model)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at iteration 2: \{'loss_cls': nan\}"):
        trainer.train(0, 3)


@pytest.fixture(scope="module")
def tiny_detector(tiny_minilvis: Path, tmp_path_factory):
    from stages.modeling.build import build_detector, detectron2_config

    config = tiny_config(tmp_path_factory.mktemp("det") / "results")
    data = load_lvis(tiny_minilvis / "val.json")
    cfg = detectron2_config(config, len(data["categories"]), solver=config["teacher"])
    return config, data, build_detector(cfg).eval()


def test_nan_weights_stop_prediction_naming_the_images(tiny_minilvis: Path, tiny_detector) -> None:
    from stages.modeling.predictor import predict

    config, data, model = tiny_detector
    images = sorted(data["images"], key=lambda img: img["id"])[:2]
    ids = [c["id"] for c in category_order(data)]
    assert isinstance(predict(model, config, images, tiny_minilvis / "images", ids), list)  # healthy: no error
    broken = {name: p.detach().clone() for name, p in model.named_parameters() if "cls_score" in name}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cls_score" in name:
                p.fill_(float("nan"))
    try:
        with pytest.raises(FloatingPointError, match=rf"predict, images \[{images[0]['id']}, {images[1]['id']}\]: "
                                                     r"non-finite box or class score"):  # fmt: skip
            predict(model, config, images, tiny_minilvis / "images", ids)
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in broken:
                    p.copy_(broken[name])


def test_damaged_checkpoint_is_named_with_how_to_resume(tmp_path: Path) -> None:
    from stages.modeling.training import AtomicCheckpointer

    model = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(model, str(tmp_path), save_to_disk=True)
    checkpointer.save("model_0000009")
    checkpointer.save("model_0000019")
    (tmp_path / "model_0000019.pth").write_bytes((tmp_path / "model_0000019.pth").read_bytes()[:100])
    with pytest.raises(RuntimeError, match=r"model_0000019\.pth cannot be loaded.*last_checkpoint"):
        AtomicCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")  # what the message says to do
    assert AtomicCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True) == {}


def test_checkpoints_are_never_unpickled(tmp_path: Path) -> None:
    from stages.modeling.training import AtomicCheckpointer

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"model": {}, "payload": Payload()}, tmp_path / "model_0000001.pth")
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    with pytest.raises(RuntimeError, match="cannot be loaded"):
        AtomicCheckpointer(torch.nn.Linear(2, 2), str(tmp_path)).resume_or_load("", resume=True)
    assert not (tmp_path / "pwned").exists()


def test_nan_in_a_ccece_table_stops_the_student(tmp_path: Path) -> None:
    import pandas as pd

    from stages.data.artifacts import read_delta

    categories = [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b", "frequency": "f"}]
    frame = pd.DataFrame({"category_id": [1, 2], "name": ["a", "b"], "frequency": ["r", "f"], "n_detections": [3, 0],
                          "accuracy": [0.5, np.nan], "confidence": [0.4, np.nan], "ccece": [0.1, np.nan],
                          "ccece_se": [0.1, np.nan], "delta": [0.1, np.nan]})  # fmt: skip
    frame.to_parquet(tmp_path / "ccece.parquet")
    with pytest.raises(ValueError, match=r"ccece\.parquet.*(NaN|non-finite)"):
        read_delta(tmp_path / "ccece.parquet", categories)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_artifacts_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    from stages.utils.atomic import write_json, write_npy

    old = os.umask(umask)
    try:
        write_json({"a": 1}, tmp_path / "a.json")
        write_npy(np.zeros(3), tmp_path / "a.npy")
    finally:
        os.umask(old)
    for name in ("a.json", "a.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


@pytest.mark.fault_injection
def test_a_second_trainer_on_the_same_checkpoints_refuses_naming_the_first(tmp_path: Path) -> None:
    """Two processes: the first holds the checkpoint directory's lock; the second refuses, naming the
    first one's PID; once the first is killed, the kernel has released the lock and a third starts."""
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys, time\n"
              "from stages.modeling.training import prepare_checkpoint_dir\n"
              "prepare_checkpoint_dir(sys.argv[1], {'run': 1})\n"
              "print('holding', flush=True)\n"
              "time.sleep(float(sys.argv[2]))\n")  # fmt: skip
    ckpt = tmp_path / "checkpoints"
    first = subprocess.Popen([sys.executable, "-c", script, str(ckpt), "120"], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "holding"
        second = subprocess.run([sys.executable, "-c", script, str(ckpt), "0"], capture_output=True, text=True,
                                timeout=120)
        assert second.returncode != 0
        assert f"in use by another process (PID {first.pid}" in second.stderr
        assert str(ckpt) in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    deadline = time.time() + 30
    third = subprocess.run([sys.executable, "-c", script, str(ckpt), "0"], capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and time.time() < deadline, third.stderr[-2000:]


@pytest.mark.fault_injection
def test_a_checkpoint_write_killed_part_way_leaves_no_temporary_once_the_directory_is_written_again(tmp_path: Path
                                                                                                   ) -> None:
    """Before: kill -9 during a checkpoint write left .model_*.pth.<random>.tmp.pth (10.8 MB, mode 0600)
    in the checkpoint directory for ever. A live writer's temporary file is left alone."""
    from stages.modeling.training import save_torch_file

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    killed = textwrap.dedent(f"""
        import torch
        from stages.modeling.training import save_torch_file
        save_torch_file({{"model": torch.ones(64, 1024, 1024)}}, {str(ckpt / "model_0000005.pth")!r})  # 256 MiB
    """)
    proc = subprocess.Popen([sys.executable, "-c", killed], cwd=REPO)
    deadline = time.time() + 120
    while not any(p.stat().st_size > 0 for p in ckpt.glob(".model_0000005.pth.*")):  # the write has begun
        assert proc.poll() is None and time.time() < deadline, "the writer ended before it could be killed"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = [p.name for p in ckpt.iterdir()]
    assert len(left) == 1 and left[0].startswith(".model_0000005.pth.") and left[0].endswith(".tmp.pth")
    live = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from stages.utils.atomic import atomic_path
        with atomic_path({str(ckpt / "last_checkpoint")!r}) as tmp:
            tmp.write_text("model_0000010.pth")
            print("writing", flush=True)
            time.sleep(120)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "writing"
        save_torch_file({"model": torch.zeros(3)}, ckpt / "model_0000010.pth")  # the resumed run's next checkpoint
        names = sorted(p.name for p in ckpt.iterdir())
        assert "model_0000010.pth" in names and not any(n.startswith(".model_0000005.pth.") for n in names)
        assert any(n.startswith(".last_checkpoint.") for n in names)  # the live writer's file stays
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    save_torch_file({"model": torch.zeros(3)}, ckpt / "model_0000015.pth")
    assert sorted(p.name for p in ckpt.iterdir()) == ["model_0000010.pth", "model_0000015.pth"]
