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


use rule bootstrap as fig2_bootstrap with:
    """Fig. 2's intervals at one labeled fraction: a paired image-level bootstrap of that fraction's
    teachers (each named by its smoothing kind) on the main evaluation set."""
    input:
        config=stage_config("bootstrap"),
        gt=evalset_json(MAIN_EVALSET),
        detections=lambda w: [d for _, d in sweep_detections(w.fraction)],
    output:
        sweep_intervals("{fraction}"),
    wildcard_constraints:
        fraction="|".join(fraction_name(f) for f in config["sweep"]["fractions"]),
    params:
        detections=lambda w: [f"{kind}={d}" for kind, d in sweep_detections(w.fraction)],
        compare=SWEEP_COMPARE,
    log:
        f"{RUN}/logs/fig2_bootstrap_frac{{fraction}}.log",
    benchmark:
        f"{RUN}/benchmarks/fig2_bootstrap_frac{{fraction}}.tsv",


rule fig2:
    """Fig. 2: teacher AP and APr against the labeled fraction, per smoothing kind, with intervals,
    and the paired differences between the kinds at each fraction."""
    input:
        manifest=manifest("fig2"),
        metrics=experiment_metrics(sweep_experiments(config)),
        intervals=[sweep_intervals(fraction_name(f)) for f in config["sweep"]["fractions"]],
    output:
        table=f"{RUN}/report/fig2_fraction_sweep.csv",
        figure=report(f"{RUN}/report/fig2_fraction_sweep.png", category="Figures", caption="../report/fig2.rst"),
        differences=report(f"{RUN}/report/fig2_differences.csv", category="Figure data",
                           caption="../report/fig2_differences.rst"),
        md=report(f"{RUN}/report/fig2_differences.md", category="Figures", caption="../report/fig2_differences.rst"),
    localrule: True
    resources:
        **rule_resources("fig2"),
    log:
        f"{RUN}/logs/fig2.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.cli.fig2 --manifest {{input.manifest:q}}"
        " --out-table {output.table:q} --out-figure {output.figure:q}"
        " --out-differences {output.differences:q} --out-md {output.md:q} > {log:q} 2>&1"
