"""Config semantics beyond the JSON schema: dataset variants, merged per-dataset settings."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _with_defaults(validator_class):
    """The jsonschema recipe that fills `default` values while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _read_scalar(text: str, wanted: list[str]) -> tuple[bool, Any]:
    """Read `text` as the first schema type in `wanted` that it spells."""
    lowered = text.strip().lower()
    for kind in wanted:
        try:
            if kind == "integer":
                return True, int(text)
            if kind == "number":
                return True, float(text)
        except ValueError:
            continue
        if kind == "boolean" and lowered in ("true", "false"):
            return True, lowered == "true"
        if kind == "null" and lowered in ("null", "none", "~"):
            return True, None
    return False, None


def _coerce_cli_strings(validator, config: dict[str, Any]) -> None:
    """Snakemake's --config reads nested values as strings ('{epochs: 2}' gives '2'); where
    the schema wants a number, boolean or null, read such a string as one."""
    for _ in range(10_000):
        for err in validator.iter_errors(config):
            if err.validator != "type" or not isinstance(err.instance, str):
                continue
            wanted = err.validator_value
            ok, value = _read_scalar(err.instance, [wanted] if isinstance(wanted, str) else wanted)
            if ok and err.absolute_path:
                *parents, last = err.absolute_path
                target = config
                for key in parents:
                    target = target[key]
                target[last] = value
                break
        else:
            return


def validate(config: dict[str, Any], schema_path: Path = SCHEMA) -> dict[str, Any]:
    """Schema-validate a copy of `config`, fill defaults, then check what a schema cannot."""
    schema = yaml.safe_load(schema_path.read_text())
    config = copy.deepcopy(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    _coerce_cli_strings(validator, config)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"config key {key}: {err.message}")
    check(config)
    return config


def registered_datasets() -> list[str]:
    from pipeline.datasets import REGISTRY

    return sorted(REGISTRY)


def module_of(config: dict[str, Any], name: str) -> str:
    """The registered dataset behind a name (itself, or the `dataset` of a variant)."""
    if name in config.get("variants", {}):
        return config["variants"][name]["dataset"]
    return name


def check(config: dict[str, Any]) -> None:
    known = registered_datasets()
    for name, variant in config.get("variants", {}).items():
        if name in known:
            raise ConfigError(f"config key variants.{name}: a variant cannot reuse a dataset name")
        if variant["dataset"] not in known:
            raise ConfigError(f"config key variants.{name}.dataset: unknown dataset "
                              f"{variant['dataset']!r}; known: {known}")
    for i, name in enumerate(config["datasets"]):
        if module_of(config, name) not in known:
            raise ConfigError(f"config key datasets[{i}]: unknown dataset {name!r}; known: "
                              f"{known} and variants {sorted(config.get('variants', {}))}")
    for i, pair in enumerate(config.get("cross_evaluations", [])):
        for side in ("train", "test"):
            if module_of(config, pair[side]) not in known:
                raise ConfigError(f"config key cross_evaluations[{i}].{side}: unknown dataset "
                                  f"{pair[side]!r}")


def dataset_settings(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Everything the stages need for one dataset: global defaults merged with its settings."""
    module = module_of(config, name)
    own = deep_merge(config.get(module, {}), {
        k: v for k, v in config.get("variants", {}).get(name, {}).items() if k != "dataset"})
    settings = {k: v for k, v in own.items() if k not in ("features", "training", "model_params")}
    settings.update(
        dataset=module,
        name=name,
        on_bad_audio=config.get("on_bad_audio", "fail"),
        features=deep_merge(config.get("features", {}), own.get("features", {})),
        training=deep_merge(config.get("training", {}), own.get("training", {})),
        model_params=deep_merge(config.get("model_params", {}), own.get("model_params", {})),
    )
    return settings


#: Settings that only training and evaluation read; the data stages never see them, so
#: changing them does not re-run downloads, splits or features.
MODEL_KEYS = ("training", "model_params")


def stage_settings(config: dict[str, Any], name: str, stage: str) -> dict[str, Any]:
    """The part of dataset_settings a stage depends on (Snakemake re-runs a job when its
    params change, so each stage gets exactly what it reads).

    acquire: the dataset module's acquisition keys; split: data settings; features: data
    settings plus `features` and `on_bad_audio`; train/evaluate: everything.
    """
    from pipeline.datasets import get_dataset

    full = dataset_settings(config, name)
    if stage in ("train", "evaluate"):
        return full
    data = {k: v for k, v in full.items()
            if k not in MODEL_KEYS + ("features", "on_bad_audio")}
    if stage == "split":
        return data
    if stage == "features":
        return {**data, "features": full["features"], "on_bad_audio": full["on_bad_audio"]}
    if stage == "acquire":
        keys = getattr(get_dataset(full["dataset"]), "acquire_keys", None)
        if keys is None:
            return data
        return {k: v for k, v in data.items() if k in keys or k in ("dataset", "name")}
    raise ValueError(f"unknown stage {stage!r}")


def cross_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Cross-dataset evaluations whose two datasets are both in this run."""
    run = set(config["datasets"])
    return [(p["train"], p["test"]) for p in config.get("cross_evaluations", [])
            if p["train"] in run and p["test"] in run and p["train"] != p["test"]]
