"""Rule similarity, eq. (2): the class-similarity matrix S' from the prototypes and N_i.

S' is computed at the gamma that ``teacher.smoothing`` needs (``teacher.gamma`` for a kind with the
frequency term, 0 otherwise; stages.core.smoothing), so the teacher's eps is no input here.

CLI: python -m stages.cli.similarity --config CFG --prototypes P.npy --categories C.parquet --out S.npy
"""

from __future__ import annotations

import argparse

from stages.core.similarity import similarity_matrix
from stages.core.smoothing import similarity_gamma
from stages.data.artifacts import read_categories, read_prototypes
from stages.utils.atomic import write_npy
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("teacher.smoothing", "teacher.gamma")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Eq. (2): the class similarity matrix S'")
    parser.add_argument("--config", required=True)
    parser.add_argument("--prototypes", required=True)
    parser.add_argument("--categories", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    gamma = similarity_gamma(config["teacher"]["smoothing"], config["teacher"]["gamma"])
    categories = read_categories(args.categories)
    prototypes = read_prototypes(args.prototypes, len(categories))
    matrix = similarity_matrix(prototypes, categories["instance_count"].to_numpy(), gamma)
    write_npy(matrix, args.out)
    print(f"similarity: {matrix.shape[0]} classes, gamma={gamma} -> {args.out}")


if __name__ == "__main__":
    main()
