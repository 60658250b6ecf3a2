# `snakemake seeds`: Table 1 again under every seed of `seeds` on the same data.


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
        f"{shlex.quote(sys.executable)} -m stages.cli.seeds --runs {{params.runs:q}} --intervals {{params.intervals:q}}"
        " --out-table {output.table:q} --out-differences {output.differences:q} --out-md {output.md:q} > {log:q} 2>&1"
