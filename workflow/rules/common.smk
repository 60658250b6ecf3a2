# Paths and helpers shared by all rules: the one place that knows the layout of results/<run>/.
# Functions and constants only (the rules are in the other files). Every stage reads the config file
# named by the `config` input of its rule, config/<stage>.yaml, rewritten only when a key the stage
# declares changes (stages/pipeline/declared.py), so that exactly the jobs of the stages that read a
# changed value rerun. Nothing here imports torch: every Slurm job re-reads these files.
#
# One wildcard name per concept: {labeled} the labeled set a model trains on (train85, full,
# full_frac<f>), {evalset} a set models are judged on (an evaluation.sets name, holdout15,
# holdout15_b), {model} a Table 1 row (teacher, student_<variant>), {variant} a student variant,
# {experiment} a run outside the main line, {stage} a stage CLI, {images} an embedded image set.
import json
import os
import shlex
import sys
from pathlib import Path

from stages.pipeline.declared import declared_hash, stage_names
from stages.pipeline.experiments import (
    chosen_teacher,
    experiments,
    fraction_labeled,
    fraction_name,
    main_evalset,
    merged_config,
    seed_teacher,
    student_grid,
    sweep_comparisons,
    sweep_experiments,
    table1_comparisons,
    teacher_grid,
)
from stages.pipeline.registries import check_registered
from stages.utils.atomic import write_json
from stages.utils.config import execution_environment, validate_config, write_config

validate_config(config)  # also refuses NaN and infinities, which JSON-schema bounds let through
check_registered(config)

RUN = f"{config['results_dir']}/{config['run']}"
EXP = f"{RUN}/experiments"
EXPERIMENTS = experiments(config)
STAGES = stage_names()

# Light rules run on the submitting machine, not as Slurm jobs (the localrules directive, with the
# names from the config).
workflow.localrules(*config["resources"]["local_rules"])


# This invocation's execution keys (num_threads, data_workers) reach every job as environment
# variables, which load_stage_config takes over the config file's values: they are no rerun trigger,
# so a stage's config file may be older than this invocation and hold another value
# (stages.utils.config.execution_variable). Set in Snakemake's own environment, not in the command
# text: Snakemake reruns a job whose command text changed. Local jobs inherit it, a Slurm job's
# Snakemake re-reads this file with the same --config, and srun passes it on to every node.
os.environ.update(execution_environment(config))


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


def output_dir(name):
    """params: the folder of output `name` (a rule's output prefix, derived from the output itself)."""
    return lambda w, output: str(Path(output[name]).parent)


def output_sibling(folder):
    """params: a folder beside the rule's first output (e.g. resumable checkpoints, shards)."""
    return lambda w, output: str(Path(output[0]).parent / folder)


# Data

MINILVIS = config["dataset"]["source"] == "minilvis"
DATA = f"{RUN}/data"
TRAIN_JSON = f"{DATA}/train.json"
VAL_JSON = f"{DATA}/val.json"
POOL_JSON = f"{DATA}/pool.json"
HOLDOUT_JSON = f"{RUN}/split/holdout15.json"
HOLDOUT_A_JSON = f"{RUN}/split/holdout15_a.json"  # the student's tuning: Delta from half a ...
HOLDOUT_B_JSON = f"{RUN}/split/holdout15_b.json"  # ... the tuning.student grid point chosen on half b
IMAGE_ROOT = f"{DATA}/images" if MINILVIS else config["dataset"]["image_root"]
TEACHER_LABELED = "full" if config["teacher"]["retrain_full"] else "train85"
FRACTIONS = [fraction_labeled(f) for f in config["sweep"]["fractions"]]


def labeled_json(labeled):
    """The labeled json a teacher trains on: train85, full, or a fraction of full (Fig. 2)."""
    return {"train85": f"{RUN}/split/train85.json", "full": TRAIN_JSON}.get(labeled, f"{EXP}/data/{labeled}.json")


def prototypes_dir(labeled):
    """categories.parquet, prototypes.npy and similarity.npy of a labeled set."""
    return f"{RUN}/prototypes/{labeled}"


def categories_file(labeled):
    """The classes, in order, of a model trained on `labeled`: predictions take them from here."""
    return f"{prototypes_dir(labeled)}/categories.parquet"


# Evaluation sets: those of evaluation.sets (Table 1 each) and the holdout sets experiments are judged on.

EVALSETS = list(config["evaluation"]["sets"])
MAIN_EVALSET = main_evalset(config)  # the set Fig. 2, the seeds and the retrained teacher grid are judged on
HOLDOUT_SETS = {"holdout15": HOLDOUT_JSON, "holdout15_b": HOLDOUT_B_JSON}


def evalset_json(evalset):
    """The json a set's predictions and evaluation read: the data set's own val, an imported set
    (import_evalset), or a holdout set of the split."""
    if evalset in HOLDOUT_SETS:
        return HOLDOUT_SETS[evalset]
    return VAL_JSON if config["evaluation"]["sets"][evalset]["json"] is None else f"{DATA}/evalsets/{evalset}.json"


def evalset_image_root(evalset):
    root = config["evaluation"]["sets"].get(evalset, {}).get("image_root")
    return IMAGE_ROOT if root is None else root


# Teachers

def _tuned_teacher(labeled):
    with open(checkpoints.tune_teacher.get().output.choice) as fh:
        return f"{EXP}/{chosen_teacher(config, json.load(fh), labeled).name}/model_final.pth"


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


# Students and Table 1

# The main-line students read the run's config, or with student.use_tuned its tuned copy.
STUDENT_CONFIG = f"{RUN}/tuning/train_student.yaml" if config["student"]["use_tuned"] else stage_config("train_student")

MODELS = ["teacher"] + [f"student_{v}" for v in config["student"]["variants"]]
# Table 1's paired differences as the bootstrap stage takes them (A:B = A minus B), main line and seeds alike.
TABLE1_COMPARE = [f"{a}:{b}" for a, b in table1_comparisons(MODELS)]
# Fig. 2's, between the smoothing kinds at one fraction (each teacher named by its kind).
SWEEP_COMPARE = [f"{a}:{b}" for a, b in sweep_comparisons(config)]


def model_weights(wildcards):
    if wildcards.model == "teacher":
        return final_teacher_weights(wildcards)
    return f"{RUN}/student/{wildcards.model.removeprefix('student_')}/model_final.pth"


# Fig. 5 and the pseudo-label gallery compare the teacher with Table 1's last row (the paper's method,
# soft + correction, in the default ladder).
SHOWN_STUDENT = MODELS[-1]


def training_logs(wildcards=None):
    """MODEL=metrics.json of the teacher and every student: detectron2's writer keeps it (and the
    TensorBoard event files) in the checkpoint directory beside the final weights."""
    weights = {"teacher": final_teacher_weights()} | {m: f"{RUN}/student/{m.removeprefix('student_')}/model_final.pth"
                                                      for m in MODELS if m != "teacher"}
    return [f"{m}={Path(w).parent / 'checkpoints' / 'metrics.json'}" for m, w in weights.items()]


def eval_dir(evalset, model):
    return f"{RUN}/eval/{evalset}/{model}"


def report_outputs():
    """Table 1 and its figures for every evaluation set, and the run's own pictures."""
    names = ["table1.md", "table1.csv", "fig1_ap_apr.png", "fig3_reliability.png", "fig4_per_class_ap.png",
             "fig1_ap_apr.csv", "fig3_reliability.csv", "fig4_per_class_ap.csv"]
    return [f"{RUN}/report/{s}/{name}" for s in EVALSETS for name in names] + run_report_outputs()


def run_report_outputs():
    """What the report shows once per run (workflow/rules/report.smk): the premise, Fig. 5, the
    galleries, the training curves."""
    return [f"{RUN}/report/{name}" for name in ("premise.md", "premise.csv", "fig5_examples.png",
                                                "retrieval_gallery.png", "pseudo_label_gallery.png",
                                                "training_curves.png")]


def main_line_benchmarks(evalset):
    """The benchmark files of the jobs `all` runs for Table 1 on `evalset` (the tuning grids' jobs
    are experiments); other sets' jobs are left out, so that adding a set leaves this one's report."""
    bench = f"{RUN}/benchmarks"
    names = ["make_minilvis" if MINILVIS else "import_lvis", "split", "embed_crops", "retrieve", "dedup",
             "predict_holdout", "ccece", "prototypes_train85", "similarity_train85", f"bootstrap_{evalset}",
             "premise", "fig5", "retrieval_gallery", "pseudo_label_gallery", "training_curves"]
    names += [f"embed_images_{s}" for s in ("pool", "train", "val")]
    names += [f"train_student_{v}" for v in config["student"]["variants"]]
    names += [f"{rule}_{evalset}_{m}" for m in MODELS for rule in ("predict", "evaluate")]
    names += [f"import_evalset_{evalset}"] if config["evaluation"]["sets"][evalset]["json"] is not None else []
    if not config["teacher"]["use_tuned"]:
        names += ["train_teacher_train85"] + (["train_teacher_full"] if config["teacher"]["retrain_full"] else [])
    if config["teacher"]["retrain_full"]:
        names += ["prototypes_full", "similarity_full"]
    return [f"{bench}/{name}.tsv" for name in sorted(names)]


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


def experiment_eval_dir(exp):
    return f"{EXP}/{exp.name}/eval/{exp.evalset}"


def experiment_metrics(exps):
    return [f"{experiment_eval_dir(e)}/metrics.json" for e in exps]


def seed_models(seed):
    """Table 1's rows under ``seed`` on the main evaluation set: (model, metrics.json,
    detections.json); the main line for the config's own seed."""
    if seed == config["seed"]:
        return [(m, f"{eval_dir(MAIN_EVALSET, m)}/metrics.json", f"{eval_dir(MAIN_EVALSET, m)}/detections.json")
                for m in MODELS]
    names = [("teacher", seed_teacher(seed))] + [(f"student_{v}", f"seed{seed}_student_{v}")
                                                  for v in config["student"]["variants"]]
    return [(m, f"{experiment_eval_dir(EXPERIMENTS[n])}/metrics.json",
             f"{experiment_eval_dir(EXPERIMENTS[n])}/detections.json") for m, n in names]


def seed_intervals(seed):
    """A seed's Table 1 intervals: for the config's own seed the main line's bootstrap (the same
    models, detections and draws), for another seed_bootstrap's."""
    if seed == config["seed"]:
        return f"{RUN}/report/{MAIN_EVALSET}/intervals.csv"
    return f"{RUN}/seeds/seed{seed}_intervals.csv"


def sweep_detections(fraction):
    """Fig. 2's teachers at one fraction (its fraction_name): (smoothing kind, detections.json)."""
    return [(e.overlay["teacher"]["smoothing"], f"{experiment_eval_dir(e)}/detections.json")
            for e in sweep_experiments(config) if fraction_name(e.fraction) == fraction]


def sweep_intervals(fraction):
    """The paired-bootstrap intervals of Fig. 2's teachers at one fraction (its fraction_name, or
    the wildcard)."""
    return f"{RUN}/report/fig2/intervals_frac{fraction}.csv"


# Manifests: the runs a grid target gathers, as json records (structured values, never strings
# parsed back); the rule `manifest` writes them when they change.


def grid_manifest(exps, section):
    """A tuning grid: each point as a config overlay with its metrics.json (stages.cli.tune)."""
    return [{"overlay": {section: e.overlay[section]}, "metrics": m} for e, m in zip(exps, experiment_metrics(exps))]


MANIFESTS = {
    "fig2": lambda: [{"smoothing": e.overlay["teacher"]["smoothing"], "fraction": e.fraction, "metrics": m,
                      "intervals": sweep_intervals(fraction_name(e.fraction))}
                     for e, m in zip(sweep_experiments(config), experiment_metrics(sweep_experiments(config)))],
    "tune_teacher": lambda: grid_manifest(teacher_grid(config, "train85"), "teacher"),
    "tune_student": lambda: grid_manifest(student_grid(config), "student"),
    "seeds_runs": lambda: [{"seed": s, "model": model, "metrics": m} for s in config["seeds"]
                           for model, m, _ in seed_models(s)],
    "seeds_intervals": lambda: [{"seed": s, "intervals": seed_intervals(s)} for s in config["seeds"]],
}


def manifest(name):
    return f"{RUN}/manifests/{name}.json"


# The values each wildcard may take (rules narrow them further where they need to).
wildcard_constraints:
    experiment="|".join(EXPERIMENTS) or "^$",
    labeled="|".join(["train85", "full", *FRACTIONS]),
    evalset="|".join([*EVALSETS, *HOLDOUT_SETS]),
