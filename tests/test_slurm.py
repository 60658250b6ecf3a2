"""The tiny DAG through `snakemake --profile slurm` on a real single-node Slurm (Debian's packages).

GPU rules (teacher and student training) must be submitted with sbatch and get a GPU from the
gres; light rules (resources.local_rules) must run on the submitting machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config
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
                           "--jobs", "2", "--slurm-keep-successful-logs"], cwd=repo, capture_output=True, text=True, timeout=2400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    run = Path(config["results_dir"]) / "slurm"
    assert (run / "report" / "table1.md").exists()
    # Submitted jobs leave their Slurm logs per rule; local rules do not.
    slurm_logs = repo / ".snakemake" / "slurm_logs"
    submitted = {p.name.removeprefix("rule_") for p in slurm_logs.iterdir()} if slurm_logs.exists() else set()
    assert {"train_teacher", "train_student"} <= submitted, submitted
    assert not submitted & {"make_minilvis", "split", "similarity", "ccece", "report"}, submitted
    # the training jobs ran inside Slurm jobs and saw the GPU their gres gave them, as on a cluster
    for log in ("train_teacher_train85.log", "train_student_soft_corrected.log"):
        text = (run / "logs" / log).read_text()
        assert "SLURM_JOB_ID=" in text and "CUDA_VISIBLE_DEVICES=0" in text, text[-2000:]
