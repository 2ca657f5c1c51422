"""`alae import-official`: the authors' checkpoints (podgorskiy/ALAE) as this project's model
files. Their layout comes from tests/official_fixture.py, which states their conventions; the
parity of whole forward passes against their own code is checked outside the suite (README)."""
from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from alae.checkpoint import load_model
from alae.cli import main
from alae.config import ModelConfig
from alae.images import load_images
from alae.nn import build_model
from alae.official import (CONFIGS, OfficialError, build_official, convert, import_official,
                           mismatches, official_params, read_checkpoint)
from official_fixture import (BLUR, OFFICIAL, save_their_checkpoint, their_networks,
                                    their_shapes)

# A small StyleALAE that still reaches 128 px, where their G switches to transposed convolutions.
SMALL = dict(resolution=128, channels=3, latent=8, mapping=2, start=2, maximum=4)


def effective(layer) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias an equalized-lr layer of this project computes with."""
    bias = layer.bias * layer.lr_mul if layer.bias is not None else None
    return layer.weight * layer.scale, bias


# --- structure at each configuration's full shapes (meta device: no memory, no compute) --------
@pytest.mark.parametrize("config", CONFIGS)
def test_every_tensor_of_each_configuration_has_a_place(config):
    resolution, channels, latent, mapping, start, maximum = OFFICIAL[config]
    params = official_params(config)
    assert (params.data.resolution, params.data.channels) == (resolution, channels)
    assert (params.model.latent, params.model.mapping_layers, params.model.start_channels,
            params.model.max_channels) == (latent, mapping, start, maximum)
    assert params.model.kind == "style" and params.model.encoder_as_reference
    model = build_official(config, "meta")
    nets = their_networks(their_shapes(*OFFICIAL[config]), device="meta")
    assert mismatches(nets, model) == []
    state, ours = convert(nets, model, config), model.state_dict()
    assert set(state) == set(ours)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_a_configuration_takes_no_other_configurations_checkpoint():
    models = {c: build_official(c, "meta") for c in CONFIGS}
    for theirs in CONFIGS:
        nets = their_networks(their_shapes(*OFFICIAL[theirs]), device="meta")
        fits = [c for c in CONFIGS if not mismatches(nets, models[c])]
        assert fits == [theirs]


# --- values: each convention on a small model --------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """(their networks, this project's model with them imported, number of levels)."""
    cfg = ModelConfig(latent=SMALL["latent"], mapping_layers=SMALL["mapping"],
                      start_channels=SMALL["start"], max_channels=SMALL["maximum"])
    model = build_model(cfg, SMALL["channels"], SMALL["resolution"])
    nets = their_networks(their_shapes(**SMALL), seed=3)
    model.load_state_dict(convert(nets, model, "small"))
    return nets, model.eval(), model.num_levels


def test_their_layers_hold_the_effective_weight_and_bias(small):
    nets, model, _ = small
    f, d = nets["mapping_fl"], nets["mapping_tl"]
    w, b = effective(model.mapping.net[2])  # lr_mul 0.1: stored weight / 0.1 / gain / sqrt(fan_in)
    assert torch.allclose(w, f["map_blocks.1.fc.weight"], atol=1e-7)
    assert torch.allclose(b, f["map_blocks.1.fc.bias"], atol=1e-7)
    w, b = effective(model.discriminator.net[0])
    assert torch.allclose(w, d["map_blocks.0.weight"], atol=1e-7) and torch.allclose(b, d["map_blocks.0.bias"])
    w, b = effective(model.synthesis.to_rgb[3])  # gain 0.03
    g = nets["generator"]
    assert torch.allclose(w, g["to_rgb.3.to_rgb.weight"], atol=1e-7)
    assert torch.allclose(b, g["to_rgb.3.to_rgb.bias"])
    w, b = effective(model.synthesis.blocks[2].style2.style)  # gain 1
    assert torch.allclose(w, g["decode_block.2.style_2.weight"], atol=1e-7)


def test_a_stored_weight_and_gain_give_a_known_effective_weight(tmp_path):
    """Hand-computable: their F layer storing 0.5 everywhere and bias 0.25 is, here, a stored
    weight of 0.5 / (0.1 * sqrt(2) / sqrt(latent)) and a stored bias of 0.25 / 0.1."""
    model = build_model(ModelConfig(latent=8, mapping_layers=1, start_channels=2, max_channels=2), 1, 4)
    nets = their_networks(their_shapes(4, 1, 8, 1, 2, 2), seed=0)
    nets["mapping_fl"]["map_blocks.0.fc.weight"].fill_(0.5)
    nets["mapping_fl"]["map_blocks.0.fc.bias"].fill_(0.25)
    state = convert(nets, model, "tiny")
    stored = state["mapping.net.0.weight"]
    assert torch.allclose(stored, torch.full_like(stored, 0.5 / (0.1 * math.sqrt(2) / math.sqrt(8))))
    assert torch.allclose(state["mapping.net.0.bias"], torch.full((8,), 2.5))
    model.load_state_dict(state)
    z = torch.ones(1, 8)  # pixel norm keeps it; each output: leaky(8 * 0.5 + 0.25) = 4.25
    assert torch.allclose(model.mapping(z), torch.full((1, 8), 4.25))


def test_d_is_their_middle_output_of_two_latent(small):
    """Hand-computable: their D with W = I, then 2I, then a last layer whose row `latent` sums
    the inputs (bias 3) among rows and biases that must be ignored: D(w) = 2 sum(w) + 8 + 3."""
    nets, model, _ = small
    latent = SMALL["latent"]
    d = {k: v.clone() for k, v in nets["mapping_tl"].items()}
    d["map_blocks.0.weight"], d["map_blocks.0.bias"] = torch.eye(latent), torch.zeros(latent)
    d["map_blocks.1.weight"], d["map_blocks.1.bias"] = 2 * torch.eye(latent), torch.ones(latent)
    d["map_blocks.2.weight"] = torch.full((2 * latent, latent), 100.0)
    d["map_blocks.2.weight"][latent] = 1.0
    d["map_blocks.2.bias"] = torch.full((2 * latent,), 99.0)
    d["map_blocks.2.bias"][latent] = 3.0
    other = build_model(ModelConfig(latent=latent, mapping_layers=SMALL["mapping"],
                                    start_channels=SMALL["start"], max_channels=SMALL["maximum"]),
                        SMALL["channels"], SMALL["resolution"])
    other.load_state_dict(convert({**nets, "mapping_tl": d}, other, "small"))
    w = torch.arange(2 * latent, dtype=torch.float32).view(2, latent) / 10
    assert torch.allclose(other.discriminator(w), 2 * w.sum(1) + latent + 3, atol=1e-5)


def _their_upsampling_conv(x: torch.Tensor, weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """Their G's conv_1 as `lreq.py` computes it: below 128 px nearest 2x upsampling, then the
    convolution; from 128 px a stride-2 transposed convolution with the (in, out, 3, 3) kernel
    padded and summed over its four 1-pixel shifts."""
    if not transposed:
        return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)
    w = F.pad(weight, (1, 1, 1, 1))
    w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
    return F.conv_transpose2d(x, w, stride=2, padding=1)


@pytest.mark.parametrize("level", [4, 5])  # 64 px: a convolution; 128 px: transposed
@pytest.mark.parametrize("fused", [True, False])
def test_g_upsampling_convolution_computes_theirs(small, level, fused):
    nets, model, _ = small
    conv = model.synthesis.blocks[level].conv1
    x = torch.randn(2, conv.weight.shape[1], 5, 5, generator=torch.Generator().manual_seed(level))
    expected = _their_upsampling_conv(x, nets["generator"][f"decode_block.{level}.conv_1.weight"],
                                      transposed=4 * 2 ** level >= 128)
    was, conv.fused = conv.fused, fused
    try:
        assert torch.allclose(conv.up(x), expected, atol=1e-5)
    finally:
        conv.fused = was


def test_e_blocks_are_reversed_and_biases_per_channel(small):
    nets, model, levels = small
    e, g = nets["discriminator"], nets["generator"]
    for lod in range(levels):
        j = levels - 1 - lod  # their index: finest first
        w, b = effective(model.encoder.from_rgb[lod])
        assert torch.allclose(w, e[f"from_rgb.{j}.from_rgb.weight"], atol=1e-7)
        block = model.encoder.blocks[lod]
        w, b = effective(block.conv1)
        assert torch.allclose(w, e[f"encode_block.{j}.conv_1.weight"], atol=1e-7)
        assert torch.allclose(b, e[f"encode_block.{j}.bias_1"].view(-1))
        w, b = effective(block.conv2)
        assert torch.allclose(w, e[f"encode_block.{j}.conv_2.weight"], atol=1e-7)
        assert torch.allclose(b, e[f"encode_block.{j}.bias_2"].view(-1))
        w, _ = effective(block.style1)  # gain sqrt 2 (encoder_as_reference)
        assert torch.allclose(w, e[f"encode_block.{j}.style_1.weight"], atol=1e-7)
    block = model.synthesis.blocks[1]
    assert torch.equal(block.noise2.weight, g["decode_block.1.noise_weight_2"].view(-1))
    assert torch.equal(block.bias1, g["decode_block.1.bias_1"].view(-1))
    assert torch.equal(model.synthesis.blocks[0].const, g["const"])


def test_the_average_w_is_their_one_row(small):
    nets, model, _ = small
    assert torch.equal(model.w_avg, nets["dlatent_avg"]["buff"][0])


def test_rows_of_dlatent_avg_that_differ_are_refused(small):
    nets, model, _ = small
    buff = nets["dlatent_avg"]["buff"].clone()
    buff[3] += 0.01
    with pytest.raises(OfficialError, match="dlatent_avg: its rows differ"):
        convert({**nets, "dlatent_avg": {"buff": buff}}, model, "small")


def test_a_blur_kernel_that_is_not_theirs_is_refused(small):
    nets, model, _ = small
    g = dict(nets["generator"])
    g["decode_block.2.blur.weight"] = torch.ones_like(g["decode_block.2.blur.weight"]) / 9
    with pytest.raises(OfficialError, match="blur kernel"):
        convert({**nets, "generator": g}, model, "small")
    assert torch.equal(nets["generator"]["decode_block.1.blur.weight"][0, 0], BLUR)


# --- files: the import, its choices and its refusals ---------------------------------------------
@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """Their checkpoint of the mnist configuration (32 px, 5.4M parameters per copy), imported."""
    root = tmp_path_factory.mktemp("official")
    ema = save_their_checkpoint(root / "theirs.pth", "mnist", seed=0)
    line = import_official(root / "theirs.pth", "mnist", root / "ours.pt")
    return root, ema, line


def test_import_writes_a_model_file_of_the_ema_networks(mnist):
    root, ema, line = mnist
    assert line.startswith(f"imported {root / 'theirs.pth'} (EMA networks, config mnist: 32x32")
    model, params, meta = load_model(root / "ours.pt")
    assert params == official_params("mnist")
    assert meta["official_config"] == "mnist" and meta["weights"] == "ema"
    w, _ = effective(model.mapping.net[0])
    assert torch.allclose(w, ema["mapping_fl"]["map_blocks.0.fc.weight"], atol=1e-7)
    assert torch.equal(model.w_avg, ema["dlatent_avg"]["buff"][0])


def test_weights_trained_imports_the_trained_networks(mnist, tmp_path):
    root, ema, _ = mnist
    import_official(root / "theirs.pth", "mnist", tmp_path / "t.pt", weights="trained")
    model, _, meta = load_model(tmp_path / "t.pt")
    w, _ = effective(model.mapping.net[0])
    assert meta["weights"] == "trained"
    assert not torch.allclose(w, ema["mapping_fl"]["map_blocks.0.fc.weight"], atol=1e-3)


def _refused(path: Path, config: str, out: Path, *words: str, **options) -> str:
    with pytest.raises(OfficialError) as caught:
        import_official(path, config, out, **options)
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))
    return message


def test_a_checkpoint_of_another_configuration_is_one_line_naming_the_right_one(mnist, tmp_path):
    root, _, _ = mnist
    _refused(root / "theirs.pth", "celeba", tmp_path / "x.pt", "does not fit --config celeba",
             "it fits --config mnist")


def test_files_that_are_not_their_checkpoints_are_one_line(mnist, tmp_path):
    root, _, _ = mnist
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    _refused(junk, "mnist", tmp_path / "x.pt", "not a checkpoint")
    torch.save({"generator": {}}, tmp_path / "flat.pth")
    _refused(tmp_path / "flat.pth", "mnist", tmp_path / "x.pt", "no 'models' dict")
    _refused(root / "ours.pt", "mnist", tmp_path / "x.pt", "already a model file of this project")
    _refused(tmp_path / "missing.pth", "mnist", tmp_path / "x.pt", "checkpoint not found")
    with pytest.raises(OfficialError, match="is the checkpoint itself"):
        import_official(root / "theirs.pth", "mnist", root / "theirs.pth")


def test_a_checkpoint_without_ema_copies_points_at_weights_trained(tmp_path):
    shapes = their_shapes(**{**SMALL, "resolution": 16})
    save_their_checkpoint(tmp_path / "theirs.pth", shapes, ema=False)
    _refused(tmp_path / "theirs.pth", "mnist", tmp_path / "x.pt", "theirs.pth: has no generator_s",
             "--weights trained")


class Unknown:  # pickled under a module a weights-only load does not know
    def __reduce__(self):
        return (Unknown, ())


def test_an_object_weights_only_will_not_build_needs_trust_pickle(tmp_path):
    shapes = their_shapes(4, 1, 8, 4, 64, 256)  # their mnist networks at 4x4 ...
    nets = their_networks(shapes)
    path = tmp_path / "odd.pth"
    torch.save({"models": {**nets, **{f"{n}_s": sd for n, sd in nets.items() if n != "dlatent_avg"}},
                "auxiliary": {"thing": Unknown()}}, path)
    message = _refused(path, "mnist", tmp_path / "x.pt", "Unknown", "--trust-pickle")
    assert "weights-only" in message
    # ... so with --trust-pickle it loads, and then fails only as what it is: a 4x4 model
    _refused(path, "mnist", tmp_path / "x.pt", "does not fit --config mnist", trust_pickle=True)


def test_trust_pickle_builds_classes_of_modules_that_are_not_installed(tmp_path):
    class Gone:
        pass

    Gone.__module__, Gone.__qualname__ = "their_module_not_here", "Gone"
    module = types.ModuleType("their_module_not_here")
    module.Gone = Gone
    sys.modules["their_module_not_here"] = module
    try:
        obj = Gone()
        obj.value = 3
        torch.save({"models": {}, "auxiliary": {"x": obj}}, tmp_path / "gone.pth")
    finally:
        del sys.modules["their_module_not_here"]
    ckpt = read_checkpoint(tmp_path / "gone.pth", trust_pickle=True)
    assert ckpt["auxiliary"]["x"].value == 3
    with pytest.raises(OfficialError, match="--trust-pickle"):
        read_checkpoint(tmp_path / "gone.pth")


# --- the command, and the imported model driving the others ----------------------------------------
def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_the_imported_model_drives_every_model_command(mnist, tmp_path):
    root, _, _ = mnist
    result = run("import-official", str(root / "theirs.pth"), "--config", "mnist",
                 "--out", str(tmp_path / "m.pt"))
    assert result.exit_code == 0, result.output
    assert "config mnist: 32x32, latent 32" in result.stdout
    model = str(tmp_path / "m.pt")
    assert run("generate", "--model", model, "--seeds", "0-1", "--outdir", str(tmp_path / "gen"),
               "--psi", "0.7").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["seed0000.png", "seed0001.png"]
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    result = run("reconstruct", "--model", model, str(tmp_path / "a.png"), "--out", str(tmp_path / "rec"))
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "rec" / "a.png").size == (32, 32)
    result = run("mix", "--model", model, str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                 str(tmp_path / "mix.png"), "--styles", "coarse")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mix.png").is_file()
    # The way into W and back, interpolation, and the figures stage's set of the imported model.
    codes = tmp_path / "codes.npy"
    pair = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert run("encode", "--model", model, *pair, "--out", str(codes)).exit_code == 0
    imported, _, _ = load_model(tmp_path / "m.pt")
    with torch.no_grad():
        expected = imported.encode(load_images([Path(p) for p in pair], 32, 1)).numpy()
    assert np.load(codes).shape == (2, 32) and np.allclose(np.load(codes), expected, atol=1e-5)
    result = run("decode", "--model", model, str(codes), "--outdir", str(tmp_path / "dec"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["a.png", "b.png"]
    result = run("interpolate", "--model", model, *pair, str(tmp_path / "i.png"), "--steps", "4")
    assert result.exit_code == 0, result.output
    result = run("figures", "--model", model, *pair, "--out", str(tmp_path / "figs"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "interpolation.png", "reconstructions.png", "samples.png", "samples_untruncated.png",
        "style_mixing.png"]


def test_the_command_refuses_in_one_line_and_writes_nothing(mnist, tmp_path):
    root, _, _ = mnist
    result = run("import-official", str(root / "theirs.pth"), "--config", "ffhq",
                 "--out", str(tmp_path / "x.pt"))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--config mnist" in lines[0]
    assert not (tmp_path / "x.pt").exists()
