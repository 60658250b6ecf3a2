"""Check a user's LVIS-style train (and val) json files and their images, without running the
pipeline: every problem with file, record and reason (the checks are in stages.data.validation;
stages.cli.import_lvis runs the same checks as the first rule of a run on user data).

CLI: python -m stages.cli.validate_dataset --config CFG --json train.json [--json val.json] --image-root R --report R.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.data.lvis import DatasetError
from stages.data.validation import print_report, validate_datasets
from stages.utils.atomic import write_csv
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("dataset",)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check LVIS-style train (and val) json files and their images")
    parser.add_argument("--config", required=True)
    parser.add_argument("--json", required=True, action="append", type=Path, help="train json, then optionally val")
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--report", required=True, type=Path, help="CSV: file, kind, record_id, reason, action")
    args = parser.parse_args(argv)
    if len(args.json) > 2:
        parser.error("--json: at most two files (train, then val)")
    config = load_stage_config(args.config, CONFIG_KEYS)
    val = args.json[1] if len(args.json) == 2 else None
    try:
        _, _, report = validate_datasets(args.json[0], val, args.image_root, config["dataset"], config["num_threads"])
    except DatasetError as exc:
        report = getattr(exc, "report", None)  # absent when a json cannot even be read
        if report is None:
            sys.exit(str(exc))
        write_csv(report, args.report)
        print_report(report)
        sys.exit(f"{exc}\nreport: {args.report}")
    write_csv(report, args.report)
    print_report(report)
    print(f"validate: {len(report)} problem(s) in {', '.join(map(str, args.json))}; report: {args.report}")


if __name__ == "__main__":
    main()
