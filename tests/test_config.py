"""Config validation: wrong keys and values fail before any job runs, naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from pipeline.config import ConfigError, cross_pairs, dataset_settings, validate


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
    assert cross_pairs(validate({"datasets": ["tts_digits", "fsdd"]})) == [("tts_digits", "fsdd")]


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(ROOT),
         "--config", "training={epochs: -1}"],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert "config key training.epochs" in proc.stdout + proc.stderr
