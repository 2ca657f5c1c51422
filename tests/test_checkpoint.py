"""The one model-file format: round trip, and one-line refusals of files that are not ours."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alae.checkpoint import load_model, save_model
from alae.config import parse_params
from alae.errors import CheckpointError
from alae.nn import build_model

TINY = {"model": {"kind": "style", "latent": 8, "mapping_layers": 2}}


@pytest.fixture
def model_file(tmp_path) -> Path:
    params = parse_params(TINY)
    model = build_model(params.model, channels=1, resolution=8)
    save_model(tmp_path / "alae.pt", model, params, meta={"run_key": "k"})
    return tmp_path / "alae.pt"


def test_round_trip(model_file):
    model, params, meta = load_model(model_file)
    assert params.model.latent == 8 and meta == {"run_key": "k"}
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    original = torch.load(model_file, weights_only=True)["ema"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k])
    assert not list(model_file.parent.glob(".*tmp"))  # the atomic write left no temporary file


@pytest.mark.parametrize("content", [b"not a model", None])
def test_foreign_files_are_refused(tmp_path, content):
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"state_dict": {}}, path)  # a real torch file, but not ours
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}: not a model file of this project"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="model file not found"):
        load_model(tmp_path / "absent.pt")


def test_cli_generate_and_bad_model(model_file, tmp_path):
    out = tmp_path / "grid.png"
    ok = subprocess.run([sys.executable, "-m", "alae.cli", "generate", "--model", str(model_file),
                         "-n", "4", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert out.stat().st_size > 100
    junk = tmp_path / "junk.pt"
    junk.write_text("junk")
    bad = subprocess.run([sys.executable, "-m", "alae.cli", "generate", "--model", str(junk),
                          str(tmp_path / "no.png")], capture_output=True, text=True)
    assert bad.returncode == 1
    # one line; the exception type in brackets depends on torch's reader (struct.error here)
    [line] = bad.stderr.strip().splitlines()
    assert line.startswith(f"error: {junk}: not a model file of this project (")
    assert not (tmp_path / "no.png").exists()


# --- StyleALAE: the full training state, and presets ---------------------------------------------
STYLE = {"model": {"kind": "style", "latent": 8, "mapping_layers": 2, "start_channels": 4,
                   "max_channels": 8},
         "train": {"kimg": 0.15, "batch_size": [8, 4], "transition_kimg": 0.02,
                   "stabilize_kimg": 0.02, "tick_kimg": 0.05, "threads": 1}}


def test_style_checkpoint_gives_identical_outputs_and_keeps_the_training_state(tiny_shards, tmp_path):
    from alae.checkpoint import load_training_state
    from alae.train.loop import Trainer

    params = parse_params(STYLE)
    trainer = Trainer(params, tiny_shards)
    result = trainer.run(progress=False)
    path = tmp_path / "alae.pt"
    save_model(path, result.ema, params, meta={"images_seen": result.images_seen},
               training=trainer.state())
    raw = torch.load(path, weights_only=True)  # everything in it is plain tensors and containers
    assert {"model", "opt_ed", "opt_fg", "images_seen", "rng"} <= set(raw["training"])
    assert raw["training"]["images_seen"] == result.images_seen
    assert torch.equal(raw["training"]["rng"]["torch"], torch.get_rng_state())

    ema, loaded_params, meta = load_model(path)
    assert loaded_params == params and meta["images_seen"] == result.images_seen
    assert ema.lod == result.ema.lod == 3
    z, x = torch.randn(4, 8), torch.rand(4, 1, 32, 32) * 2 - 1
    for net in (ema, result.ema):
        torch.manual_seed(7)  # G's per-pixel noise draws from the global generator
        out = (net.generate(z), net.generate(z, psi=0.7, cutoff=8), net.encode(x), net.score(x))
        if net is ema:
            first = out
    for a, b in zip(first, out):
        assert torch.equal(a, b)
    assert torch.equal(ema.w_avg, result.ema.w_avg) and ema.w_avg.abs().sum() > 0

    model, ema2, _, state = load_training_state(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, result.model.state_dict()[k]), k
    opt = result.optimizers.ed.__class__(model.discriminator_parameters())
    opt.load_state_dict(state["opt_ed"])  # optimizer state loads back into the rebuilt model
    with pytest.raises(CheckpointError, match="holds no training state"):
        save_model(tmp_path / "ema-only.pt", ema, params, meta={})
        load_training_state(tmp_path / "ema-only.pt")


PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "presets").glob("*.yaml"))


def test_presets_are_the_six_reference_configurations():
    assert PRESETS == ["bedroom", "celeba", "celeba-hq256", "ffhq", "mlp", "mnist"]


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_validates_and_builds(name):
    from alae.presets import merged_preset

    params = merged_preset(name, Path(__file__).resolve().parents[1] / "params.yaml")
    expected = {"mlp": ("mlp", 50, 32), "mnist": ("style", 32, 32),
                "celeba-hq256": ("style", 512, 256), "ffhq": ("style", 512, 1024),
                "celeba": ("style", 256, 128), "bedroom": ("style", 512, 256)}[name]
    assert (params.model.kind, params.model.latent, params.data.resolution) == expected
    if name == "mnist":  # the reference MNIST StyleALAE, checked closely
        assert (params.model.start_channels, params.model.max_channels) == (64, 256)
        assert params.train.batch_size == (128, 128, 128, 64) and params.lr == 0.0015
    if name == "ffhq":
        from alae.train.schedule import Schedule

        s = Schedule.from_params(params, levels=9)
        lrs = [s(s.level_start(lod)).lr for lod in range(9)]
        assert lrs[:6] == [0.0015] * 6 and lrs[6:] == pytest.approx([0.002, 0.003, 0.003])
    if name == "bedroom":  # the reference: 0.0015 up to 128 px, 0.002 at 256
        from alae.train.schedule import Schedule

        s = Schedule.from_params(params, levels=7)
        lrs = [s(s.level_start(lod)).lr for lod in range(7)]
        assert lrs[:6] == [0.0015] * 6 and lrs[6] == pytest.approx(0.002)
    if params.model.kind == "style" and params.data.resolution <= 256:
        model = build_model(params.model, params.data.channels, 8)  # the same layers, small
        assert model.generate(torch.randn(1, params.model.latent)).shape[-1] == 8


def test_alae_preset_writes_values_and_keeps_comments(tmp_path):
    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "params.yaml"
    target.write_text((root / "params.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "alae.cli", "preset", "mnist", "--params",
                          str(target)], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    text = target.read_text()
    assert "# Every knob of the pipeline." in text and "# size of z and w" in text
    assert "batch_size: [128, 128, 128, 64]" in text
    from alae.config import load_params

    params = load_params(target)
    assert params.model.start_channels == 64 and params.model.latent == 32 and params.lr == 0.0015
    assert params.evaluate == load_params(root / "params.yaml").evaluate  # other sections kept
    bad = subprocess.run([sys.executable, "-m", "alae.cli", "preset", "nope", "--params",
                          str(target)], capture_output=True, text=True, cwd=root)
    assert bad.returncode == 1 and "preset 'nope': not found (known: bedroom, celeba, celeba-hq256, ffhq, mlp, mnist)" in bad.stderr


def test_a_file_of_another_format_version_is_refused_in_one_line(model_file):
    """Versions 2 and 3 changed what E's weights mean (model.encoder_as_reference, then E's
    instance-norm eps): an older file must not load into the new forward pass."""
    ckpt = torch.load(model_file, weights_only=True)
    for old in (1, 2):
        ckpt["version"] = old
        torch.save(ckpt, model_file)
        with pytest.raises(CheckpointError, match=rf"model format version {old} is not 3 .*retrain"):
            load_model(model_file)
