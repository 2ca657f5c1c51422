"""The progressive-growing schedule, a pure function of images seen: levels, the cosine blend,
the exact switch points, and the per-level batch and learning-rate tables."""
import math

import pytest

from alae.config import ConfigError, parse_params, table_entry
from alae.train.schedule import Phase, Schedule


def make(levels=4, transition=1000, stabilize=3000, batch=(128, 64), lr=0.002, lr_mul=(1.0, 2.0)):
    return Schedule(levels=levels, transition=transition, stabilize=stabilize, batch_size=batch,
                    lr=lr, lr_multiplier=lr_mul)


def test_levels_and_switch_points():
    s = make()  # each level spans 4000 images; level 0 has no transition
    assert s(0) == Phase(0, 1.0, 128, 0.002)
    assert s(3999) == Phase(0, 1.0, 128, 0.002)
    assert s(4000) == Phase(1, 0.0, 64, 0.004)          # level 1 starts blending in at alpha 0
    assert s(4999).lod == 1 and 0.99 < s(4999).alpha < 1.0
    assert s(5000) == Phase(1, 1.0, 64, 0.004)          # transition over: stable
    assert s(7999).lod == 1 and s(8000) == Phase(2, 0.0, 64, 0.004)
    assert [s.level_start(lod) for lod in range(4)] == [0, 4000, 8000, 12000]
    # the last level goes on for ever
    assert s(12000).lod == 3 and s(10 ** 9) == Phase(3, 1.0, 64, 0.004)


def test_alpha_is_the_reference_cosine_ramp():
    s = make()
    for into in (0, 100, 250, 500, 750, 999):
        t = into / 1000
        assert s(4000 + into).alpha == pytest.approx(math.sin(math.pi * t - math.pi / 2) / 2 + 0.5)
    assert s(4500).alpha == pytest.approx(0.5)
    assert s(4250).alpha == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    alphas = [s(4000 + i).alpha for i in range(0, 1000, 10)]
    assert alphas == sorted(alphas)  # rises monotonically


def test_tables_repeat_their_last_entry():
    assert [table_entry((128, 64, 32), lod) for lod in range(6)] == [128, 64, 32, 32, 32, 32]
    assert table_entry(16, 5) == 16
    s = make(levels=6, batch=(512, 256, 128), lr=0.0015, lr_mul=(1.0, 1.0, 1.0, 1.0, 1.0, 2.0))
    assert [s(s.level_start(l)).batch_size for l in range(6)] == [512, 256, 128, 128, 128, 128]
    assert s(s.level_start(5)).lr == pytest.approx(0.003)


def test_no_growing():
    s = make(levels=1)
    assert s(0) == s(10 ** 6) == Phase(0, 1.0, 128, 0.002)
    s = make(levels=4, transition=0, stabilize=0)  # nothing to grow through: the last level
    assert s(0) == Phase(3, 1.0, 64, 0.004)


def test_zero_transition_switches_straight_to_stable():
    s = make(transition=0, stabilize=100)
    assert s(99).lod == 0 and s(100) == Phase(1, 1.0, 64, 0.004)


def test_from_params():
    params = parse_params({"lr": 0.001, "train": {"transition_kimg": 1.5, "stabilize_kimg": 2,
                                                  "batch_size": [32, 16], "lr_multiplier": [1, 3]}})
    s = Schedule.from_params(params, levels=4)
    assert (s.transition, s.stabilize) == (1500, 2000)
    assert s(3500) == Phase(1, 0.0, 16, pytest.approx(0.003))


@pytest.mark.parametrize("train, message", [
    ({"batch_size": []}, r"train.batch_size: \[\] is not allowed"),
    ({"batch_size": [64, 0]}, r"train.batch_size: \[64, 0\] is not allowed"),
    ({"batch_size": [64, 1.5]}, r"train.batch_size\[1\]: 1.5 has the wrong type"),
    ({"lr_multiplier": -1}, "train.lr_multiplier: -1.0 is not allowed"),
    ({"transition_kimg": -1}, "train.transition_kimg: -1.0 is not allowed"),
    ({"style_mixing": 1.5}, "train.style_mixing: 1.5 is not allowed"),
])
def test_bad_tables_are_refused_in_one_line(train, message):
    with pytest.raises(ConfigError, match=message):
        parse_params({"train": train})
