# Files written from the config itself, on the submitting machine: the config file each stage reads
# and the manifests of the grid targets. Each is rewritten only when what it holds changes (its
# params), so that exactly the jobs that read a changed value rerun.


rule stage_config:
    """The validated config with its defaults, as stage `stage` reads it. It is rewritten only when
    a value the stage declares changes (params), so a new value reruns the stages that read it --
    their config file is newer than their outputs -- and nothing else."""
    output:
        f"{RUN}/config/{{stage}}.yaml",
    wildcard_constraints:
        stage="|".join(STAGES),
    params:
        declared=lambda w: trigger(w.stage),
    localrule: True
    log:
        f"{RUN}/logs/stage_config_{{stage}}.log",
    run:
        write_config(config, output[0])


rule manifest:
    """The runs a grid target gathers (Fig. 2, the tuning grids, the seeds) as a json manifest of
    structured values (stages.data.artifacts.read_manifest); rewritten when they change."""
    output:
        f"{RUN}/manifests/{{name}}.json",
    wildcard_constraints:
        name="|".join(MANIFESTS),
    params:
        records=lambda w: MANIFESTS[w.name](),
    localrule: True
    log:
        f"{RUN}/logs/manifest_{{name}}.log",
    run:
        write_json(params.records, output[0], indent=1)
