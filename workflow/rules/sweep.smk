# Fig. 2 (`snakemake fig2`): teachers on class-keeping fractions of the labeled train set, one per
# smoothing kind and fraction (the experiment clones of experiments.smk train and evaluate them).


rule subsample:
    """Fig. 2's class-keeping fractions of the full labeled train set, one json per fraction."""
    input:
        config=stage_config("subsample"),
        train=TRAIN_JSON,
    output:
        [labeled_json(labeled) for labeled in FRACTIONS],
    resources:
        **rule_resources("subsample"),
    log:
        f"{RUN}/logs/subsample.log",
    benchmark:
        f"{RUN}/benchmarks/subsample.tsv",
    shell:
        stage("subsample") + " --train-json {input.train:q} --out {output:q} > {log:q} 2>&1"


rule fig2:
    """Fig. 2: teacher AP and APr against the labeled fraction, per smoothing kind."""
    input:
        manifest=manifest("fig2"),
        metrics=experiment_metrics(sweep_experiments(config)),
    output:
        table=f"{RUN}/report/fig2_fraction_sweep.csv",
        figure=report(f"{RUN}/report/fig2_fraction_sweep.png", category="Figures", caption="../report/fig2.rst"),
    localrule: True
    resources:
        **rule_resources("fig2"),
    log:
        f"{RUN}/logs/fig2.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.cli.fig2 --manifest {{input.manifest:q}}"
        " --out-table {output.table:q} --out-figure {output.figure:q} > {log:q} 2>&1"
