"""The tiny DAG through `snakemake --profile slurm` on a real single-node Slurm (Debian's packages).

GPU rules (teacher and student training) must be submitted with sbatch and get a GPU from the
gres; light rules (resources.local_rules) must run on the submitting machine.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import identity_similarity, tiny_config
from tests.slurm_cluster import LocalSlurm

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm():
    cluster = LocalSlurm()
    cluster.start()
    yield cluster
    cluster.stop()


def test_tiny_dag_through_slurm_profile(repo, slurm, tmp_path):
    config = tiny_config(tmp_path / "results", run="slurm")
    config["num_threads"] = 1
    config["student"]["variants"] = ["soft_corrected"]
    gpu = {"gres": "gpu:1", "runtime": 20, "mem_mb": 2000, "cpus_per_task": 1}
    config["resources"] = {
        "default": {"runtime": 20, "mem_mb": 2000, "cpus_per_task": 1, "slurm_partition": "debug"},
        "rules": {"train_teacher": gpu, "train_student": gpu},
        "local_rules": ["make_minilvis", "split", "similarity", "ccece", "report"],
    }
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "all", "--profile", "slurm", "--configfile", str(cfg),
                           "--jobs", "2", "--slurm-keep-successful-logs", "--slurm-logdir", str(tmp_path / "slurm_logs")],
                          cwd=repo, capture_output=True, text=True, timeout=2400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    run = Path(config["results_dir"]) / "slurm"
    assert (run / "report" / "val" / "table1.md").exists()
    # Submitted jobs leave their Slurm logs per rule; local rules do not.
    slurm_logs = tmp_path / "slurm_logs"
    submitted = {p.name.removeprefix("rule_") for p in slurm_logs.iterdir()} if slurm_logs.exists() else set()
    assert {"train_teacher", "train_student"} <= submitted, submitted
    assert not submitted & {"make_minilvis", "split", "similarity", "ccece", "report"}, submitted
    # the training jobs ran inside Slurm jobs and saw the GPU their gres gave them, as on a cluster
    for log in ("train_teacher_train85.log", "train_student_soft_corrected.log"):
        text = (run / "logs" / log).read_text()
        assert "SLURM_JOB_ID=" in text and "CUDA_VISIBLE_DEVICES=0" in text, text[-2000:]


def test_teacher_on_two_nodes_through_slurm_profile(repo, slurm, tmp_path):
    """distributed.teacher_machines: 2 -> one Slurm job on both nodes, one task per node started by
    the rule's srun, the two processes meet at the first node's address and train one model."""
    import socket

    import torch

    config = tiny_config(tmp_path / "results", run="twonodes")
    config["num_threads"] = 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config["distributed"].update(processes_per_machine=1, teacher_machines=2, port=port)
    config["teacher"].update(iterations=6, batch_size=2, checkpoint_period=3)
    config["resources"] = {
        "default": {"runtime": 20, "mem_mb": 2000, "cpus_per_task": 1, "slurm_partition": "debug"},
        "rules": {"train_teacher": {"gres": "gpu:1"}},
        "local_rules": ["make_minilvis", "split", "prototypes", "similarity"],
    }
    cfg = tmp_path / "twonodes.yaml"
    cfg.write_text(yaml.safe_dump(config))
    run = Path(config["results_dir"]) / "twonodes"
    target = run / "teacher" / "train85" / "model_final.pth"
    proc = subprocess.run([sys.executable, "-m", "snakemake", str(target), "--profile", "slurm", "--configfile",
                           str(cfg), "--jobs", "2", "--slurm-logdir", str(tmp_path / "slurm_logs")],
                          cwd=repo, capture_output=True, text=True, timeout=1200)  # fmt: skip
    log = (run / "logs" / "train_teacher_train85.log")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:] + (log.read_text()[-3000:] if log.exists() else "")
    assert f"launching 2 x 1 processes (cpu, tcp://127.0.0.1:{port})" in log.read_text()
    checkpoints = run / "teacher" / "train85" / "checkpoints"
    assert "SLURMD_NODENAME=node1" in (checkpoints / "log.txt").read_text()
    assert "SLURMD_NODENAME=node2" in (checkpoints / "log.txt.rank1").read_text()  # rank 1 ran on the other node
    state = torch.load(target, map_location="cpu", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.fault_injection
def test_requeued_training_job_resumes_from_its_checkpoint(repo, slurm, tiny_minilvis, tmp_path):
    """A preempted (requeued) Slurm training job restarts, resumes from its last checkpoint and
    ends with the weights of an uninterrupted run."""
    import time

    import torch

    config = tiny_config(tmp_path / "results")
    config["num_threads"] = 1
    config["teacher"].update(iterations=40, checkpoint_period=5, smoothing="uniform")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    similarity = identity_similarity(tmp_path / "similarity.npy", tiny_minilvis / "train.json")

    def command(name: str) -> str:
        return shlex.join([sys.executable, "-m", "stages.cli.train_teacher", "--config", str(cfg),
                           "--train-json", str(tiny_minilvis / "train.json"), "--image-root", str(tiny_minilvis / "images"),
                           "--similarity", str(similarity), "--out", f"{tmp_path / name}.pth",
                           "--checkpoint-dir", str(tmp_path / name)])

    subprocess.run(command("direct"), shell=True, cwd=repo, check=True, capture_output=True)
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\ncd {shlex.quote(str(repo))}\n{command('requeued')}\n")
    job = subprocess.run(["sbatch", "--parsable", "--requeue", "-c", "1", "-o", str(tmp_path / "job-%j.out"),
                          str(script)], check=True, capture_output=True, text=True).stdout.strip()
    deadline = time.time() + 300
    while not (tmp_path / "requeued" / "model_0000014.pth").exists():
        assert time.time() < deadline, "no checkpoint from the Slurm job"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
    while not (tmp_path / "requeued.pth").exists():
        assert time.time() < deadline + 300, "the requeued job did not finish"
        time.sleep(0.5)
    log = (tmp_path / "requeued" / "log.txt").read_text()
    assert "resuming from" in log
    a = torch.load(tmp_path / "direct.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "requeued.pth", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
