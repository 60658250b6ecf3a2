# Datasets: the generated mini-LVIS (embedded default) or the user's LVIS files, and the 85/15 split.

if MINILVIS:

    rule make_minilvis:
        output:
            train=TRAIN_JSON,
            val=VAL_JSON,
            pool=POOL_JSON,
            truth=f"{DATA}/pool_truth.json",
        params:
            cfg=section_hash("minilvis", "seed"),
            out=DATA,
        localrule: is_local("make_minilvis")
        resources:
            **rule_resources("make_minilvis"),
        log:
            f"{RUN}/logs/make_minilvis.log",
        shell:
            stage("make_minilvis") + " --out {params.out} > {log} 2>&1"

else:

    # The user's files are params, not inputs: the job graph (and `snakemake -n`) can be built
    # before any data exists; stages.import_lvis checks them and names what is missing.
    rule import_lvis:
        output:
            train=TRAIN_JSON,
            val=VAL_JSON,
            pool=POOL_JSON,
            report=f"{DATA}/validation.csv",
        params:
            cfg=section_hash("dataset"),
        localrule: is_local("import_lvis")
        resources:
            **rule_resources("import_lvis"),
        log:
            f"{RUN}/logs/import_lvis.log",
        shell:
            stage("import_lvis") + " --out-train {output.train} --out-val {output.val} --out-pool {output.pool}"
            " --out-report {output.report} > {log} 2>&1"


rule split:
    input:
        TRAIN_JSON,
    output:
        train=f"{RUN}/split/train85.json",
        holdout=f"{RUN}/split/holdout15.json",
    params:
        cfg=section_hash("split", "seed"),
    localrule: is_local("split")
    resources:
        **rule_resources("split"),
    log:
        f"{RUN}/logs/split.log",
    shell:
        stage("split") + " --train-json {input} --out-train {output.train} --out-holdout {output.holdout} > {log} 2>&1"
