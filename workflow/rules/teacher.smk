# Stages 4-5: prototypes (eq. 1), similarity (eq. 2), teacher training with eq. (3) targets; each on a
# labeled set {labeled}: train85, full, or a fraction of full (Fig. 2).


rule prototypes:
    input:
        config=stage_config("prototypes"),
        train=lambda w: labeled_json(w.labeled),
    output:
        categories=f"{RUN}/prototypes/{{labeled}}/categories.parquet",
        prototypes=f"{RUN}/prototypes/{{labeled}}/prototypes.npy",
    params:
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    resources:
        **rule_resources("prototypes"),
    log:
        f"{RUN}/logs/prototypes_{{labeled}}.log",
    benchmark:
        f"{RUN}/benchmarks/prototypes_{{labeled}}.tsv",
    shell:
        stage("prototypes") + " --train-json {input.train:q} --image-root {params.root:q}"
        " --out-categories {output.categories:q} --out-prototypes {output.prototypes:q} > {log:q} 2>&1"


rule similarity:
    input:
        config=stage_config("similarity"),
        categories=f"{RUN}/prototypes/{{labeled}}/categories.parquet",
        prototypes=f"{RUN}/prototypes/{{labeled}}/prototypes.npy",
    output:
        f"{RUN}/prototypes/{{labeled}}/similarity.npy",
    wildcard_constraints:
        labeled="train85|full",
    resources:
        **rule_resources("similarity"),
    log:
        f"{RUN}/logs/similarity_{{labeled}}.log",
    benchmark:
        f"{RUN}/benchmarks/similarity_{{labeled}}.tsv",
    shell:
        stage("similarity") + " --prototypes {input.prototypes:q} --categories {input.categories:q}"
        " --out {output:q} > {log:q} 2>&1"


rule train_teacher:
    input:
        config=stage_config("train_teacher"),
        train=lambda w: labeled_json(w.labeled),
        similarity=f"{RUN}/prototypes/{{labeled}}/similarity.npy",
    output:
        f"{RUN}/teacher/{{labeled}}/model_final.pth",
    wildcard_constraints:
        labeled="train85|full",
    params:
        root=IMAGE_ROOT,
        checkpoints=output_sibling("checkpoints"),
    threads: config["num_threads"]
    resources:
        **training_resources("train_teacher", "teacher"),
    log:
        f"{RUN}/logs/train_teacher_{{labeled}}.log",
    benchmark:
        f"{RUN}/benchmarks/train_teacher_{{labeled}}.tsv",
    shell:
        training_stage("train_teacher", "teacher", "train_teacher") + " --train-json {input.train:q}"
        " --image-root {params.root:q} --similarity {input.similarity:q} --out {output:q}"
        " --checkpoint-dir {params.checkpoints:q} > {log:q} 2>&1"
