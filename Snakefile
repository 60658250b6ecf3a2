# The pseudo-label pipeline (arXiv 2403.11675) as a Snakemake DAG. Rules only wire files;
# every step is `python -m stages.cli.<name>` (docs/design.md: the DAG, the artifacts, the rules).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/configs.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/retrieval.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/seeds.smk"


rule all:
    input:
        report_outputs(),
    localrule: True


rule paper_tables:
    """Everything the paper's Table 1 and Figs. 2-4 need for this config, and nothing more:
    `snakemake paper_tables`, then `snakemake paper_tables --report report.html`."""
    input:
        report_outputs(),
        rules.fig2.output,
    localrule: True
