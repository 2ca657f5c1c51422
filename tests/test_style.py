"""StyleALAE (ALAE sec. 4): shapes at every level of detail, exact continuity of the growing
blend at alpha = 0, style mixing, truncation, and a short CPU run where training works."""
import pytest
import torch
import torch.nn.functional as F

from alae.config import ModelConfig, parse_params
from alae.nn import Level, build_model
from alae.train.steps import crossover_styles, make_optimizers, sample_w

SMALL = ModelConfig(kind="style", latent=16, mapping_layers=2, start_channels=4, max_channels=16)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = build_model(SMALL, channels=3, resolution=32)
    # Non-zero noise weights and biases, so the tests see every path (they start at zero).
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1 and ("noise" in name or "bias" in name):
                p.normal_(0, 0.5)
    return m


def test_shapes_at_every_level(model):
    assert (model.num_levels, model.num_styles) == (4, 8)
    z = torch.randn(3, 16)
    for lod in range(4):
        r = 4 * 2 ** lod
        for alpha in (0.0, 0.3, 1.0):
            x = model.generate(z, level=Level(lod, alpha))
            assert x.shape == (3, 3, r, r)
            assert model.encode(x, Level(lod, alpha)).shape == (3, 16)
            assert model.score(x, Level(lod, alpha)).shape == (3,)
    # the public, level-free calls work at the final resolution
    assert model.mapping(z).shape == (3, 16)
    assert model.generate(z).shape == model.reconstruct(torch.randn(3, 3, 32, 32)).shape == (3, 3, 32, 32)
    assert model.decode(model.encode(torch.randn(2, 3, 32, 32))).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("lod", [1, 2, 3])
def test_generator_at_alpha_zero_is_the_upsampled_previous_level(model, lod):
    w = model.mapping(torch.randn(4, 16))
    new = model.decode(w, Level(lod, 0.0), noise=False)
    previous = model.decode(w, Level(lod - 1, 1.0), noise=False)
    assert torch.equal(new, F.interpolate(previous, scale_factor=2, mode="nearest"))
    assert not torch.allclose(model.decode(w, Level(lod, 1.0), noise=False), new)  # alpha matters


@pytest.mark.parametrize("lod", [1, 2, 3])
def test_encoder_at_alpha_zero_is_the_previous_level_on_the_half_resolution_image(model, lod):
    r = 4 * 2 ** lod
    x = torch.randn(4, 3, r, r)
    previous = model.encode(F.avg_pool2d(x, 2), Level(lod - 1))
    assert torch.equal(model.encode(x, Level(lod, 0.0)), previous)
    assert not torch.allclose(model.encode(x, Level(lod)), model.encode(x, Level(lod, 0.0)))


def test_noise_is_stochastic_unless_switched_off(model):
    w = model.mapping(torch.randn(2, 16))
    assert not torch.equal(model.decode(w, Level(3)), model.decode(w, Level(3)))
    assert torch.equal(model.decode(w, Level(3), noise=False), model.decode(w, Level(3), noise=False))


def test_per_slot_styles_equal_the_broadcast_one(model):
    w = model.mapping(torch.randn(2, 16))
    per_slot = w[:, None].expand(-1, 8, -1).clone()
    assert torch.equal(model.decode(w, noise=False), model.decode(per_slot, noise=False))
    with pytest.raises(ValueError, match="expected"):
        model.decode(torch.randn(2, 5, 16))


def test_partly_grown_model_works_at_full_resolution(model):
    model.set_level(Level(1))  # trained up to 8x8
    w = model.mapping(torch.randn(2, 16))
    x = model.decode(w, noise=False)
    assert x.shape == (2, 3, 32, 32)
    # the 8x8 image the model was grown to, each pixel a block of 4x4
    assert torch.equal(x, F.interpolate(model.decode(w, Level(1), noise=False),
                                        scale_factor=4))
    big = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.encode(big), model.encode(F.avg_pool2d(big, 4), Level(1)))


def test_networks_take_the_level_explicitly_and_never_read_the_recorded_one(model):
    """G and E work at the level they are given; the buffers only store what training reached
    (the ALAE wrapper reads them when a caller gives no level)."""
    w = model.mapping(torch.randn(2, 16))
    x8 = torch.randn(2, 3, 8, 8)
    model.set_level(Level(1, 0.4))
    g, e = model.synthesis(w, 1, 0.4, noise=False), model.encoder(x8, 1, 0.4)
    model.set_level(Level(3))
    assert torch.equal(model.synthesis(w, 1, 0.4, noise=False), g)
    assert torch.equal(model.encoder(x8, 1, 0.4), e)
    with pytest.raises(TypeError):
        model.synthesis(w)  # no hidden default level
    model.set_level(Level(1, 0.4))
    level = model.recorded_level()
    assert level.lod == 1 and level.alpha == pytest.approx(0.4)  # a float32 buffer
    assert torch.equal(model.decode(w, noise=False), F.interpolate(g, scale_factor=4))


def test_training_noise_is_the_ranks_slice_and_the_layers_know_no_ranks(model):
    """One process: the training step's noise source draws what a plain torch.randn draws
    (the same stream as before the source existed); the layers import nothing distributed."""
    import ast
    from pathlib import Path

    from alae.train.steps import RANK_NOISE

    w = model.mapping(torch.randn(2, 16))
    torch.manual_seed(5)
    a = model.decode(w, Level(2), RANK_NOISE)
    torch.manual_seed(5)
    assert torch.equal(a, model.decode(w, Level(2)))
    for path in (Path(__file__).parents[1] / "alae" / "nn").glob("*.py"):
        imported = {n.module for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, ast.ImportFrom)}
        assert "alae.distributed" not in imported, path


def test_style_mixing_uses_w1_below_the_crossover_and_w2_from_it():
    w1, w2 = torch.zeros(3, 5), torch.ones(3, 5)
    mixed = crossover_styles(w1, w2, crossover=3, num_styles=8)
    assert mixed.shape == (3, 8, 5)
    assert torch.equal(mixed[:, :3], torch.zeros(3, 3, 5)) and torch.equal(mixed[:, 3:], torch.ones(3, 5, 5))


def test_sample_w_mixes_with_crossovers_uniform_in_1_to_2_lod_plus_2(model, monkeypatch):
    seen = []
    real_mix = crossover_styles

    def spy(w1, w2, crossover, num_styles):
        seen.append(crossover)
        return real_mix(w1, w2, crossover, num_styles)

    monkeypatch.setattr("alae.train.steps.crossover_styles", spy)
    torch.manual_seed(0)
    for _ in range(400):
        w = sample_w(model, 2, torch.device("cpu"), lod=1, mixing=0.9)
        assert w.shape in {(2, 16), (2, 8, 16)}
    assert set(seen) == {1, 2, 3, 4}  # 2 * (lod + 1) = 4, both ends included
    assert 0.85 < len(seen) / 400 < 0.95
    seen.clear()
    for _ in range(20):
        assert sample_w(model, 2, torch.device("cpu"), lod=3, mixing=0.0).shape == (2, 16)
    assert seen == []


def test_running_average_of_w_and_truncation(model):
    assert torch.equal(model.w_avg, torch.zeros(16))
    w = torch.randn(64, 16) + 3
    model.track_w(w.mean(0))
    assert torch.allclose(model.w_avg, 0.005 * w.mean(0))
    z = torch.randn(5, 16)
    styles = model.truncate(model.mapping(z), psi=0.0, cutoff=8)
    assert torch.allclose(styles, model.w_avg.expand(5, 8, 16))
    styles = model.truncate(model.mapping(z), psi=0.5, cutoff=2)
    assert torch.allclose(styles[:, 2:], model.mapping(z)[:, None].expand(-1, 6, -1))
    assert torch.allclose(styles[:, :2], (model.mapping(z)[:, None] + model.w_avg) / 2, atol=1e-6)
    torch.manual_seed(1)
    a = model.generate(z, psi=1.0, cutoff=8)
    torch.manual_seed(1)
    assert torch.allclose(a, model.generate(z), atol=1e-6)  # psi = 1: no truncation


def test_adam_betas_and_steps_reach_every_network(model):
    opt = make_optimizers(model, 0.002, 0, 0.99)
    assert opt.ed.defaults["betas"] == (0.0, 0.99)
    ids = {id(p) for g in (*opt.ed.param_groups, *opt.fg.param_groups) for p in g["params"]}
    assert ids == {id(p) for p in model.parameters()}


def test_short_cpu_run_at_8x8_grows_resets_adam_and_lae_falls(shards8):
    from alae.train.loop import Hooks, Trainer

    params = parse_params({
        "lr": 0.002, "seed": 0,
        "model": {"kind": "style", "latent": 16, "mapping_layers": 2, "start_channels": 8,
                  "max_channels": 16},
        "train": {"kimg": 6.0, "batch_size": [32, 16], "transition_kimg": 1.0,
                  "stabilize_kimg": 1.0, "tick_kimg": 1.0, "ema_kimg": 0.5, "threads": 1},
    })
    grids = []
    result = Trainer(params, shards8).run(Hooks(
        snapshot=lambda nimg, lod, images: grids.append((nimg, lod, images.shape))), progress=False)
    rows = result.history
    assert [r["lod"] for r in rows] == [0, 0, 1, 1, 1, 1]
    assert [r["resolution"] for r in rows] == [4, 4, 8, 8, 8, 8]
    assert [r["batch_size"] for r in rows] == [32, 32, 16, 16, 16, 16]
    # the tick at 3000 images ends on the transition's last batch (started at 2984 images)
    assert 0.99 < rows[2]["alpha"] < 1.0 and all(rows[i]["alpha"] == 1.0 for i in (0, 1, 3, 4, 5))
    assert [(lod, shape) for _, lod, shape in grids] == [(0, (32, 1, 8, 8)), (1, (32, 1, 8, 8))]
    assert grids[0][0] == 2016  # the first batch boundary at or after the switch (batch 32)
    lae = [r["lae"] for r in rows]
    assert lae[-1] < lae[0], lae
    assert result.ema.lod == 1 and float(result.ema.synthesis.alpha) == 1.0
    assert result.ema.w_avg.abs().sum() > 0
    # Adam was reset at the switch to 8x8: E+D stepped twice per batch of the level only.
    step = next(iter(result.optimizers.ed.state.values()))["step"]
    assert int(step) == 2 * (6000 - 2016) // 16


def test_the_mlp_alae_still_trains_through_the_same_loop(tiny_shards):
    from alae.train.loop import Trainer

    params = parse_params({"model": {"kind": "mlp", "latent": 8, "mapping_layers": 2, "hidden": 32},
                           "train": {"kimg": 0.2, "batch_size": 50, "tick_kimg": 0.1, "threads": 1}})
    result = Trainer(params, tiny_shards).run(progress=False)
    assert [(r["lod"], r["resolution"], r["batch_size"]) for r in result.history] == [(0, 32, 50)] * 2
    assert result.ema.generate(torch.randn(2, 8), psi=0.7).shape == (2, 1, 32, 32)
