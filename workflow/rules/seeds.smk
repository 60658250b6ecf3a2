# `snakemake seeds`: Table 1 again under every seed of `seeds` on the same data, judged on the main
# evaluation set (the first of evaluation.sets).


use rule bootstrap as seed_bootstrap with:
    """Table 1's intervals under one seed: a paired image-level bootstrap of that seed's teacher and
    students on the main evaluation set, with each model's APr - AP (the seed's P1)."""
    input:
        config=stage_config("bootstrap"),
        gt=evalset_json(MAIN_EVALSET),
        detections=lambda w: [d for _, _, d in seed_models(int(w.seed))],
    output:
        f"{RUN}/seeds/seed{{seed}}_intervals.csv",
    wildcard_constraints:
        seed="|".join(str(s) for s in config["seeds"] if s != config["seed"]) or "^$",  # the own seed: the main line's
    params:
        detections=lambda w: [f"{m}={d}" for m, _, d in seed_models(int(w.seed))],
        compare=TABLE1_COMPARE,
    log:
        f"{RUN}/logs/seed_bootstrap_{{seed}}.log",
    benchmark:
        f"{RUN}/benchmarks/seed_bootstrap_{{seed}}.tsv",


rule seeds:
    """Table 1 under every seed of `seeds` (not part of `all`): mean +- std per row, each seed's
    paired-bootstrap differences and each seed's premise P1 (its teacher's APr - AP)."""
    input:
        runs=manifest("seeds_runs"),
        intervals=manifest("seeds_intervals"),
        metrics=[m for s in config["seeds"] for _, m, _ in seed_models(s)],
        seed_intervals=[seed_intervals(s) for s in config["seeds"]],
    output:
        table=f"{RUN}/seeds/seeds.csv",
        differences=f"{RUN}/seeds/seeds_differences.csv",
        p1=f"{RUN}/seeds/seeds_p1.csv",
        md=report(f"{RUN}/seeds/seeds.md", category="Seeds", caption="../report/seeds.rst"),
    localrule: True
    log:
        f"{RUN}/logs/seeds.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.cli.seeds --runs {{input.runs:q}} --intervals {{input.intervals:q}}"
        " --out-table {output.table:q} --out-differences {output.differences:q} --out-p1 {output.p1:q}"
        " --out-md {output.md:q} > {log:q} 2>&1"
