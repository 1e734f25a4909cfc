# rewardseg: one command regenerates the study.
#   snakemake --cores all                                   # the default study
#   snakemake --cores all --configfile configs/studies/X.yaml
# The software is the pip-installed `rewardseg` package (see README), so rules carry no
# conda env or container.
from snakemake.utils import min_version

min_version("9.0")

if not config:  # --configfile replaces the default study instead of merging into it
    configfile: "configs/studies/default.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/paper.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
