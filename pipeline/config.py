"""The workflow's config: schema validation with defaults, variants, per-dataset settings.

One source per default: `features` and `training` defaults live in the schema and must equal
the `FeatureParams` / `TrainSettings` dataclass defaults (tests/test_config.py checks it);
`model_params` and the list of model families are generated from the model registry; each
dataset's defaults live in its schema block only. Per-dataset override blocks are derived
from the global blocks, so a key is declared once.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pipeline.datasets import REGISTRY as DATASETS
from pipeline.dicts import deep_merge
from pipeline.models import REGISTRY as MODELS

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"
#: Blocks a dataset (or variant) may override, and their global schema blocks.
OVERRIDABLE = ("features", "training", "model_params", "on_bad_audio")


class ConfigError(ValueError):
    """Config values that cannot work; the message names every bad key, one per line."""


def _json_type(hint: Any) -> dict[str, Any]:
    """JSON schema of a config field's type annotation (the types model configs use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        inner = [_json_type(a) for a in args if a is not type(None)]
        return {"anyOf": inner + [{"type": "null"}]}
    if origin is tuple:
        return {"type": "array"}
    return {bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"},
            str: {"type": "string"}}[hint]


def family_schema(config_cls: type, with_defaults: bool = True) -> dict[str, Any]:
    """The schema of one model family's parameters, from its config dataclass."""
    hints = typing.get_type_hints(config_cls)
    props = {}
    for f in dataclasses.fields(config_cls):
        prop = {**_json_type(hints[f.name]), **f.metadata.get("schema", {}),
                "description": f.metadata.get("doc", "")}
        if with_defaults:
            default = f.default
            prop["default"] = list(default) if isinstance(default, tuple) else default
        props[f.name] = prop
    block = {"type": "object", "additionalProperties": False, "properties": props}
    return {**block, "default": {}} if with_defaults else block


def _without_defaults(block: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in block.items() if k != "default"}
    if "properties" in out:
        out["properties"] = {k: _without_defaults(v) for k, v in out["properties"].items()}
    return out


@functools.cache
def _schema(path: Path) -> dict[str, Any]:
    schema = yaml.safe_load(Path(path).read_text())
    props = schema["properties"]
    props["models"]["items"] = {"enum": list(MODELS)}
    props["models"]["default"] = list(MODELS)
    props["model_params"]["properties"] = {name: family_schema(f.config)
                                           for name, f in MODELS.items()}
    overrides = {key: _without_defaults(props[key]) for key in OVERRIDABLE}
    for name in DATASETS:
        if name in props:
            props[name]["properties"].update(overrides)
    schema["$defs"] = {"dataset_overrides": overrides}
    return schema


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    """The full JSON schema: the YAML file plus the parts derived from the registries."""
    return copy.deepcopy(_schema(Path(path)))


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
        if kind == "null" and lowered in ("null", "none", "~", ""):
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


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate(config: dict[str, Any], schema_path: Path = SCHEMA) -> dict[str, Any]:
    """Schema-validate a copy of `config`, fill defaults, then check what a schema cannot.
    Every problem is reported at once, one line per key."""
    config = copy.deepcopy(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(load_schema(schema_path))
    _coerce_cli_strings(validator, config)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"config key {_key(e.absolute_path)}: {e.message}" for e in errors]
    if not problems:
        problems = check(config)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


FOLD = re.compile(r"^(?P<base>[a-z][a-z0-9_]*)/fold-(?P<fold>\d+)$")


def split_fold(name: str) -> tuple[str, int | None]:
    """`fsdd_loso/fold-3` -> ("fsdd_loso", 3); a name without a fold -> (name, None)."""
    match = FOLD.match(name)
    return (match["base"], int(match["fold"])) if match else (name, None)


def module_of(config: dict[str, Any], name: str) -> str:
    """The registered dataset behind a name (itself, the `dataset` of a variant, or that of
    a fold's variant): with `dataset_settings`, the one place where a name is resolved."""
    name, _ = split_fold(name)
    if name in config.get("variants", {}):
        return config["variants"][name]["dataset"]
    return name


def is_composite(config: dict[str, Any], name: str) -> bool:
    """Whether a name is a composite dataset (or a variant or fold of one): several
    `sources`, each with its own raw folder (e.g. spoken_digits)."""
    module = module_of(config, name)
    return module in DATASETS and DATASETS[module].acquisition == "composite"


def fold_count(config: dict[str, Any], name: str) -> int:
    """How many fold runs a dataset or variant has (0: it is one run). A composite has the
    folds of its speaker_folds source (at most one; `check` says so)."""
    base = dataset_settings(config, name)
    if is_composite(config, name):
        return max([fold_count(config, s) for s in base["source_settings"]], default=0)
    return int(base.get("folds", 0)) if base.get("split") == "speaker_folds" else 0


def evaluation_only(config: dict[str, Any], name: str) -> bool:
    """Whether a dataset or variant puts every clip in its test split (e.g. Speech Commands'
    `split: test`): it only scores the models of other datasets (`cross_evaluations`)."""
    settings = dataset_settings(config, name)
    return DATASETS[settings["dataset"]].evaluation_only(settings)


def run_names(config: dict[str, Any]) -> list[str]:
    """The training runs of config `datasets`: each name, or `name/fold-k` for each fold of a
    name whose split is speaker_folds (folds run as separate jobs; tables pool them).
    Evaluation-only sets train nothing: they are built as cross_evaluations test sets."""
    out = []
    for name in config["datasets"]:
        if evaluation_only(config, name):
            continue
        k = fold_count(config, name)
        out += [f"{name}/fold-{i}" for i in range(k)] if k else [name]
    return out


def raw_source(config: dict[str, Any], name: str) -> str:
    """Whose raw data a dataset or variant reads (`resources/{source}`): a variant shares its
    dataset's download unless it changes one of the dataset's `acquire_keys` (another
    archive, checksum or synthesis setting); then it gets a folder of its own, shared with
    every later variant (in config order) whose acquire settings are the same."""
    name, _ = split_fold(name)
    module = module_of(config, name)
    keys = DATASETS[module].acquire_keys
    variants = config.get("variants", {})
    if not set(variants.get(name, {})) & set(keys):
        return module

    def acquired(other: str) -> dict[str, Any]:
        settings = dataset_settings(config, other)
        return {k: settings.get(k) for k in keys}

    mine = acquired(name)
    return next(other for other, spec in variants.items()
                if spec.get("dataset") == module and set(spec) & set(keys)
                and acquired(other) == mine)


#: The named input of the split and feature rules that holds a dataset's raw folder; a
#: composite has one per source, `raw_<source>` (see raw_inputs and raw_root).
RAW = "raw"


def raw_inputs(config: dict[str, Any], name: str) -> dict[str, str]:
    """The raw folders a dataset or variant reads, as named rule inputs: {"raw":
    "resources/<raw_source>"}, or for a composite one per source, {"raw_<source>": ...};
    so the workflow makes (downloads, synthesizes) every one of them first."""
    if is_composite(config, name):
        sources = dataset_settings(config, name)["sources"]
        return {f"{RAW}_{s}": f"resources/{raw_source(config, s)}" for s in sources}
    return {RAW: f"resources/{raw_source(config, name)}"}


def raw_root(inputs: Any) -> str | dict[str, str]:
    """What the data stages take as `root`, from a job's named inputs (those of raw_inputs,
    among others): the raw folder, or {source: folder} for a composite."""
    named = dict(inputs.items())
    if RAW in named:
        return str(named[RAW])
    return {k.removeprefix(f"{RAW}_"): str(v) for k, v in named.items()
            if k.startswith(f"{RAW}_")}


def raw_sources(config: dict[str, Any], acquisition: str) -> list[str]:
    """Every raw folder name that the rule for `acquisition` may have to make."""
    names = [n for n, d in DATASETS.items() if d.acquisition == acquisition]
    names += [v for v, spec in config.get("variants", {}).items()
              if spec.get("dataset") in DATASETS
              and DATASETS[spec["dataset"]].acquisition == acquisition
              and raw_source(config, v) == v]
    return names


def check(config: dict[str, Any]) -> list[str]:
    """What a schema cannot say: names that must refer to registered datasets."""
    known, variants, problems = sorted(DATASETS), config.get("variants", {}), []
    for name, variant in variants.items():
        if name in known:
            problems.append(f"config key variants.{name}: a variant cannot reuse a dataset name")
        elif variant["dataset"] not in known:
            problems.append(f"config key variants.{name}.dataset: unknown dataset "
                            f"{variant['dataset']!r}; known: {known}")
        else:
            mine = _check_variant_keys(name, variant)
            problems += mine or (_check_composite(config, name)
                                 if is_composite(config, name) else [])
    # a composite's own block is checked where it runs: its default sources name fsdd,
    # which a config may run in folds
    used = set(config["datasets"]) | {p[side] for p in config.get("cross_evaluations", [])
                                      for side in ("train", "test")}
    for name in known:
        if name in used and is_composite(config, name):
            problems += _check_composite(config, name)
    for i, name in enumerate(config["datasets"]):
        if module_of(config, name) not in known:
            problems.append(f"config key datasets[{i}]: unknown dataset {name!r}; known: "
                            f"{known} and variants {sorted(variants)}")
    for i, pair in enumerate(config.get("cross_evaluations", [])):
        for side in ("train", "test"):
            if module_of(config, pair[side]) not in known:
                problems.append(f"config key cross_evaluations[{i}].{side}: unknown dataset "
                                f"{pair[side]!r}")
    return problems or (_check_evaluation_only(config) + _check_noise_sources(config)
                        + _check_cross_features(config) + _check_ensembles(config))


def _check_ensembles(config: dict[str, Any]) -> list[str]:
    """Members that can be scored on one set of clips: known datasets and families, a
    `test` that a cross_evaluations pair scores, one fold count for all, and a name that is
    not a dataset's."""
    problems, known = [], set(DATASETS) | set(config.get("variants", {}))
    pairs = {(p["train"], p["test"]) for p in config.get("cross_evaluations", [])}
    for name, spec in config.get("ensembles", {}).items():
        key = f"config key ensembles.{name}"
        if name in known:
            problems.append(f"{key}: the name of a dataset; give the ensemble its own name")
        folds = set()
        for i, member in enumerate(spec["members"]):
            where, dataset, test = f"{key}.members[{i}]", member["dataset"], member["test"]
            if dataset not in known:
                problems.append(f"{where}.dataset: unknown dataset {dataset!r}")
                continue
            if member["model"] not in MODELS:
                problems.append(f"{where}.model: unknown model family {member['model']!r}; "
                                f"known: {list(MODELS)}")
            if evaluation_only(config, dataset):
                problems.append(f"{where}.dataset: {dataset} is evaluation-only: it trains no "
                                "model (score the models of another dataset on it with `test`)")
            # (only where it would run: another run may replace cross_evaluations)
            if test is not None and (dataset, test) not in pairs and _members_run(config, spec):
                problems.append(f"{where}.test: no cross_evaluations pair {{train: {dataset}, "
                                f"test: {test}}} scores this model on {test}; add one")
            if test is not None and fold_count(config, dataset):
                problems.append(f"{where}.test: {dataset} runs in folds; a member scored on "
                                "another test set must be one model")
            folds.add(fold_count(config, dataset))
        if len(folds) > 1:
            problems.append(f"{key}.members: the datasets run in different numbers of folds "
                            f"({sorted(folds)}); members must score the same test clips")
    return problems


def _check_cross_features(config: dict[str, Any]) -> list[str]:
    """A cross evaluation scores a model on features made as its own: for audio pairs, the
    `features` settings that evaluation compares (the modality's compatible keys) must agree,
    else the pair would fail only after its training ran."""
    from pipeline.modalities import get_modality  # the modalities import torch: not at start

    problems = []
    for i, pair in enumerate(config.get("cross_evaluations", [])):
        sides = [dataset_settings(config, pair[side]) for side in ("train", "test")]
        if {DATASETS[s["dataset"]].modality for s in sides} != {"audio"}:
            continue
        ours, theirs = (s["features"] for s in sides)
        differ = [k for k in get_modality("audio").compatible_keys
                  if ours.get(k) != theirs.get(k)]
        if differ:
            problems.append(
                f"config key cross_evaluations[{i}]: {pair['train']} and {pair['test']} make "
                "their features differently (" + ", ".join(
                    f"features.{k} {ours.get(k)} vs {theirs.get(k)}" for k in differ)
                + "): a model is scored only on features made as its own; give both the "
                "same `features`")
    return problems


def _check_noise_sources(config: dict[str, Any]) -> list[str]:
    """`training.noise.source` names a dataset whose train split holds the noise: a known,
    trainable, unfolded, non-composite one."""
    problems, known = [], set(DATASETS) | set(config.get("variants", {}))
    for name in config["datasets"]:
        source = dataset_settings(config, name)["training"]["noise"].get("source")
        key = f"{name}: training.noise.source"
        if not source:
            continue
        if source not in known:
            problems.append(f"{key}: unknown dataset {source!r}; known: {sorted(known)}")
        elif evaluation_only(config, source) or fold_count(config, source) or \
                is_composite(config, source):
            problems.append(f"{key}: {source} has no single train split to take noise from "
                            "(it is evaluation-only, runs in folds or is a composite)")
    return problems


def _check_evaluation_only(config: dict[str, Any]) -> list[str]:
    """An evaluation-only set cannot train a model, and one in `datasets` must be the test
    set of a cross evaluation of this run (else it would build nothing)."""
    problems = []
    for i, pair in enumerate(config.get("cross_evaluations", [])):
        if evaluation_only(config, pair["train"]):
            problems.append(f"config key cross_evaluations[{i}].train: {pair['train']} is "
                            f"evaluation-only (every clip in its test split): nothing trains "
                            f"on it")
    tested = {test for _, test in cross_pairs(config)}
    for i, name in enumerate(config["datasets"]):
        if evaluation_only(config, name) and name not in tested:
            problems.append(f"config key datasets[{i}]: {name} is evaluation-only (every clip "
                            f"in its test split), and no cross_evaluations pair of this run "
                            f"tests on it: run it with the dataset of a pair {{train: <dataset>, "
                            f"test: {name}}}")
    return problems


def _check_composite(config: dict[str, Any], name: str) -> list[str]:
    """A composite's sources: known, not composite, trainable, with the composite's labels;
    its test sources among them; at most one speaker_folds source, and a test source."""
    key = f"variants.{name}" if name in config.get("variants", {}) else name
    settings = dataset_settings(config, name)
    sources, problems = settings["sources"], []
    for i, source in enumerate(sources):
        where = f"config key {key}.sources[{i}]"
        module = module_of(config, source)
        if split_fold(source)[1] is not None or module not in DATASETS:
            problems.append(f"{where}: unknown dataset {source!r}")
        elif DATASETS[module].acquisition == "composite":
            problems.append(f"{where}: {source} is itself a composite dataset")
        elif evaluation_only(config, source):
            problems.append(f"{where}: {source} is evaluation-only (every clip in its test "
                            f"split): nothing trains on it")
        else:
            labels = DATASETS[module].label_names(dataset_settings(config, source))
            mine = DATASETS[settings["dataset"]].label_names(settings)
            if labels != mine:
                problems.append(f"{where}: {source} has labels {labels}, not {mine}")
    if problems:
        return problems
    for i, source in enumerate(settings["test_sources"]):
        if source not in sources:
            problems.append(f"config key {key}.test_sources[{i}]: {source} is not in sources")
    folded = [s for s in sources if fold_count(config, s)]
    if len(folded) > 1:
        problems.append(f"config key {key}.sources: {folded} each run in folds; at most one "
                        f"source may")
    elif folded and folded[0] not in settings["test_sources"]:
        problems.append(f"config key {key}.test_sources: {folded[0]} runs in folds (its "
                        f"test speakers per fold), so it must be a test source")
    return problems


def _check_variant_keys(name: str, variant: dict[str, Any]) -> list[str]:
    """A variant's keys are its dataset's keys: validate them against that block."""
    block = _without_defaults(copy.deepcopy(_schema(SCHEMA)["properties"][variant["dataset"]]))
    block["properties"]["dataset"] = {"type": "string"}
    validator = jsonschema.Draft202012Validator(block)
    _coerce_cli_strings(validator, variant)  # '{training: {batch_size: 16}}' gives '16'
    return [f"config key variants.{name}.{_key(e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(variant)]


def dataset_settings(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Everything the stages need for one dataset or variant: its own block (filled with its
    defaults by validation), the variant's keys over it, and the global features, training,
    model parameters and on_bad_audio with the dataset's overrides merged in."""
    module = module_of(config, name)
    base, fold = split_fold(name)
    own = deep_merge(config.get(module, {}), {
        k: v for k, v in config.get("variants", {}).get(base, {}).items() if k != "dataset"})
    settings = {k: v for k, v in own.items() if k not in OVERRIDABLE}
    settings.update(dataset=module, name=name)
    if fold is not None:
        settings.update(fold=fold, group=base)
    for key in OVERRIDABLE:
        glob, mine = config.get(key), own.get(key)
        settings[key] = deep_merge(glob, mine) if isinstance(glob, dict) else (
            glob if mine is None else mine)
    if module in DATASETS and DATASETS[module].acquisition == "composite":
        settings["source_settings"] = _source_settings(config, settings["sources"], fold)
    return settings


def _source_settings(config: dict[str, Any], sources: list[str], fold: int | None
                     ) -> dict[str, dict[str, Any]]:
    """The data settings of a composite's sources (its split and feature stages read them),
    each source's fold `fold` where the source runs in folds. Sources that are not
    datasets, or are composites, are left out here and reported by `check`."""
    out = {}
    for source in sources:
        module = module_of(config, source)
        if (split_fold(source)[1] is not None or module not in DATASETS
                or DATASETS[module].acquisition == "composite"):
            continue
        named = f"{source}/fold-{fold}" if fold is not None and fold_count(
            config, source) else source
        out[source] = stage_settings(config, named, "split")
    return out


def settings_for(name: str, overrides: dict[str, Any] | None = None,
                 **config: Any) -> dict[str, Any]:
    """A dataset's complete settings from defaults, for code outside the workflow (tests,
    notebooks, benchmarks): `overrides` is the dataset's block, `config` top-level keys. The
    name need not be runnable on its own (an evaluation-only set is not), only known."""
    full = validate({**config, **({name: overrides} if overrides else {})})
    if module_of(full, name) not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {sorted(DATASETS)} and variants "
                          f"{sorted(full['variants'])}")
    return dataset_settings(full, name)


#: Settings that only training and evaluation read; the data stages never see them, so
#: changing them does not re-run downloads, splits or features.
MODEL_KEYS = ("training", "model_params")


def stage_settings(config: dict[str, Any], name: str, stage: str) -> dict[str, Any]:
    """The part of dataset_settings a stage depends on (Snakemake re-runs a job when its
    params change, so each stage gets exactly what it reads).

    acquire: the dataset's `acquire_keys`; split: data settings; features: data settings plus
    `features` and `on_bad_audio`; train/evaluate: everything.
    """
    full = dataset_settings(config, name)
    if stage in ("train", "evaluate"):
        return full
    data = {k: v for k, v in full.items() if k not in MODEL_KEYS + ("features", "on_bad_audio")}
    if stage == "split":
        return data
    if stage == "features":
        return {**data, "features": full["features"], "on_bad_audio": full["on_bad_audio"]}
    if stage == "acquire":
        keys = DATASETS[full["dataset"]].acquire_keys
        return {k: v for k, v in data.items() if k in keys or k in ("dataset", "name")}
    raise ValueError(f"unknown stage {stage!r}")


def cross_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Cross-dataset evaluations whose two datasets are both in this run."""
    run = set(config["datasets"])
    return [(p["train"], p["test"]) for p in config.get("cross_evaluations", [])
            if p["train"] in run and p["test"] in run and p["train"] != p["test"]]


def _members_run(config: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether every member's dataset, model family and test set is in this run."""
    return all(m["dataset"] in config["datasets"] and m["model"] in config["models"]
               and (m["test"] is None or m["test"] in config["datasets"])
               for m in spec["members"])


def ensemble_runs(config: dict[str, Any]) -> list[str]:
    """The ensembles this run scores (every member's dataset, model and test set runs, and
    there are two models or more: a single member ensembles its seeds): each name, or
    `name/fold-k` for each fold when the members run in folds. (Validation has refused a
    member's missing cross_evaluations pair wherever its ensemble runs.)"""
    out = []
    for name, spec in config.get("ensembles", {}).items():
        members = spec["members"]
        if _members_run(config, spec) and len(members) * len(config["seeds"]) > 1:
            k = fold_count(config, members[0]["dataset"])
            out += [f"{name}/fold-{i}" for i in range(k)] if k else [name]
    return out


def ensemble_members(config: dict[str, Any], run: str) -> list[dict[str, Any]]:
    """The scored models of one ensemble run (`name` or `name/fold-k`): one per member and
    seed, as {dataset, model, seed, test} with the dataset's fold where it has folds."""
    name, fold = split_fold(run)
    out = []
    for member in config["ensembles"][name]["members"]:
        dataset = member["dataset"] if fold is None else f"{member['dataset']}/fold-{fold}"
        out += [{"dataset": dataset, "model": member["model"], "seed": seed,
                 "test": member["test"]} for seed in config["seeds"]]
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.config [config.yaml] [dataset ...]`: the effective config (every
    default filled in), or the merged settings of the named datasets/variants."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args.pop(0)) if args and args[0].endswith((".yaml", ".yml")) else Path(
        "config.yaml")
    try:
        config = validate(yaml.safe_load(path.read_text()) or {})
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    shown = {name: dataset_settings(config, name) for name in args} if args else config
    print(yaml.safe_dump(shown, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
