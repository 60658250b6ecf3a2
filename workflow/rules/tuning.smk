# The grids tuned on holdout15 (section 4.1 of the paper): `snakemake tune_teacher` (eps x gamma)
# and `snakemake tune_student` (the tuning.student grid); each writes its choice as a config overlay.


checkpoint tune_teacher:
    """eps/gamma grid: train85 teachers evaluated on holdout15; writes the chosen values."""
    input:
        manifest=manifest("tune_teacher"),
        metrics=experiment_metrics(teacher_grid(config, "train85")),
    output:
        # the choice first: rules that read it through the checkpoint name it as their input
        choice=f"{RUN}/tuning/teacher_choice.json",
        table=f"{RUN}/tuning/teacher_grid.csv",
    localrule: True
    resources:
        **rule_resources("tune_teacher"),
    log:
        f"{RUN}/logs/tune_teacher.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.cli.tune --manifest {{input.manifest:q}}"
        " --out-table {output.table:q} --out-choice {output.choice:q} > {log:q} 2>&1"


checkpoint tune_student:
    """The tuning.student grid (lambda x unlabeled weight in the paper) of the variant registered as
    tuned: students on train85 + unlabeled, Delta from holdout15's half a, judged on half b."""
    input:
        manifest=manifest("tune_student"),
        metrics=experiment_metrics(student_grid(config)),
    output:
        # the choice first: rules that read it through the checkpoint name it as their input
        choice=f"{RUN}/tuning/student_choice.json",
        table=f"{RUN}/tuning/student_grid.csv",
    localrule: True
    resources:
        **rule_resources("tune_student"),
    log:
        f"{RUN}/logs/tune_student.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.cli.tune --manifest {{input.manifest:q}}"
        " --out-table {output.table:q} --out-choice {output.choice:q} > {log:q} 2>&1"


rule student_tuned_config:
    """The main-line students' config with student.use_tuned: the run's config with the chosen
    lambda and unlabeled weight."""
    input:
        config=stage_config("train_student"),
        choice=lambda w: checkpoints.tune_student.get().output.choice,
    output:
        f"{RUN}/tuning/train_student.yaml",
    localrule: True
    log:
        f"{RUN}/logs/student_tuned_config.log",
    shell:
        f"{shlex.quote(sys.executable)} -m stages.cli.write_config --config {{input.config:q}} --overlay {{input.choice:q}}"
        " --out {output:q} > {log:q} 2>&1"
