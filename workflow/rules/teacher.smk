# Stages 4-5: prototypes (eq. 1), similarity (eq. 2), teacher training with eq. (3) targets.


rule prototypes:
    input:
        config=stage_config("prototypes"),
        train=lambda w: dataset_json("full" if w.suffix else "train85"),
    output:
        categories=f"{RUN}/prototypes{{suffix}}/categories.parquet",
        prototypes=f"{RUN}/prototypes{{suffix}}/prototypes.npy",
    wildcard_constraints:
        suffix="|/full",
    params:
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    resources:
        **rule_resources("prototypes"),
    log:
        f"{RUN}/logs/prototypes{{suffix}}.log",
    benchmark:
        f"{RUN}/benchmarks/prototypes{{suffix}}.tsv",
    shell:
        stage("prototypes") + " --train-json {input.train:q} --image-root {params.root:q}"
        " --out-categories {output.categories:q} --out-prototypes {output.prototypes:q} > {log:q} 2>&1"


rule similarity:
    input:
        config=stage_config("similarity"),
        categories=f"{RUN}/prototypes{{suffix}}/categories.parquet",
        prototypes=f"{RUN}/prototypes{{suffix}}/prototypes.npy",
    output:
        f"{RUN}/prototypes{{suffix}}/similarity.npy",
    wildcard_constraints:
        suffix="|/full",
    params:
    resources:
        **rule_resources("similarity"),
    log:
        f"{RUN}/logs/similarity{{suffix}}.log",
    benchmark:
        f"{RUN}/benchmarks/similarity{{suffix}}.tsv",
    shell:
        stage("similarity") + " --prototypes {input.prototypes:q} --categories {input.categories:q}"
        " --out {output:q} > {log:q} 2>&1"


rule train_teacher:
    input:
        config=stage_config("train_teacher"),
        train=lambda w: dataset_json(w.split),
        similarity=lambda w: f"{prototypes_dir(w.split)}/similarity.npy",
    output:
        f"{RUN}/teacher/{{split}}/model_final.pth",
    wildcard_constraints:
        split="train85|full",
    params:
        root=IMAGE_ROOT,
        checkpoints=lambda w, output: str(Path(output[0]).parent / "checkpoints"),
    threads: config["num_threads"]
    resources:
        **training_resources("train_teacher", "teacher"),
    log:
        f"{RUN}/logs/train_teacher_{{split}}.log",
    benchmark:
        f"{RUN}/benchmarks/train_teacher_{{split}}.tsv",
    shell:
        training_stage("train_teacher", "teacher", "train_teacher") + " --train-json {input.train:q}"
        " --image-root {params.root:q} --similarity {input.similarity:q} --out {output:q}"
        " --checkpoint-dir {params.checkpoints:q} > {log:q} 2>&1"
