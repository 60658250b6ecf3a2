"""Rule import_lvis: bring the user's LVIS v1 files into the run: checked copies of train/val and the pool list.

Train and val, with their image files, are validated (stages.data.validation) before any heavy
work: ``dataset.on_invalid`` fail stops listing every problem, skip writes repaired copies; the
report (CSV: file, kind, record_id, reason, action) lists each problem either way. The unlabeled
pool is the list of image files under ``dataset.unlabeled_dir`` (jpg/jpeg/png), as an images-only
json with ids above every labeled id and absolute file names; unreadable pool files are reported
too (skip: left out; fail: stop).

CLI: python -m stages.cli.import_lvis --config CFG --out-train train.json --out-val val.json --out-pool pool.json
     --out-report validation.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from stages.data.lvis import DatasetError, check_lvis, format_problems
from stages.data.validation import pool_images, print_report, report_frame, validate_datasets
from stages.utils.atomic import write_csv, write_json
from stages.utils.config import ConfigError, load_stage_config

CONFIG_KEYS = ("dataset",)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check and import LVIS v1 train/val and the unlabeled pool")
    parser.add_argument("--config", required=True)
    parser.add_argument("--out-train", required=True)
    parser.add_argument("--out-val", required=True)
    parser.add_argument("--out-pool", required=True)
    parser.add_argument("--out-report", required=True, help="validation report (CSV)")
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    ds = config["dataset"]
    for key in ("train_json", "val_json", "image_root", "unlabeled_dir"):
        if not ds.get(key):
            raise ConfigError(f"config key 'dataset.{key}' is required when dataset.source is 'lvis'")
    try:
        train, val, report = validate_datasets(ds["train_json"], ds["val_json"], ds["image_root"], ds,
                                               config["num_threads"])  # fmt: skip
        first_id = max(img["id"] for img in train["images"] + val["images"]) + 1
        images, pool_problems = pool_images(Path(ds["unlabeled_dir"]), first_id)
        if pool_problems and ds["on_invalid"] == "fail":
            error = DatasetError(format_problems(pool_problems, ds["unlabeled_dir"]))
            error.report = report_frame(pool_problems, ["none (dataset.on_invalid: fail)"] * len(pool_problems))
            raise error
    except DatasetError as exc:
        if getattr(exc, "report", None) is not None:
            print_report(exc.report)
        raise
    report = pd.concat([report, report_frame(pool_problems, ["dropped the pool image"] * len(pool_problems))])
    print_report(report)
    for data in (train, val):
        check_lvis(data, "the repaired dataset")  # the repair must leave nothing behind
    pool = {"images": images, "categories": train["categories"]}
    write_json(train, args.out_train)
    write_json(val, args.out_val)
    write_json(pool, args.out_pool)
    write_csv(report, args.out_report)
    print(
        f"import_lvis: {len(train['images'])} train, {len(val['images'])} val, {len(pool['images'])} pool images; "
        f"{len(report)} problem(s) reported in {args.out_report}"
    )


if __name__ == "__main__":
    main()
