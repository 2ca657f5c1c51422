"""The FLOP count behind `alae preset`'s training-time warning (alae/cost.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from alae.config import parse_params
from alae.cost import FlopCount, level_flops, training_flops
from alae.presets import preset_params

TINY = {"data": {"resolution": 16, "channels": 1},
        "model": {"kind": "style", "latent": 16, "mapping_layers": 2, "start_channels": 8,
                  "max_channels": 16},
        "train": {"kimg": 10, "transition_kimg": 2, "stabilize_kimg": 2}}


def test_counts_torchs_formula_for_a_matmul():
    with FlopCount() as counter:
        torch.nn.functional.linear(torch.ones(3, 5), torch.ones(7, 5))
        torch.ones(4).relu()   # no FLOP formula: not counted
    assert counter.flops == 2 * 3 * 5 * 7


def test_meta_count_is_the_count_of_a_real_step():
    params = parse_params(TINY)
    on_meta = level_flops(params)
    torch.manual_seed(0)
    assert level_flops(params, device="cpu") == on_meta
    # three levels (4, 8, 16 px), each costlier than the one below
    assert len(on_meta) == 3 and on_meta[0] < on_meta[1] < on_meta[2]


def test_lazy_r1_costs_less_and_no_r1_least():
    base = parse_params(TINY)

    def top(**train):
        return level_flops(dataclasses.replace(
            base, train=dataclasses.replace(base.train, **train)))[-1]
    assert top(r1_gamma=0.0) < top(r1_interval=4) < top(r1_interval=1)


def test_the_run_sums_each_levels_cost_over_the_schedule():
    params = parse_params(TINY)
    f = level_flops(params)
    # 10 kimg: 4 at 4x4 (transition and stable), 4 at 8x8, the last 2 at 16x16
    assert training_flops(params) == pytest.approx(4000 * f[0] + 4000 * f[1] + 2000 * f[2])


@pytest.mark.parametrize("name", ["mnist", "celeba"])
def test_presets_count_without_memory(name):
    flops = level_flops(preset_params(name))   # on the meta device: no memory, no arithmetic
    assert all(a < b for a, b in zip(flops, flops[1:]))
