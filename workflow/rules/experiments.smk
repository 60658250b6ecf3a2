# Runs outside the main line (stages/pipeline/experiments.py names them): the Fig. 2 labeled-fraction
# sweep per smoothing kind, and the teacher (eps x gamma) and student (lambda x unlabeled weight)
# grids tuned on holdout15 (section 4.1 of the paper). Each experiment lives in
# experiments/<name>/ with the config file its overlay gives; its rules are the main rules.


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    evalset="val|holdout15|holdout15_b",
    dataset="|".join(fraction_dataset(f) for f in config["sweep"]["fractions"]),


rule experiment_stage_config:
    """The config file of stage `stage` in an experiment: the run's config with the experiment's
    overlay, rewritten when a value the stage declares changes."""
    output:
        f"{EXP}/{{experiment}}/config/{{stage}}.yaml",
    wildcard_constraints:
        stage="|".join(STAGES),
    params:
        declared=lambda w: trigger(w.stage, EXPERIMENTS[w.experiment].overlay),
    localrule: True
    run:
        write_config(merged_config(config, EXPERIMENTS[wildcards.experiment].overlay), output[0])


rule subsample:
    """Fig. 2's class-keeping fractions of the full labeled train set, one json per fraction."""
    input:
        config=stage_config("subsample"),
        train=TRAIN_JSON,
    output:
        [dataset_json(fraction_dataset(f)) for f in config["sweep"]["fractions"]],
    params:
    resources:
        **rule_resources("subsample"),
    log:
        f"{RUN}/logs/subsample.log",
    benchmark:
        f"{RUN}/benchmarks/subsample.tsv",
    shell:
        stage("subsample") + " --train-json {input.train:q} --out {output:q} > {log:q} 2>&1"


use rule prototypes as experiment_prototypes with:
    input:
        config=stage_config("prototypes"),
        train=lambda w: dataset_json(w.dataset),
    output:
        categories=f"{EXP}/prototypes/{{dataset}}/categories.parquet",
        prototypes=f"{EXP}/prototypes/{{dataset}}/prototypes.npy",
    log:
        f"{RUN}/logs/prototypes_{{dataset}}.log",
    benchmark:
        f"{RUN}/benchmarks/prototypes_{{dataset}}.tsv",


use rule similarity as experiment_similarity with:
    input:
        config=experiment_stage_config("similarity"),
        categories=lambda w: f"{prototypes_dir(EXPERIMENTS[w.experiment].dataset)}/categories.parquet",
        prototypes=lambda w: f"{prototypes_dir(EXPERIMENTS[w.experiment].dataset)}/prototypes.npy",
    output:
        f"{EXP}/{{experiment}}/similarity.npy",
    log:
        f"{RUN}/logs/similarity_{{experiment}}.log",
    benchmark:
        f"{RUN}/benchmarks/similarity_{{experiment}}.tsv",


use rule train_teacher as experiment_teacher with:
    input:
        config=experiment_stage_config("train_teacher"),
        train=lambda w: dataset_json(EXPERIMENTS[w.experiment].dataset),
        similarity=f"{EXP}/{{experiment}}/similarity.npy",
    output:
        f"{EXP}/{{experiment}}/model_final.pth",
    wildcard_constraints:
        experiment="|".join(name for name, e in EXPERIMENTS.items() if e.kind == "teacher") or "^$",
    params:
        root=IMAGE_ROOT,
        checkpoints=lambda w, output: str(Path(output[0]).parent / "checkpoints"),
    log:
        f"{RUN}/logs/experiment_teacher_{{experiment}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_teacher_{{experiment}}.tsv",


def experiment_teacher_weights(w):
    teacher = EXPERIMENTS[w.experiment].teacher
    return holdout_teacher_weights() if teacher is None else f"{EXP}/{teacher}/model_final.pth"


def experiment_ccece(w):
    """A student's Delta: its teacher's CCECE on holdout15 (or on half a of it, for the tuning grid)."""
    exp = EXPERIMENTS[w.experiment]
    if exp.teacher is not None:
        return f"{EXP}/{exp.teacher}/calibration/ccece.parquet"
    return {"holdout15": f"{RUN}/calibration/ccece.parquet",
            "holdout15_a": f"{RUN}/calibration/holdout15_a/ccece.parquet"}[exp.delta_on]


use rule train_student as experiment_student with:
    input:
        config=experiment_stage_config("train_student"),
        labeled=lambda w: dataset_json(EXPERIMENTS[w.experiment].dataset),
        unlabeled=f"{RUN}/retrieval/unlabeled.json",
        teacher=experiment_teacher_weights,
        ccece=experiment_ccece,
    output:
        f"{EXP}/{{experiment}}/model_final.pth",
    wildcard_constraints:
        experiment="|".join(name for name, e in EXPERIMENTS.items() if e.kind == "student") or "^$",
    params:
        variant=lambda w: EXPERIMENTS[w.experiment].variant,
        root=IMAGE_ROOT,
        checkpoints=lambda w, output: str(Path(output[0]).parent / "checkpoints"),
    log:
        f"{RUN}/logs/experiment_student_{{experiment}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_student_{{experiment}}.tsv",


use rule predict_val as experiment_predict with:
    input:
        config=stage_config("predict"),
        weights=f"{EXP}/{{experiment}}/model_final.pth",
        images=lambda w: evalset_json(w.evalset),
    output:
        f"{EXP}/{{experiment}}/eval_{{evalset}}/detections.json",
    log:
        f"{RUN}/logs/experiment_predict_{{experiment}}_{{evalset}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_predict_{{experiment}}_{{evalset}}.tsv",


use rule evaluate as experiment_evaluate with:
    input:
        config=stage_config("evaluate"),
        detections=f"{EXP}/{{experiment}}/eval_{{evalset}}/detections.json",
        gt=lambda w: evalset_json(w.evalset),
    output:
        metrics=f"{EXP}/{{experiment}}/eval_{{evalset}}/metrics.json",
        per_class=f"{EXP}/{{experiment}}/eval_{{evalset}}/per_class_ap.csv",
        reliability=f"{EXP}/{{experiment}}/eval_{{evalset}}/reliability.csv",
    log:
        f"{RUN}/logs/experiment_evaluate_{{experiment}}_{{evalset}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_evaluate_{{experiment}}_{{evalset}}.tsv",


use rule ccece as experiment_ccece with:
    input:
        config=stage_config("ccece"),
        detections=f"{EXP}/{{experiment}}/eval_holdout15/detections.json",
        gt=HOLDOUT_JSON,
    output:
        ccece=f"{EXP}/{{experiment}}/calibration/ccece.parquet",
        ece=f"{EXP}/{{experiment}}/calibration/ece.json",
        reliability=f"{EXP}/{{experiment}}/calibration/reliability.csv",
    log:
        f"{RUN}/logs/experiment_ccece_{{experiment}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_ccece_{{experiment}}.tsv",


def experiment_metrics(exps):
    return [f"{EXP}/{e.name}/eval_{e.evalset}/metrics.json" for e in exps]


def grid_runs(exps, section):
    """`key=value,...:metrics.json` per grid point, with dotted config keys (stages.choose)."""
    return [",".join(f"{section}.{k}={v}" for k, v in e.overlay[section].items()) + f":{m}"
            for e, m in zip(exps, experiment_metrics(exps))]


rule fig2:
    """Fig. 2: teacher AP and APr against the labeled fraction, per smoothing kind."""
    input:
        experiment_metrics(sweep_experiments(config)),
    output:
        table=f"{RUN}/report/fig2_fraction_sweep.csv",
        figure=report(f"{RUN}/report/fig2_fraction_sweep.png", category="Figures", caption="../report/fig2.rst"),
    params:
        runs=[f"{e.overlay['teacher']['smoothing']}:{float(e.dataset.removeprefix('full_frac'))}:{m}"
              for e, m in zip(sweep_experiments(config), experiment_metrics(sweep_experiments(config)))],
    localrule: True
    resources:
        **rule_resources("fig2"),
    log:
        f"{RUN}/logs/fig2.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.sweep_report --runs {{params.runs:q}}"
        " --out-table {output.table:q} --out-figure {output.figure:q} > {log:q} 2>&1"


checkpoint tune_teacher:
    """eps/gamma grid: train85 teachers evaluated on holdout15; writes the chosen values."""
    input:
        experiment_metrics(teacher_grid(config, "train85")),
    output:
        # the choice first: rules that read it through the checkpoint name it as their input
        choice=f"{RUN}/tuning/teacher_choice.json",
        table=f"{RUN}/tuning/teacher_grid.csv",
    params:
        runs=grid_runs(teacher_grid(config, "train85"), "teacher"),
    localrule: True
    resources:
        **rule_resources("tune_teacher"),
    log:
        f"{RUN}/logs/tune_teacher.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.choose --runs {{params.runs:q}}"
        " --out-table {output.table:q} --out-choice {output.choice:q} > {log:q} 2>&1"


checkpoint tune_student:
    """lambda x unlabeled-weight grid: students on train85 + unlabeled, evaluated on holdout15."""
    input:
        experiment_metrics(student_grid(config)),
    output:
        # the choice first: rules that read it through the checkpoint name it as their input
        choice=f"{RUN}/tuning/student_choice.json",
        table=f"{RUN}/tuning/student_grid.csv",
    params:
        runs=grid_runs(student_grid(config), "student"),
    localrule: True
    resources:
        **rule_resources("tune_student"),
    log:
        f"{RUN}/logs/tune_student.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.choose --runs {{params.runs:q}}"
        " --out-table {output.table:q} --out-choice {output.choice:q} > {log:q} 2>&1"


rule student_tuned_config:
    """The main-line students' config with student.use_tuned: the run's config with the chosen
    lambda and unlabeled weight."""
    input:
        config=stage_config("train_student"),
        choice=lambda w: checkpoints.tune_student.get().output.choice,
    output:
        f"{RUN}/tuning/train_student.yaml",
    localrule: True
    log:
        f"{RUN}/logs/student_tuned_config.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.write_config --config {{input.config:q}} --overlay {{input.choice:q}}"
        " --out {output:q} > {log:q} 2>&1"


def seed_models(seed):
    """Table 1's rows under ``seed``: (model, metrics.json, detections.json); the main line for the
    config's own seed."""
    if seed == config["seed"]:
        return [(m, f"{RUN}/eval/{m}/metrics.json", f"{RUN}/eval/{m}/detections.json") for m in MODELS]
    names = [("teacher", seed_teacher(seed))] + [(f"student_{v}", f"seed{seed}_student_{v}")
                                                  for v in config["student"]["variants"]]
    return [(m, f"{EXP}/{n}/eval_val/metrics.json", f"{EXP}/{n}/eval_val/detections.json") for m, n in names]


use rule bootstrap as seed_bootstrap with:
    input:
        config=stage_config("bootstrap"),
        gt=VAL_JSON,
        detections=lambda w: [d for _, _, d in seed_models(int(w.seed))],
    output:
        f"{RUN}/seeds/seed{{seed}}_intervals.csv",
    params:
        detections=lambda w: [f"{m}={d}" for m, _, d in seed_models(int(w.seed))],
        compare=TABLE1_COMPARE,
    log:
        f"{RUN}/logs/seed_bootstrap_{{seed}}.log",
    benchmark:
        f"{RUN}/benchmarks/seed_bootstrap_{{seed}}.tsv",


rule seeds:
    """Table 1 under every seed of `seeds` (not part of `all`): mean +- std per row, and each seed's
    paired-bootstrap differences."""
    input:
        metrics=[m for s in config["seeds"] for _, m, _ in seed_models(s)],
        intervals=[f"{RUN}/seeds/seed{s}_intervals.csv" for s in config["seeds"]],
    output:
        table=f"{RUN}/seeds/seeds.csv",
        differences=f"{RUN}/seeds/seeds_differences.csv",
        md=report(f"{RUN}/seeds/seeds.md", category="Seeds", caption="../report/seeds.rst"),
    params:
        runs=[f"{s}:{model}:{m}" for s in config["seeds"] for model, m, _ in seed_models(s)],
        intervals=[f"{s}:{RUN}/seeds/seed{s}_intervals.csv" for s in config["seeds"]],
    localrule: True
    log:
        f"{RUN}/logs/seeds.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.seeds_report --runs {{params.runs:q}} --intervals {{params.intervals:q}}"
        " --out-table {output.table:q} --out-differences {output.differences:q} --out-md {output.md:q} > {log:q} 2>&1"
