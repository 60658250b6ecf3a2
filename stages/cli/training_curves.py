"""Rule training_curves: total loss, every loss term and the learning rate against the iteration for
the teacher and each student, from the metrics.json detectron2's writer keeps in each checkpoint
directory (stages.reporting.curves).

CLI: python -m stages.cli.training_curves --config CFG --logs teacher=ckpt/metrics.json student_soft=... \
     --out-png P --out-csv C
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.reporting.curves import curves_figure, curves_table
from stages.utils.atomic import write_csv, write_figure
from stages.utils.config import load_stage_config

CONFIG_KEYS: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Training curves of the teacher and the students")
    parser.add_argument("--config", required=True)
    parser.add_argument("--logs", required=True, nargs="+", help="MODEL=metrics.json, in the order shown")
    parser.add_argument("--out-png", required=True, type=Path)
    parser.add_argument("--out-csv", required=True, type=Path)
    args = parser.parse_args(argv)
    load_stage_config(args.config, CONFIG_KEYS)
    logs = {}
    for spec in args.logs:
        model, sep, path = spec.partition("=")
        if not sep or not model or not path:
            parser.error(f"--logs: expected MODEL=metrics.json, got {spec!r}")
        logs[model] = Path(path)
    table = curves_table(logs)
    write_csv(table, args.out_csv)
    write_figure(curves_figure(table), args.out_png)
    print(f"training_curves: {table.groupby('model').size().to_dict()} points -> {args.out_png}")


if __name__ == "__main__":
    main()
