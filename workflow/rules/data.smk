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
        log:
            f"{RUN}/logs/make_minilvis.log",
        shell:
            stage("make_minilvis") + " --out {params.out} > {log} 2>&1"

else:

    rule import_lvis:
        input:
            train=config["dataset"]["train_json"] or [],
            val=config["dataset"]["val_json"] or [],
        output:
            train=TRAIN_JSON,
            val=VAL_JSON,
            pool=POOL_JSON,
        params:
            cfg=section_hash("dataset"),
        log:
            f"{RUN}/logs/import_lvis.log",
        shell:
            stage("import_lvis") + " --out-train {output.train} --out-val {output.val} --out-pool {output.pool} > {log} 2>&1"


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
