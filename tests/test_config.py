"""Config validation: wrong keys and values fail before any job runs, naming the key."""

from __future__ import annotations

import ast
import dataclasses
import graphlib
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from pipeline.config import (
    ConfigError,
    cross_pairs,
    dataset_settings,
    load_schema,
    module_of,
    raw_source,
    stage_settings,
    validate,
)
from pipeline.datasets import REGISTRY as DATASETS
from pipeline.modalities.audio import FeatureParams
from pipeline.models import REGISTRY as MODELS
from pipeline.models import make_config
from pipeline.training import TrainSettings


def test_project_config_is_valid_and_complete():
    config = validate(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert config["datasets"][0] == "tts_digits"
    assert config["training"]["batch_size"] == 128  # lecture's MATLAB options
    assert config["features"]["n_mels"] == 40


def test_defaults_fill_every_key():
    config = validate({})
    assert config["models"] == ["dense", "conv1d", "cnn2d"]
    assert config["training"]["spec_augment"]["time_masks"] == 0
    assert config["model_params"]["cnn2d"]["filters"] == [12, 24, 48, 48, 48]
    assert config["fsdd"]["split"] == "standard"


@pytest.mark.parametrize("bad,key", [
    ({"datasets": ["fsd"]}, "datasets[0]"),
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"trainin": {}}, "(top level)"),
    ({"fsdd": {"split": "random"}}, "fsdd.split"),
    ({"model_params": {"dense": {"hiden": [3]}}}, "model_params.dense"),
    ({"models": ["transformer"]}, "models.0"),
    ({"variants": {"x": {"dataset": "nope"}}}, "variants.x.dataset"),
    ({"cross_evaluations": [{"train": "tts_digits", "test": "nope"}]},
     "cross_evaluations[0].test"),
])
def test_bad_values_name_the_key(bad, key):
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert f"config key {key}" in str(err.value)


def test_command_line_strings_are_read_as_schema_types():
    """snakemake --config training='{epochs: 2}' hands nested values over as strings."""
    config = validate({"training": {"epochs": "2", "learning_rate": "1e-3",
                                    "class_weights": "true"},
                       "features": {"f_max": "null"}, "tts_digits": {"accents": ["on"]}})
    assert config["training"]["epochs"] == 2
    assert config["training"]["learning_rate"] == pytest.approx(1e-3)
    assert config["training"]["class_weights"] is True
    assert config["features"]["f_max"] is None
    assert config["tts_digits"]["accents"] == ["on"]  # a string where the schema wants one
    with pytest.raises(ConfigError, match="training.epochs"):
        validate({"training": {"epochs": "two"}})
    # inside a variant too (its keys are checked against its dataset's block)
    config = validate({"variants": {"x": {"dataset": "tts_digits", "repetitions": "2",
                                          "training": {"batch_size": "16"}}}})
    assert config["variants"]["x"]["training"]["batch_size"] == 16
    assert dataset_settings(config, "x")["repetitions"] == 2


def test_variant_settings_merge_over_dataset_and_globals():
    config = validate({"datasets": ["fsdd_speakers"], "fsdd": {"valid_indices": 7},
                       "training": {"epochs": 3}, "variants": {"fsdd_speakers": {
                           "dataset": "fsdd", "split": "speaker", "test_speakers": ["theo"],
                           "training": {"batch_size": 16}}}})
    s = dataset_settings(config, "fsdd_speakers")
    assert s["dataset"] == "fsdd" and s["name"] == "fsdd_speakers"
    assert s["split"] == "speaker" and s["valid_indices"] == 7
    assert s["training"]["epochs"] == 3 and s["training"]["batch_size"] == 16


def test_cross_pairs_only_when_both_datasets_run():
    assert cross_pairs(validate({"datasets": ["tts_digits"]})) == []
    pair = [{"train": "tts_digits", "test": "fsdd"}]
    assert cross_pairs(validate({"datasets": ["tts_digits"], "cross_evaluations": pair})) == []
    assert cross_pairs(validate({"datasets": ["tts_digits", "fsdd"],
                                 "cross_evaluations": pair})) == [("tts_digits", "fsdd")]


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(ROOT),
         "--config", "training={epochs: -1}"],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert "config key training.epochs" in proc.stdout + proc.stderr


def test_every_config_error_at_once_without_traceback():
    """Three typos give three lines, and no Python traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(ROOT),
         "--config", "trainig={epochs: 3}", "training={batch_size: 0}",
         "fsdd={splitt: speaker}"],
        capture_output=True, text=True, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert [line for line in out.splitlines() if line.startswith("config key")] == [
        "config key (top level): Additional properties are not allowed ('trainig' was "
        "unexpected)",
        "config key fsdd: Additional properties are not allowed ('splitt' was unexpected)",
        "config key training.batch_size: 0 is less than the minimum of 1",
    ]
    assert "Traceback" not in out and 'File "' not in out


# ------------------------------------------------------------ one source of truth (defaults)

def _schema_defaults(block):
    return {k: v["default"] for k, v in block["properties"].items() if "default" in v}


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return list(value) if isinstance(value, tuple) else value


def test_schema_defaults_equal_the_dataclass_defaults():
    """The workflow reads the schema's defaults, tests/predict/benchmarks the dataclasses':
    they must be one set of values."""
    schema = load_schema()["properties"]
    expected = {"features": _plain(FeatureParams()), "training": _plain(TrainSettings())}
    for block, values in expected.items():
        filled = validate({})[block]
        assert filled == values, block
        declared = set(schema[block]["properties"])
        assert declared == {f.name for f in dataclasses.fields(
            FeatureParams if block == "features" else TrainSettings)}, block
    for name, family in MODELS.items():
        assert validate({})["model_params"][name] == _plain(family.config()), name


def test_dataset_blocks_declare_every_override_once():
    """Per-dataset features/training/model_params accept exactly the global keys."""
    schema = load_schema()["properties"]
    for name in DATASETS:
        assert name in schema, f"dataset {name} has no schema block"
        props = schema[name]["properties"]
        for key in ("features", "training", "model_params", "on_bad_audio"):
            assert key in props, (name, key)
        assert set(props["training"]["properties"]) == set(schema["training"]["properties"])
        assert "default" not in props["features"]["properties"]["n_mels"]
    with pytest.raises(ConfigError, match=r"config key fsdd.features: Additional"):
        validate({"fsdd": {"features": {"n_mel": 20}}})
    with pytest.raises(ConfigError, match=r"config key variants.v.model_params.dense"):
        validate({"variants": {"v": {"dataset": "fsdd", "model_params": {"dense": {"x": 1}}}}})


def test_unknown_keys_fail_the_same_way_everywhere():
    for call, what in ((lambda: FeatureParams.from_dict({"n_mel": 3}), "features"),
                       (lambda: TrainSettings.from_dict({"epoch": 3}), "training"),
                       (lambda: make_config("dense", {"hiden": [3]}), "model_params.dense")):
        with pytest.raises(ValueError, match=rf"^{re.escape(what)}: unknown parameters"):
            call()


def test_model_families_come_from_the_registry_alone():
    schema = load_schema()["properties"]
    assert schema["models"]["items"]["enum"] == list(MODELS)
    assert list(schema["model_params"]["properties"]) == list(MODELS)
    assert validate({})["models"] == list(MODELS)


def _pipeline_imports():
    """Module -> the pipeline modules it imports anywhere (top level or inside functions)."""
    package = ROOT / "pipeline"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    deps.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_no_import_cycles():
    """Every import counts, including those inside functions: a cycle hidden by a local
    import is still a cycle."""
    graph = _pipeline_imports()
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def test_every_module_imports_alone():
    """Each module in a fresh interpreter (an import order that only works from one entry
    point fails here)."""
    code = "import importlib, sys; importlib.import_module(sys.argv[1])"
    procs = {name: subprocess.Popen([sys.executable, "-c", code, name], cwd=ROOT,
                                    stderr=subprocess.PIPE, text=True)
             for name in sorted(_pipeline_imports())}
    failed = {name: p.communicate()[1][-1500:] for name, p in procs.items() if p.wait()}
    assert not failed, failed


def test_variants_resolve_in_one_place():
    config = validate({"datasets": ["fsdd_speakers", "sc_sample"], "variants": {
        "fsdd_speakers": {"dataset": "fsdd", "split": "speaker", "test_speakers": ["theo"]},
        "sc_sample": {"dataset": "speech_commands",
                      "archive": {"v0.02": "speech_commands_sample.tar.gz"}}}})
    assert module_of(config, "fsdd_speakers") == "fsdd"
    assert raw_source(config, "fsdd_speakers") == "fsdd"  # same download
    assert raw_source(config, "sc_sample") == "sc_sample"  # another archive: its own folder
    assert stage_settings(config, "sc_sample", "acquire")["archive"]["v0.02"] == \
        "speech_commands_sample.tar.gz"


@pytest.mark.parametrize("train, test, key", [
    ("fsdd_trim", "sc_digits_sample", "features.trim_db 25 vs None"),
    ("fsdd", "sc_digits_sample_trim", "features.trim_db None vs 25"),
    ("tts_digits", "speech_commands_sample", "features.sample_rate 8000 vs 16000"),
])
def test_cross_pair_with_other_features_is_refused_before_anything_runs(train, test, key):
    """A model is scored only on features made as its own: the config says so at once, not
    the evaluation job after the training has run."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["cross_evaluations"] = [{"train": train, "test": test}]
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate(raw)
