# Stages 4-5: prototypes (eq. 1), similarity (eq. 2), teacher training with eq. (3) targets.


rule prototypes:
    input:
        lambda w: teacher_train_json("full" if w.suffix else "train85"),
    output:
        categories=f"{RUN}/prototypes{{suffix}}/categories.parquet",
        prototypes=f"{RUN}/prototypes{{suffix}}/prototypes.npy",
    wildcard_constraints:
        suffix="|/full",
    params:
        cfg=section_hash("model", "device"),
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    localrule: is_local("prototypes")
    resources:
        **rule_resources("prototypes"),
    log:
        f"{RUN}/logs/prototypes{{suffix}}.log",
    shell:
        stage("prototypes") + " --train-json {input} --image-root {params.root}"
        " --out-categories {output.categories} --out-prototypes {output.prototypes} > {log} 2>&1"


rule similarity:
    input:
        categories=f"{RUN}/prototypes{{suffix}}/categories.parquet",
        prototypes=f"{RUN}/prototypes{{suffix}}/prototypes.npy",
    output:
        f"{RUN}/prototypes{{suffix}}/similarity.npy",
    wildcard_constraints:
        suffix="|/full",
    params:
        cfg=section_hash("teacher"),
    localrule: is_local("similarity")
    resources:
        **rule_resources("similarity"),
    log:
        f"{RUN}/logs/similarity{{suffix}}.log",
    shell:
        stage("similarity") + " --prototypes {input.prototypes} --categories {input.categories}"
        " --out {output} > {log} 2>&1"


rule train_teacher:
    input:
        train=lambda w: teacher_train_json(w.split),
        similarity=lambda w: f"{prototypes_dir(w.split)}/similarity.npy",
    output:
        f"{RUN}/teacher/{{split}}/model_final.pth",
    wildcard_constraints:
        split="train85|full",
    params:
        cfg=section_hash("model", "teacher", "seed", "device"),
        root=IMAGE_ROOT,
        checkpoints=lambda w: f"{RUN}/teacher/{w.split}/checkpoints",
    threads: config["num_threads"]
    localrule: is_local("train_teacher")
    resources:
        **training_resources("train_teacher", "teacher"),
    log:
        f"{RUN}/logs/train_teacher_{{split}}.log",
    shell:
        training_stage("train_teacher", "teacher", "train_teacher") + " --train-json {input.train} --image-root {params.root}"
        " --similarity {input.similarity} --out {output} --checkpoint-dir {params.checkpoints} > {log} 2>&1"
