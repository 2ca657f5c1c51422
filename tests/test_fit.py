"""Params that do not fit the shards stop the train stage before any work."""
import pytest

from alae.config import ConfigError, parse_params
from alae.data import read_manifest
from alae.data.fit import check_fits_shards


@pytest.mark.parametrize("raw, message", [
    ({"data": {"channels": 3}}, "data.channels: 3 does not match the 1-channel images"),
    ({"data": {"resolution": 64}}, "data.resolution: 64 does not match the 32x32 images"),
    ({"train": {"batch_size": 1024}}, "train.batch_size: 1024 is larger than the 600 training"),
    ({"train": {"batch_size": [64, 2048]}}, "train.batch_size: 2048 is larger than"),
])
def test_mismatches_name_key_value_and_shards(tiny_shards, raw, message):
    with pytest.raises(ConfigError) as err:
        check_fits_shards(parse_params(raw), read_manifest(tiny_shards), tiny_shards)
    assert message in str(err.value) and str(tiny_shards) in str(err.value)


def test_fitting_params_pass(tiny_shards):
    check_fits_shards(parse_params({"train": {"batch_size": 600}}), read_manifest(tiny_shards),
                      tiny_shards)
