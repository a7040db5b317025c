# Spoken-word and digit recognition: data -> features -> models -> evaluation -> report.
# This file only loads and validates config, includes the rules and names the targets.

from pipeline.config import validate


configfile: "config.yaml"


config = validate(config)  # JSON schema (workflow/schemas) + defaults + semantic checks


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"


rule all:
    default_target: True
    input:
        all_targets(),
