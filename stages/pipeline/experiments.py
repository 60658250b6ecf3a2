"""The runs outside the main line, named and described once: the Fig. 2 sweep, the teacher and student
tuning grids (on holdout15) and the seed repeats of Table 1.

An experiment is a config overlay (the keys it changes) plus the data it trains on. Its rules get a
config file written from the run's config and the overlay (one way in for every parameter); its name
is a key into this table, never parsed back into values.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from stages.core.pseudo_labels import STUDENT_PREFIX, control_variants, ladder, student_model, tuned_variant
from stages.evaluation.bootstrap import difference_name
from stages.utils.config import ConfigError, merged_over, validate_config


@dataclass(frozen=True)
class Experiment:
    """``kind``: teacher | student. ``labeled``: the labeled set it trains on (``train85``, ``full``
    or ``full_frac<f>``, the workflow's ``{labeled}``); ``fraction``: the share of the full labeled
    set that is (Fig. 2; None otherwise). ``teacher``: a student's teacher (an experiment name; None:
    the main line's train85 teacher). ``delta_on``: the holdout a student's Delta is estimated on, from
    its teacher's detections (holdout15, or holdout15_a when the student is chosen on holdout15_b).
    ``evalset``: the set it is evaluated on (an ``evaluation.sets`` name, holdout15 or holdout15_b:
    the workflow's ``{evalset}``)."""

    name: str
    kind: str
    labeled: str
    evalset: str
    overlay: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None
    teacher: str | None = None
    delta_on: str = "holdout15"
    fraction: float | None = None


# An experiment's config is the run's config with its overlay merged in, the way Snakemake merges a
# --configfile over config.yaml: one merge, in stages.utils.config.
merged_config = merged_over


def main_evalset(config: dict[str, Any]) -> str:
    """The evaluation set the runs outside Table 1 are judged on (Fig. 2, the seeds, the retrained
    teacher grid): the first of ``evaluation.sets``."""
    return next(iter(config["evaluation"]["sets"]))


def fraction_labeled(fraction: float) -> str:
    """The ``{labeled}`` name of a class-keeping fraction of the full labeled train set (Fig. 2)."""
    return f"full_frac{fraction_name(fraction)}"


def sweep_experiments(config: dict[str, Any]) -> list[Experiment]:
    """Fig. 2: a teacher per smoothing kind and labeled fraction of the full train set, on the main
    evaluation set."""
    return [Experiment(f"sweep_{kind}_frac{fraction_name(f)}", "teacher", fraction_labeled(f), main_evalset(config),
                       {"teacher": {"smoothing": kind}}, fraction=float(f))
            for kind in config["sweep"]["variants"] for f in config["sweep"]["fractions"]]


def sweep_comparisons(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Fig. 2's paired differences (a, b) = a minus b at each fraction: every smoothing kind of
    ``sweep.variants`` against every kind listed before it (in the default order: one-hot, uniform,
    similarity, similarity + frequency, so each kind meets one-hot and uniform smoothing, the two
    baselines the paper's Fig. 2 claim is about)."""
    kinds = list(config["sweep"]["variants"])
    return [(a, b) for i, a in enumerate(kinds) for b in kinds[:i]]


def fraction_name(fraction: float) -> str:
    """A labeled fraction as it appears in names and paths (``0.1``, ``1``)."""
    return f"{float(fraction):g}"


def grid_axes(config: dict[str, Any], section: str) -> list[str]:
    """The keys of ``tuning.<section>`` that are on the grid (listed with values)."""
    return [k for k, values in config["tuning"][section].items() if values]


def grid_points(config: dict[str, Any], section: str) -> list[dict[str, Any]]:
    """The points of the tuning grid ``tuning.<section>`` (key -> values of ``<section>.<key>``): every
    combination of the listed values; keys without values keep the configured one."""
    spec = config["tuning"][section]
    unknown = sorted(k for k in spec if k not in config[section])
    if unknown:
        raise ConfigError(f"config key 'tuning.{section}': {unknown} are not keys of '{section}'")
    keys = grid_axes(config, section)
    points = [dict(zip(keys, values)) for values in itertools.product(*(spec[k] for k in keys))]
    for point in points:  # a grid value out of its key's range fails now, naming the key, not in a job
        try:
            validate_config(merged_config(config, {section: point}))
        except ConfigError as error:
            raise ConfigError(f"config key 'tuning.{section}', point {point}: {error}") from None
    return points


def point_name(prefix: str, point: dict[str, Any]) -> str:
    return "_".join([prefix, *(f"{k}{float(v):g}" if isinstance(v, (int, float)) else f"{k}{v}" for k, v in point.items())])


def teacher_grid(config: dict[str, Any], labeled: str = "train85") -> list[Experiment]:
    """The grid ``tuning.teacher`` (eps x gamma in the paper, section 4.1): on train85, evaluated on
    holdout15; on ``full`` for the retrained final teacher (only the chosen point is ever built)."""
    evalset = "holdout15" if labeled == "train85" else main_evalset(config)
    return [Experiment(point_name(f"teacher_{labeled}", p), "teacher", labeled, evalset, {"teacher": p})
            for p in grid_points(config, "teacher")]


def student_grid(config: dict[str, Any]) -> list[Experiment]:
    """The grid ``tuning.student`` (lambda x unlabeled weight in the paper) of the corrected student
    from the train85 teacher, tuned as the paper tunes it on its 15% split, without reusing data:
    Delta from holdout15's half a, the choice on half b. lambda = 0 is the soft student."""
    return [Experiment(point_name("student", p), "student", "train85", "holdout15_b", {"student": p},
                       variant=tuned_variant(), delta_on="holdout15_a")
            for p in grid_points(config, "student")]


def table1_comparisons(models: list[str]) -> list[tuple[str, str]]:
    """Table 1's paired differences (a, b) = a minus b: every row against the teacher and against
    the control, and each step of the paper's ladder (one-hot -> soft -> soft + correction) against
    the step before it. Which variant is the control and where each sits on the ladder is part of
    its registry entry (stages.core.pseudo_labels)."""
    variants = [m.removeprefix(STUDENT_PREFIX) for m in models if m.startswith(STUDENT_PREFIX)]
    pairs = [(m, "teacher") for m in models if m != "teacher"]
    for control in map(student_model, control_variants(variants)):
        pairs += [(m, control) for m in models if m not in ("teacher", control)]
    steps = [student_model(v) for v in ladder(variants)]
    return pairs + list(zip(steps[1:], steps[:-1]))


def table1_comparison_names(models: list[str]) -> list[str]:
    """Table 1's comparisons as the bootstrap's intervals.csv names them ("a - b"): what a reader of
    that file checks it for."""
    return [difference_name(a, b) for a, b in table1_comparisons(models)]


def seed_teacher(seed: int) -> str:
    return f"seed{seed}_teacher"


def seed_experiments(config: dict[str, Any]) -> list[Experiment]:
    """Table 1 again under every other seed of ``seeds`` (the config's own seed is the main line): the
    train85 teacher, its CCECE on holdout15 and every student variant, on the same data."""
    runs = []
    for seed in config["seeds"]:
        if seed == config["seed"]:
            continue
        runs.append(Experiment(seed_teacher(seed), "teacher", "train85", main_evalset(config), {"seed": seed}))
        runs += [Experiment(f"seed{seed}_student_{v}", "student", "train85", main_evalset(config), {"seed": seed},
                            variant=v, teacher=seed_teacher(seed)) for v in config["student"]["variants"]]
    return runs


def experiments(config: dict[str, Any]) -> dict[str, Experiment]:
    """Every experiment of the config, by name."""
    table: dict[str, Experiment] = {}
    for exp in [*sweep_experiments(config), *teacher_grid(config, "train85"), *teacher_grid(config, "full"),
                *student_grid(config), *seed_experiments(config)]:
        if exp.name in table and table[exp.name] != exp:
            raise ValueError(f"two experiments are named {exp.name!r}")
        table[exp.name] = exp
    return table


def _same(a: Any, b: Any) -> bool:
    return float(a) == float(b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else a == b


def chosen_teacher(config: dict[str, Any], choice: dict[str, dict[str, Any]], labeled: str) -> Experiment:
    """The grid teacher on ``labeled`` at a tuning choice (the overlay written by stages.cli.tune)."""
    for exp in teacher_grid(config, labeled):
        point = exp.overlay["teacher"]
        if point.keys() == choice["teacher"].keys() and all(_same(point[k], choice["teacher"][k]) for k in point):
            return exp
    raise ValueError(f"the tuning choice {choice} is not a point of the teacher grid")
