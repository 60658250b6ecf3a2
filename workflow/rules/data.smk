# Datasets: the generated mini-LVIS (embedded default) or the user's LVIS files, and the 85/15 split.

if MINILVIS:

    rule make_minilvis:
        input:
            config=stage_config("make_minilvis"),
        output:
            train=TRAIN_JSON,
            val=VAL_JSON,
            pool=POOL_JSON,
            truth=f"{DATA}/pool_truth.json",
        params:
            out=output_dir("train"),
        resources:
            **rule_resources("make_minilvis"),
        log:
            f"{RUN}/logs/make_minilvis.log",
        benchmark:
            f"{RUN}/benchmarks/make_minilvis.tsv",
        shell:
            stage("make_minilvis") + " --out {params.out:q} > {log:q} 2>&1"

else:

    # The user's files are named in the config, not inputs: the job graph (and `snakemake -n`) can be
    # built before any data exists; stages.cli.import_lvis checks them and names what is missing.
    rule import_lvis:
        input:
            config=stage_config("import_lvis"),
        output:
            train=TRAIN_JSON,
            val=VAL_JSON,
            pool=POOL_JSON,
            report=f"{DATA}/validation.csv",
        params:
        resources:
            **rule_resources("import_lvis"),
        log:
            f"{RUN}/logs/import_lvis.log",
        benchmark:
            f"{RUN}/benchmarks/import_lvis.tsv",
        shell:
            stage("import_lvis") + " --out-train {output.train:q} --out-val {output.val:q} --out-pool {output.pool:q}"
            " --out-report {output.report:q} > {log:q} 2>&1"


rule split:
    input:
        config=stage_config("split"),
        train=TRAIN_JSON,
    output:
        train=f"{RUN}/split/train85.json",
        holdout=HOLDOUT_JSON,
        halves=[HOLDOUT_A_JSON, HOLDOUT_B_JSON],
    params:
    resources:
        **rule_resources("split"),
    log:
        f"{RUN}/logs/split.log",
    benchmark:
        f"{RUN}/benchmarks/split.tsv",
    shell:
        stage("split") + " --train-json {input.train:q} --out-train {output.train:q}"
        " --out-holdout {output.holdout:q} --out-halves {output.halves:q} > {log:q} 2>&1"
