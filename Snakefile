# Spoken-word and digit recognition: data -> features -> models -> evaluation -> report.
# This file only loads and validates config, includes the rules and names the targets.

import sys

from pipeline.config import ConfigError, validate


configfile: "config.yaml"


try:  # JSON schema (workflow/schemas) + defaults + semantic checks; every problem at once
    config = validate(config)
except ConfigError as err:
    sys.exit(f"Invalid config (config.yaml and --config):\n{err}")


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
