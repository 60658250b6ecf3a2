"""Rule import_evalset: one evaluation set of ``evaluation.sets`` (an LVIS-format json and its image
root), checked and matched to the training categories (stages.data.evalsets), as the json its
predictions and evaluations read. One job per set: a new or changed set redoes only its own jobs.

The set's json, image root and category matching come as arguments (the rule's params, so that a
change to one set reruns that set's job alone); how it is checked follows the ``dataset`` section
(``on_invalid``, ``image_check``, ``allow_paths_outside_image_root``), as for the data set's own files.

CLI: python -m stages.cli.import_evalset --config CFG --json SET.json --image-root R --categories same
        --train-json train.json --train-image-root TR --out evalset.json --out-report validation.csv
"""

from __future__ import annotations

import argparse

from stages.data.evalsets import CATEGORY_MATCHING, import_evalset
from stages.data.lvis import DatasetError, load_lvis
from stages.data.validation import print_report
from stages.utils.atomic import write_csv, write_json
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("dataset",)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check an evaluation set and match it to the training categories")
    parser.add_argument("--config", required=True)
    parser.add_argument("--json", required=True, help="the evaluation set (LVIS format)")
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--categories", required=True, choices=CATEGORY_MATCHING)
    parser.add_argument("--train-json", required=True, help="the imported training set (the detector's classes)")
    parser.add_argument("--train-image-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--out-report", required=True, help="validation report (CSV)")
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    train = load_lvis(args.train_json)
    try:
        data, report = import_evalset(args.json, args.image_root, train, args.train_json, args.train_image_root,
                                      args.categories, config["dataset"], config["num_threads"])
    except DatasetError as exc:
        if getattr(exc, "report", None) is not None:
            print_report(exc.report)
        raise
    print_report(report)
    write_json(data, args.out)
    write_csv(report, args.out_report)
    print(f"import_evalset: {args.json}: {len(data['images'])} images, {len(data['annotations'])} annotations; "
          f"{len(report)} problem(s) reported in {args.out_report}")


if __name__ == "__main__":
    main()
