"""Evaluation sets (evaluation.sets): a set's json checked and matched to the training categories,
the detector's class order from its training set, and a new or changed set rerunning only its own
jobs in the DAG."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.data.evalsets import check_same_categories, import_evalset, match_categories
from stages.data.lvis import DatasetError, load_lvis
from tests.conftest import REPO, tiny_config

CHECKS = {"on_invalid": "fail", "image_check": "header", "allow_paths_outside_image_root": False}


def _sets(tiny_minilvis: Path) -> tuple[dict, dict]:
    return load_lvis(tiny_minilvis / "train.json"), load_lvis(tiny_minilvis / "val.json")


def _renumbered(data: dict, offset: int, reverse: bool = False) -> dict:
    """The same set with every category id moved by ``offset`` (and, with ``reverse``, the ids
    handed out in the reverse name order), as a json numbered otherwise would be."""
    out = copy.deepcopy(data)
    ids = sorted(c["id"] for c in out["categories"])
    new = dict(zip(ids, [offset + i for i in (reversed(ids) if reverse else ids)]))
    for cat in out["categories"]:
        cat["id"] = new[cat["id"]]
        cat.pop("frequency", None)  # a foreign json need not carry LVIS's frequency groups
    for ann in out["annotations"]:
        ann["category_id"] = new[ann["category_id"]]
    for img in out["images"]:
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            img[key] = [new[c] for c in img.get(key, [])]
    return out


def test_a_set_with_the_training_categories_is_imported_with_the_train_frequencies(tiny_minilvis: Path) -> None:
    train, val = _sets(tiny_minilvis)
    data, report = import_evalset(tiny_minilvis / "val.json", tiny_minilvis / "images", train, "train.json",
                                  tiny_minilvis / "images", "same", CHECKS, 1)
    assert report.empty
    assert data["categories"] == train["categories"]
    assert data["annotations"] == val["annotations"] and data["images"] == val["images"]


def test_other_categories_are_refused_naming_both_files_or_matched_by_name(tiny_minilvis: Path, tmp_path: Path) -> None:
    train, val = _sets(tiny_minilvis)
    foreign = _renumbered(val, 1000, reverse=True)
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(foreign))
    with pytest.raises(DatasetError) as err:
        import_evalset(path, tiny_minilvis / "images", train, "train.json", tiny_minilvis / "images", "same", CHECKS, 1)
    message = str(err.value)
    assert str(path) in message and "train.json" in message and "by_name" in message
    assert f"ids only in {path}: [1001, 1002" in message and "ids only in train.json: [1, 2" in message

    data, _ = import_evalset(path, tiny_minilvis / "images", train, "train.json", tiny_minilvis / "images", "by_name",
                             CHECKS, 1)
    # every annotation is back on the training id of its category's name, as in the original val
    assert [a["category_id"] for a in data["annotations"]] == [a["category_id"] for a in val["annotations"]]
    assert [i.get("neg_category_ids", []) for i in data["images"]] == [i.get("neg_category_ids", []) for i in val["images"]]
    assert data["categories"] == train["categories"]

    renamed = copy.deepcopy(val)
    renamed["categories"][0]["name"] = "no such class"
    with pytest.raises(DatasetError, match="names only in .*'no such class'"):
        match_categories(renamed, train, "renamed.json", "train.json", "by_name")


def test_a_set_holding_a_training_image_is_refused(tiny_minilvis: Path, tmp_path: Path) -> None:
    train, val = _sets(tiny_minilvis)
    leaky = copy.deepcopy(val)
    leaky["images"][0]["file_name"] = train["images"][0]["file_name"]
    path = tmp_path / "leaky.json"
    path.write_text(json.dumps(leaky))
    with pytest.raises(DatasetError, match="is in the train set \\(leakage\\)"):
        import_evalset(path, tiny_minilvis / "images", train, "train.json", tiny_minilvis / "images", "same",
                       {**CHECKS, "on_invalid": "skip"}, 1)


def test_predictions_refuse_a_json_with_other_categories_than_the_detector() -> None:
    data = {"categories": [{"id": 1}, {"id": 2}, {"id": 7}]}
    check_same_categories(data, "val.json", [1, 2, 7], "categories.parquet")
    with pytest.raises(DatasetError, match=r"mine.json: .*categories.parquet.*ids only in mine.json: \[7\]; ids only in "
                                           r"categories.parquet: \[3\]"):
        check_same_categories(data, "mine.json", [1, 2, 3], "categories.parquet")


# The DAG: a finished run is simulated -- every output, log and benchmark file created, then every job
# marked done in DAG order with `snakemake --touch --forceall`, which records each job's metadata
# (its params: the rerun triggers of stage_config and import_evalset) -- and `snakemake -n` says what a
# changed config reruns.

def _snakemake(config: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "snakemake", *args, "--cores", "1", "--configfile", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def _planned(config: Path) -> dict[str, int]:
    out = _snakemake(config, "all", "-n").stdout
    if "Job stats:" not in out:
        return {}
    stats = out.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"}


def _finished_run(config: Path) -> None:
    plan = _snakemake(config, "all", "-n").stdout
    jobs = re.split(r"^(?:local)?rule ", plan, flags=re.M)[1:]
    for job in jobs:
        for key in ("output", "log", "benchmark"):
            if found := re.search(rf"^    {key}: (.+)$", job, re.M):
                for name in found[1].split(", "):
                    Path(name).parent.mkdir(parents=True, exist_ok=True)
                    Path(name).touch()
    _snakemake(config, "all", "--touch", "--forceall")
    assert _planned(config) == {}


def test_a_new_or_changed_evaluation_set_reruns_only_its_own_jobs(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "results")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    _finished_run(path)

    config["evaluation"]["sets"]["mine"] = {"json": str(tmp_path / "mine.json"), "image_root": str(tmp_path),
                                            "categories": "by_name"}
    path.write_text(yaml.safe_dump(config))
    models = 1 + len(config["student"]["variants"])
    # the set's own import (and the config file that stage reads, new), its predictions, evaluations,
    # intervals and Table 1, and the `all` target: nothing of val, no training
    assert _planned(path) == {"stage_config": 1, "import_evalset": 1, "predict": models, "evaluate": models,
                              "bootstrap": 1, "report": 1, "all": 1}

    _finished_run(path)
    config["evaluation"]["sets"]["mine"]["json"] = str(tmp_path / "mine_v2.json")
    path.write_text(yaml.safe_dump(config))
    assert _planned(path) == {"import_evalset": 1, "predict": models, "evaluate": models, "bootstrap": 1, "report": 1,
                              "all": 1}
