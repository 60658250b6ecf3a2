# Paths and helpers shared by all rules: the one place that knows the layout of results/<run>/.
# Every stage reads the config file its rule names (input `config`): config/<stage>.yaml, rewritten
# only when a key the stage declares changes (stages/pipeline/declared.py), so that exactly the
# jobs of the stages that read a changed value rerun.
import json
import shlex
import sys
from pathlib import Path

from stages.pipeline.declared import declared_hash, stage_names
from stages.pipeline.experiments import (
    chosen_teacher,
    experiments,
    fraction_dataset,
    merged_config,
    seed_teacher,
    student_grid,
    sweep_experiments,
    table1_comparisons,
    teacher_grid,
)
from stages.pipeline.registries import check_registered
from stages.utils.config import validate_config, write_config

validate_config(config)  # also refuses NaN and infinities, which JSON-schema bounds let through
check_registered(config)

RUN = f"{config['results_dir']}/{config['run']}"
EXP = f"{RUN}/experiments"
EXPERIMENTS = experiments(config)
STAGES = stage_names()

# Light rules run on the submitting machine, not as Slurm jobs (the localrules directive, with the
# names from the config).
workflow.localrules(*config["resources"]["local_rules"])


def stage(name):
    """A rule's command: python -m stages.cli.<name> with the config file of its `config` input."""
    return f"{shlex.quote(sys.executable)} -m stages.cli.{name} --config {{input.config:q}}"


def stage_config(name):
    """The config file stage `name` reads in the main line."""
    return f"{RUN}/config/{name}.yaml"


def experiment_stage_config(name):
    """The config file stage `name` reads in an experiment (the run's config with its overlay)."""
    return lambda w: f"{EXP}/{w.experiment}/config/{name}.yaml"


def trigger(name, overlay=None):
    """When stage `name`'s config file is rewritten: the hash of the values it declares."""
    return declared_hash(merged_config(config, overlay) if overlay else config, name)


def rule_resources(name):
    """Slurm resources of a rule: resources.default merged with resources.rules[name]."""
    res = dict(config["resources"]["default"])
    res.update(config["resources"]["rules"].get(name, {}))
    return res


def machines(phase):
    return config["distributed"][f"{phase}_machines"]


def training_resources(name, phase):
    """A training rule's resources; on several machines one Slurm task per node, started by the
    rule's own srun (see training_stage). The 'mpi' flag tells the Slurm plugin not to wrap the
    job in `srun -n1`, and tasks_per_gpu=0 keeps it from turning `tasks` into --ntasks-per-gpu."""
    res = rule_resources(name)
    if machines(phase) > 1:
        res.update(nodes=machines(phase), tasks=machines(phase), tasks_per_gpu=0, mpi="srun")
    return res


def training_stage(name, phase, rule):
    """stage(name), started once per node under srun when the phase spans several machines:
    each node's task launches distributed.processes_per_machine processes (stages.modeling.distributed),
    with the job's CPUs and the rule's GPUs of its node."""
    n = machines(phase)
    if n == 1:
        return stage(name)
    gres = rule_resources(rule).get("gres")
    srun = (f"srun --nodes={n} --ntasks={n} --ntasks-per-node=1 --kill-on-bad-exit=1"
            + " --cpus-per-task=${{SLURM_CPUS_PER_TASK:-1}}" + (f" --gres={shlex.quote(str(gres))}" if gres else ""))
    return f"{srun} {stage(name)}"


MINILVIS = config["dataset"]["source"] == "minilvis"
DATA = f"{RUN}/data"
TRAIN_JSON = f"{DATA}/train.json"
VAL_JSON = f"{DATA}/val.json"
POOL_JSON = f"{DATA}/pool.json"
HOLDOUT_JSON = f"{RUN}/split/holdout15.json"
HOLDOUT_A_JSON = f"{RUN}/split/holdout15_a.json"  # the student's tuning: Delta from half a ...
HOLDOUT_B_JSON = f"{RUN}/split/holdout15_b.json"  # ... the tuning.student grid point chosen on half b
IMAGE_ROOT = f"{DATA}/images" if MINILVIS else config["dataset"]["image_root"]
TEACHER_SPLIT = "full" if config["teacher"]["retrain_full"] else "train85"


def dataset_json(dataset):
    """The labeled json a teacher trains on: train85, full, or a fraction of full (Fig. 2)."""
    return {"train85": f"{RUN}/split/train85.json", "full": TRAIN_JSON}.get(dataset, f"{EXP}/data/{dataset}.json")


def prototypes_dir(dataset):
    # The contract's prototypes/ holds train85's; the full train set and the fractions have their own.
    return {"train85": f"{RUN}/prototypes", "full": f"{RUN}/prototypes/full"}.get(dataset, f"{EXP}/prototypes/{dataset}")


def evalset_json(evalset):
    return {"val": VAL_JSON, "holdout15": HOLDOUT_JSON, "holdout15_b": HOLDOUT_B_JSON}[evalset]


def _tuned_teacher(dataset):
    with open(checkpoints.tune_teacher.get().output.choice) as fh:
        return f"{EXP}/{chosen_teacher(config, json.load(fh), dataset).name}/model_final.pth"


def holdout_teacher_weights(wildcards=None):
    """The train85 teacher whose holdout15 detections give CCECE (tuned values when use_tuned)."""
    if config["teacher"]["use_tuned"]:
        return _tuned_teacher("train85")
    return f"{RUN}/teacher/train85/model_final.pth"


def final_teacher_weights(wildcards=None):
    """The teacher of Table 1 and of the students: the train85 one, or retrained on full train."""
    if not config["teacher"]["retrain_full"]:
        return holdout_teacher_weights()
    if config["teacher"]["use_tuned"]:
        return _tuned_teacher("full")
    return f"{RUN}/teacher/full/model_final.pth"


# The main-line students read the run's config, or with student.use_tuned its tuned copy.
STUDENT_CONFIG = f"{RUN}/tuning/train_student.yaml" if config["student"]["use_tuned"] else stage_config("train_student")

MODELS = ["teacher"] + [f"student_{v}" for v in config["student"]["variants"]]
# Table 1's paired differences as the bootstrap stage takes them (A:B = A minus B), main line and seeds alike.
TABLE1_COMPARE = [f"{a}:{b}" for a, b in table1_comparisons(MODELS)]


def model_weights(wildcards):
    if wildcards.model == "teacher":
        return final_teacher_weights(wildcards)
    return f"{RUN}/student/{wildcards.model.removeprefix('student_')}/model_final.pth"


def report_outputs():
    return [f"{RUN}/report/table1.md", f"{RUN}/report/table1.csv", f"{RUN}/report/fig3_reliability.png",
            f"{RUN}/report/fig4_per_class_ap.png", f"{RUN}/report/fig3_reliability.csv",
            f"{RUN}/report/fig4_per_class_ap.csv", f"{RUN}/report/premise.md",
            f"{RUN}/report/premise.csv"] + picture_outputs()


def picture_outputs():
    """The pictures beside the tables (workflow/rules/report.smk): Fig. 5, the galleries, the curves."""
    return [f"{RUN}/report/{name}" for name in ("fig5_examples.png", "retrieval_gallery.png",
                                                "pseudo_label_gallery.png", "training_curves.png")]


rule stage_config:
    """The validated config with its defaults, as stage `stage` reads it. It is rewritten only when
    a value the stage declares changes (params), so a new value reruns the stages that read it --
    their config file is newer than their outputs -- and nothing else."""
    output:
        f"{RUN}/config/{{stage}}.yaml",
    wildcard_constraints:
        stage="|".join(STAGES),
    params:
        declared=lambda w: trigger(w.stage),
    localrule: True
    run:
        write_config(config, output[0])


# Experiments (experiments.smk and the targets built on them)


def experiment_teacher_weights(w):
    teacher = EXPERIMENTS[w.experiment].teacher
    return holdout_teacher_weights() if teacher is None else f"{EXP}/{teacher}/model_final.pth"


def experiment_delta_table(w):
    """A student's Delta: its teacher's CCECE on holdout15 (or on half a of it, for the tuning grid)."""
    exp = EXPERIMENTS[w.experiment]
    if exp.teacher is not None:
        return f"{EXP}/{exp.teacher}/calibration/ccece.parquet"
    return {"holdout15": f"{RUN}/calibration/ccece.parquet",
            "holdout15_a": f"{RUN}/calibration/holdout15_a/ccece.parquet"}[exp.delta_on]


def experiment_metrics(exps):
    return [f"{EXP}/{e.name}/eval_{e.evalset}/metrics.json" for e in exps]


def grid_runs(exps, section):
    """`key=value,...:metrics.json` per grid point, with dotted config keys (stages.cli.tune)."""
    return [",".join(f"{section}.{k}={v}" for k, v in e.overlay[section].items()) + f":{m}"
            for e, m in zip(exps, experiment_metrics(exps))]


def seed_models(seed):
    """Table 1's rows under ``seed``: (model, metrics.json, detections.json); the main line for the
    config's own seed."""
    if seed == config["seed"]:
        return [(m, f"{RUN}/eval/{m}/metrics.json", f"{RUN}/eval/{m}/detections.json") for m in MODELS]
    names = [("teacher", seed_teacher(seed))] + [(f"student_{v}", f"seed{seed}_student_{v}")
                                                  for v in config["student"]["variants"]]
    return [(m, f"{EXP}/{n}/eval_val/metrics.json", f"{EXP}/{n}/eval_val/detections.json") for m, n in names]
