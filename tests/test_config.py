"""params.yaml validation: one line naming the key and value, before any work."""
from pathlib import Path

import pytest
import yaml

from alae.config import ConfigError, Params, load_params, merge_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid_and_complete():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Every field is spelled out in params.yaml, so `dvc exp run -S key=...` can set any of them.
    assert set(params.flat()) == {k for k in _flat(raw)}


def test_the_dataclass_defaults_are_the_shipped_params():
    """One source of defaults: `parse_params({})` is the configuration params.yaml ships."""
    shipped = load_params(ROOT / "params.yaml").flat()
    defaults = parse_params({}).flat()
    drift = {k: (defaults[k], shipped[k]) for k in shipped if defaults[k] != shipped[k]}
    assert not drift, ("alae/config.py default vs params.yaml, per key (make them agree): "
                       + ", ".join(f"{k}: {d!r} vs {s!r}" for k, (d, s) in drift.items()))


def _flat(raw, prefix=""):
    for k, v in raw.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield prefix + k


@pytest.mark.parametrize("raw, message", [
    ({"lr": -1}, "lr: -1.0 is not allowed"),
    ({"lr": "fast"}, "lr: 'fast' has the wrong type"),
    ({"data": {"source": "imagenet"}}, "data.source: 'imagenet' is not one of"),
    ({"data": {"resolution": 48}}, "data.resolution: 48 is not allowed (must be a power of two"),
    ({"data": {"channels": 2}}, "data.channels: 2 is not one of"),
    ({"data": {"source": "folder"}}, "data.path: required for data.source='folder'"),
    ({"train": {"kimgs": 3}}, "train.kimgs: unknown key (did you mean train.kimg?)"),
    ({"trian": {}}, "trian: unknown key (did you mean train?)"),
    ({"train": {"batch_size": 1.5}}, "train.batch_size: 1.5 has the wrong type (expected int)"),
    ({"train": {"channels_last": "yes"}},
     "train.channels_last: 'yes' has the wrong type (expected bool)"),
    ({"train": {"precision": "fp8"}}, "train.precision: 'fp8' is not one of"),
    ({"train": {"r1_interval": 0}}, "train.r1_interval: 0 is not allowed"),
    ({"train": {"device": "tpu"}}, "train.device: 'tpu' is not allowed"),
    ({"data": {"limit": 0}}, "data.limit: 0 is not allowed"),
    ({"data": {"loader_workers": -1}}, "data.loader_workers: -1 is not allowed (must be >= 0"),
    ({"data": {"flip": "yes"}}, "data.flip: 'yes' has the wrong type (expected bool)"),
    ({"model": {"kind": "gan"}}, "model.kind: 'gan' is not one of"),
    ({"data": {"resolution": 2}}, "data.resolution: 2 is not allowed (must be a power of two >= 4)"),
    ({"data": {"test_fraction": 1.5}}, "data.test_fraction: 1.5 is not allowed (must be between"),
    ({"data": {"reso": 64}}, "data.reso: unknown key (did you mean data.resolution?)"),
    ({"train": {"batch_size": [64, 0]}}, "train.batch_size: [64, 0] is not allowed (must be >= 1"),
    ({"train": {"lr_multiplier": [1, "x"]}}, "train.lr_multiplier[1]: 'x' has the wrong type"),
    ({"evaluate": {"features": "clip"}}, "evaluate.features: 'clip' is not one of"),
    ({"figures": {"psi": 2}}, "figures.psi: 2.0 is not allowed (must be in [0, 1] or null)"),
    ({"featurenet": {"epochs": 0}}, "featurenet.epochs: 0 is not allowed (must be >= 1)"),
    ({"data": {"source": "shards", "path": "pipe:cat {split}.tar"}},
     "data.path: 'pipe:cat {split}.tar' runs a shell command (webdataset pipe: URL); "
     "set data.allow_pipe: true to allow it"),
    ({"data": "fashion"}, "data: expected a mapping, got 'fashion'"),
])
def test_bad_values_name_key_and_value(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_ints_are_accepted_for_floats_and_defaults_fill_in():
    params = parse_params({"lr": 1, "train": {"beta1": 0}})
    assert params.lr == 1.0 and isinstance(params.train.beta1, float)
    assert params.model == Params().model


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_merge_params_nests_sections_and_dotted_keys_in_place():
    base = {"lr": 0.002, "train": {"kimg": 180, "batch_size": 64}, "data": {"limit": None}}
    out = merge_params(base, {"train": {"kimg": 5}, "data.limit": 400, "model.kind": "mlp",
                              "evaluate": {"seed": 1}})
    assert out is base
    assert base == {"lr": 0.002, "train": {"kimg": 5, "batch_size": 64}, "data": {"limit": 400},
                    "model": {"kind": "mlp"}, "evaluate": {"seed": 1}}
    assert list(base["train"]) == ["kimg", "batch_size"]  # base's order kept
    assert merge_params({"train": {"batch_size": 64}}, {"train.batch_size": [32, 16]}) == {
        "train": {"batch_size": [32, 16]}}  # a list replaces, it does not merge
