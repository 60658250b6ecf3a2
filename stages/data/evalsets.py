"""An evaluation set of ``evaluation.sets``: a user's LVIS-format json brought into the run on its
own, so that adding or changing one set redoes only that set's predictions and evaluations.

The set is checked like the data set's own files (stages.data.validation: json structure, image
files, ``dataset.on_invalid``), and against the training set:

* its categories must be the training set's -- the detector's classes. ``same``: the same ids with
  the same names, or a DatasetError names both files and every difference; ``by_name``: the same
  names, the set's ids rewritten to the training ids of those names (an explicit mapping by
  category name, for a json numbered otherwise). Either way the imported copy carries the training
  set's category records, so APr/APc/APf use the train-set frequency groups on every set;
* none of its image files may be a training image file (leakage; fatal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from stages.data.lvis import DatasetError, Problem, find_json_problems, format_problems, image_path, read_json
from stages.data.validation import drop_malformed, image_file_problems, repair, report_frame, train_image_counts

CATEGORY_MATCHING = ("same", "by_name")
_ID_LISTS = ("neg_category_ids", "not_exhaustive_category_ids")


def _differences(names: dict[int, str], train_names: dict[int, str], file: str, train_file: str,
                 by_name: bool, limit: int = 10) -> list[str]:
    """The differences between a set's categories and the training ones, one line each."""
    if by_name:
        only_set, only_train = sorted(set(names.values()) - set(train_names.values())), sorted(
            set(train_names.values()) - set(names.values()))
        lines = [f"names only in {file}: {only_set[:limit]}" if only_set else "",
                 f"names only in {train_file}: {only_train[:limit]}" if only_train else ""]
        if len(names) != len(set(names.values())):
            lines.append(f"{file} gives one name to several category ids")
        return [line for line in lines if line]
    only_set, only_train = sorted(names.keys() - train_names.keys()), sorted(train_names.keys() - names.keys())
    renamed = [f"{i}: {names[i]!r} / {train_names[i]!r}" for i in sorted(names.keys() & train_names.keys())
               if names[i] != train_names[i]]
    lines = [f"ids only in {file}: {only_set[:limit]}" if only_set else "",
             f"ids only in {train_file}: {only_train[:limit]}" if only_train else "",
             f"ids named otherwise ({file} / {train_file}): {renamed[:limit]}" if renamed else ""]
    return [line for line in lines if line]


def match_categories(data: dict[str, Any], train: dict[str, Any], file: str, train_file: str,
                     matching: str) -> dict[str, Any]:
    """``data`` with the training categories: with ``same`` its categories must be the training ones
    (ids and names); with ``by_name`` its category ids are rewritten to the training ids of the same
    names (annotations and the images' neg / not-exhaustive lists too).

    Raises DatasetError naming both files and every difference (up to 10 of each kind), and
    ValueError for a ``matching`` outside CATEGORY_MATCHING.
    """
    if matching not in CATEGORY_MATCHING:
        raise ValueError(f"evaluation set categories: {matching!r} is not one of {', '.join(CATEGORY_MATCHING)}")
    names = {c["id"]: c.get("name") for c in data["categories"]}
    train_names = {c["id"]: c.get("name") for c in train["categories"]}
    problems = _differences(names, train_names, file, train_file, matching == "by_name")
    if problems:
        hint = ("" if matching == "by_name" else
                "\nan evaluation set must list the detector's classes; with categories: by_name its ids are "
                "matched to the training ids by category name")
        raise DatasetError(f"{file}: its categories are not those of the training set {train_file}:\n  "
                           + "\n  ".join(problems) + hint)
    out = {**data, "categories": [dict(c) for c in train["categories"]]}
    if matching == "same":
        return out
    to_train = {name: i for i, name in train_names.items()}
    new_id = {i: to_train[name] for i, name in names.items()}
    # an annotation of an unknown category keeps its id: it is a problem already found, and dropped by the repair
    out["annotations"] = [{**ann, "category_id": new_id.get(ann.get("category_id"), ann.get("category_id"))}
                          for ann in data.get("annotations", [])]
    out["images"] = [{**img, **{key: [new_id[c] for c in img[key] if c in new_id]
                                for key in _ID_LISTS if isinstance(img.get(key), list)}} for img in data["images"]]
    return out


def check_same_categories(data: dict[str, Any], file: str | Path, category_ids: list[int],
                          categories_file: str | Path) -> None:
    """Raise DatasetError, naming both files, unless the json ``data`` (read from ``file``) lists
    exactly the detector's ``category_ids`` (from its training set's ``categories_file``)."""
    ids = {c["id"] for c in data["categories"]}
    if ids != set(category_ids):
        only_json, only_model = sorted(ids - set(category_ids))[:10], sorted(set(category_ids) - ids)[:10]
        raise DatasetError(f"{file}: its categories are not the detector's classes ({categories_file}): ids only in "
                           f"{file}: {only_json}; ids only in {categories_file}: {only_model}. Add it as an "
                           "evaluation set (evaluation.sets), which matches its categories to the training set's")


def leakage_problems(data: dict[str, Any], file: str, image_root: str | Path, train: dict[str, Any],
                     train_image_root: str | Path) -> list[Problem]:
    """A fatal problem for every image of the set whose file is a training image file."""
    def has_file(img: dict[str, Any]) -> bool:
        return "file_name" in img or "coco_url" in img

    train_files = {image_path(img, train_image_root).resolve() for img in train["images"] if has_file(img)}
    return [Problem(file, "image", img["id"], f"the same file {image_path(img, image_root)} is in the train set "
                    "(leakage)", fatal=True)
            for img in data["images"] if has_file(img) and image_path(img, image_root).resolve() in train_files]


def import_evalset(path: str | Path, image_root: str | Path, train: dict[str, Any], train_file: str | Path,
                   train_image_root: str | Path, matching: str, dataset_cfg: dict[str, Any],
                   workers: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the checked -- in ``dataset.on_invalid: skip`` mode repaired -- evaluation set with the
    training categories, the report of every problem: file, kind, record_id, reason, action).

    Raises DatasetError naming the file and every problem when one is fatal (broken structure,
    leakage, other categories than the training set's) or when ``dataset.on_invalid`` is fail and
    anything is wrong; the report is attached as ``error.report``.
    """
    file = str(path)
    data = read_json(path)
    problems = find_json_problems(data, path)
    data = drop_malformed(data, problems)
    if not any(p.fatal for p in problems):
        data = match_categories(data, train, file, str(train_file), matching)
        # the set's category records are replaced by the training ones: their own problems (e.g. a
        # missing frequency) no longer apply
        problems = [p for p in problems if p.kind != "category"]
        problems += image_file_problems(data, file, image_root, dataset_cfg["image_check"], workers,
                                        dataset_cfg["allow_paths_outside_image_root"])
        problems += leakage_problems(data, file, image_root, train, train_image_root)
    fatal = [p for p in problems if p.fatal]
    if fatal or (problems and dataset_cfg["on_invalid"] == "fail"):
        hint = "" if fatal else "\nset dataset.on_invalid: skip to drop or repair these records (every action is reported)"
        error = DatasetError(format_problems(problems, file) + hint)
        error.report = report_frame(problems, ["fatal" if p.fatal else "none (dataset.on_invalid: fail)" for p in problems])
        raise error
    repaired, actions = repair(data, problems, train_image_counts(train))
    repaired["categories"] = [dict(c) for c in train["categories"]]  # the train-set frequency groups
    return repaired, report_frame(problems, actions)
