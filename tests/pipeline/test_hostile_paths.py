"""Nothing from a config reaches a shell unquoted: a results directory full of shell syntax is a
directory like any other, and the Slurm job of a hostile gres shows it quoted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_config

HOSTILE = "res 2 || touch pwned1 #; touch pwned2 $(touch pwned3) `touch pwned4` 'q' \"d\" & x"


@pytest.mark.fault_injection
@pytest.mark.slow
def test_a_results_dir_full_of_shell_syntax_is_just_a_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    results = work / HOSTILE
    config = tiny_config(results)
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(config))
    run = results / config["run"]
    targets = [run / "split" / "train85.json", run / "prototypes" / "train85" / "similarity.npy"]
    done = subprocess.run([sys.executable, "-m", "snakemake", *map(str, targets), "--cores", "2", "--configfile",
                           str(path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    for target in targets:
        assert target.is_file(), target
    assert (run / "data" / "images" / "train").is_dir()  # image_root under the hostile directory
    assert (run / "logs" / "split.log").read_text().startswith("split:")  # the log went where named
    executed = [p for root in (REPO, tmp_path, work, Path.cwd()) for p in root.glob("pwned*")]
    assert not executed, executed


@pytest.mark.fault_injection
def test_a_hostile_gres_is_quoted_in_the_srun_line(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "configs" / "lvis.yaml").read_text())
    config["resources"]["rules"]["train_teacher"]["gres"] = "gpu:8; touch pwned"
    path = tmp_path / "gres.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "snakemake", "all", "-n", "-p", "--profile", "slurm", "--configfile",
                           str(path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "--gres='gpu:8; touch pwned' " in out
    assert "--gres=gpu:8; touch" not in out
