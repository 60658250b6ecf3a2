# Experiment clones of the main rules: runs outside the main line (stages/pipeline/experiments.py
# names them) for the Fig. 2 sweep (sweep.smk), the grids tuned on holdout15 (tuning.smk) and the
# seeds (seeds.smk). Each experiment lives in experiments/<name>/ with the config file its overlay
# gives; its rules are the main rules with other inputs.


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
    log:
        f"{RUN}/logs/experiment_stage_config_{{experiment}}_{{stage}}.log",
    run:
        write_config(merged_config(config, EXPERIMENTS[wildcards.experiment].overlay), output[0])


use rule similarity as experiment_similarity with:
    input:
        config=experiment_stage_config("similarity"),
        categories=lambda w: f"{prototypes_dir(EXPERIMENTS[w.experiment].labeled)}/categories.parquet",
        prototypes=lambda w: f"{prototypes_dir(EXPERIMENTS[w.experiment].labeled)}/prototypes.npy",
    output:
        f"{EXP}/{{experiment}}/similarity.npy",
    wildcard_constraints:
        experiment="|".join(EXPERIMENTS),
    log:
        f"{RUN}/logs/similarity_{{experiment}}.log",
    benchmark:
        f"{RUN}/benchmarks/similarity_{{experiment}}.tsv",


use rule train_teacher as experiment_teacher with:
    input:
        config=experiment_stage_config("train_teacher"),
        train=lambda w: labeled_json(EXPERIMENTS[w.experiment].labeled),
        similarity=f"{EXP}/{{experiment}}/similarity.npy",
    output:
        f"{EXP}/{{experiment}}/model_final.pth",
    wildcard_constraints:
        experiment="|".join(name for name, e in EXPERIMENTS.items() if e.kind == "teacher") or "^$",
    log:
        f"{RUN}/logs/experiment_teacher_{{experiment}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_teacher_{{experiment}}.tsv",


use rule train_student as experiment_student with:
    input:
        config=experiment_stage_config("train_student"),
        labeled=lambda w: labeled_json(EXPERIMENTS[w.experiment].labeled),
        unlabeled=f"{RUN}/retrieval/unlabeled.json",
        teacher=experiment_teacher_weights,
        ccece=experiment_delta_table,
    output:
        f"{EXP}/{{experiment}}/model_final.pth",
    wildcard_constraints:
        experiment="|".join(name for name, e in EXPERIMENTS.items() if e.kind == "student") or "^$",
    params:
        variant=lambda w: EXPERIMENTS[w.experiment].variant,
        root=IMAGE_ROOT,
        checkpoints=output_sibling("checkpoints"),
    log:
        f"{RUN}/logs/experiment_student_{{experiment}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_student_{{experiment}}.tsv",


use rule predict as experiment_predict with:
    input:
        config=stage_config("predict"),
        weights=f"{EXP}/{{experiment}}/model_final.pth",
        categories=lambda w: categories_file(EXPERIMENTS[w.experiment].labeled),
        images=lambda w: evalset_json(w.evalset),
    output:
        f"{EXP}/{{experiment}}/eval/{{evalset}}/detections.json",
    wildcard_constraints:
        evalset="|".join([*EVALSETS, *HOLDOUT_SETS]),
    log:
        f"{RUN}/logs/experiment_predict_{{experiment}}_{{evalset}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_predict_{{experiment}}_{{evalset}}.tsv",


use rule evaluate as experiment_evaluate with:
    input:
        config=stage_config("evaluate"),
        detections=f"{EXP}/{{experiment}}/eval/{{evalset}}/detections.json",
        gt=lambda w: evalset_json(w.evalset),
    output:
        metrics=f"{EXP}/{{experiment}}/eval/{{evalset}}/metrics.json",
        per_class=f"{EXP}/{{experiment}}/eval/{{evalset}}/per_class_ap.csv",
        reliability=f"{EXP}/{{experiment}}/eval/{{evalset}}/reliability.csv",
    wildcard_constraints:
        evalset="|".join([*EVALSETS, *HOLDOUT_SETS]),
    log:
        f"{RUN}/logs/experiment_evaluate_{{experiment}}_{{evalset}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_evaluate_{{experiment}}_{{evalset}}.tsv",


use rule ccece as experiment_ccece with:
    input:
        config=stage_config("ccece"),
        detections=f"{EXP}/{{experiment}}/eval/holdout15/detections.json",
        gt=HOLDOUT_JSON,
    output:
        ccece=f"{EXP}/{{experiment}}/calibration/ccece.parquet",
        ece=f"{EXP}/{{experiment}}/calibration/ece.json",
        reliability=f"{EXP}/{{experiment}}/calibration/reliability.csv",
    log:
        f"{RUN}/logs/experiment_ccece_{{experiment}}.log",
    benchmark:
        f"{RUN}/benchmarks/experiment_ccece_{{experiment}}.tsv",
