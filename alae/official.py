"""The authors' released StyleALAE models (Pidhorskyi et al., CVPR 2020; GitHub podgorskiy/ALAE)
as this project's model files: `alae import-official`.

Their training code saves a `Checkpointer` dict, `{"models": {name: state_dict}, "auxiliary":
{optimizers, scheduler, loss tracker}}`, with G as `generator`, E as `discriminator`, F as
`mapping_fl`, D as `mapping_tl`, the running average of w as `dlatent_avg` and the EMA copies
(what their demo and figures use) with the suffix `_s`. Their conventions that differ from this
project's, each handled here and stated again by the test fixture (tests/test_official.py):

1. Equalized learning rate is implicit (`lreq.py`): a layer stores its effective weight and bias
   and their Adam scales the step. Here a layer stores weight / scale and bias / lr_mul.
2. Per-channel biases and noise weights are (1, C, 1, 1); E's and G's convolutions keep their
   biases as separate parameters (`bias_1`, `bias_2`).
3. G's blocks at 128 px and above upsample with a transposed convolution whose weight is
   (in, out, 3, 3) and holds the spatially flipped kernel; smaller blocks upsample, then convolve.
4. E's blocks and from-RGB layers are indexed finest first; here by level, 4x4 first.
5. D's last layer has 2 * latent outputs, of which only the middle one (index latent) is used.
6. `dlatent_avg` holds one row per style slot; their training keeps the rows equal. A file whose
   rows differ is refused: this project's truncation has one average.
7. E's from-RGB activation applied twice and E's statistics -> w layers at gain sqrt 2 are this
   project's `model.encoder_as_reference: true`.
8. Blur kernels are stored (buffers): checked against [1, 2, 1], not imported.
"""
from __future__ import annotations

import pickle
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from alae.checkpoint import FORMAT, save_model
from alae.config import Params
from alae.errors import UserError
from alae.io import file_sha256
from alae.nn import ALAE, build_model
from alae.presets import preset_params

CONFIGS = ("ffhq", "celeba", "celeba-hq256", "bedroom", "mnist")  # their configs/*.yaml
NETWORKS = ("generator", "discriminator", "mapping_fl", "mapping_tl")  # G, E, F, D
FUSED_FROM = 128  # their G and E resample with fused (transposed/strided) convolutions from here


class OfficialError(UserError):
    """A file that is not the authors' checkpoint, or not of the named configuration."""


@dataclass(frozen=True)
class Entry:
    """One tensor of theirs: where it goes here and how its convention is converted."""
    net: str                # their network (NETWORKS or dlatent_avg)
    key: str                # its key in that state_dict
    shape: tuple            # the shape it has in their layout for this configuration
    ours: Optional[str]     # its key in this project's state_dict; None: checked, not imported
    convert: Callable[[torch.Tensor], torch.Tensor]


def official_params(config: str) -> Params:
    if config not in CONFIGS:
        raise OfficialError(f"--config {config!r}: one of {', '.join(CONFIGS)}")
    return preset_params(config)


def build_official(config: str, device: str | torch.device = "cpu") -> ALAE:
    """This project's networks for one of their configurations (on `meta`: shapes only)."""
    params = official_params(config)
    with torch.device(device):
        return build_model(params.model, params.data.channels, params.data.resolution)


# --- reading their file ----------------------------------------------------------------------
def _data_class(module: str, name: str) -> type:
    """A class that only holds the attributes unpickled into it and runs no code: what their
    loss tracker's `RunningMean`/`RunningMeanTorch` (floats, lists of tensors) becomes here."""
    return type(name, (), {"__module__": module, "__qualname__": name,
                           "__doc__": f"inert stand-in for {module}.{name}"})


# In `auxiliary`, which is not imported; all other contents are tensors and plain containers.
_THEIR_DATA_CLASSES = [_data_class("tracker", "RunningMean"), _data_class("tracker", "RunningMeanTorch")]


class _LenientUnpickler(pickle.Unpickler):
    """--trust-pickle: a class whose module is not installed (their `tracker`, `net`, ...) comes
    back as an inert stand-in instead of failing the load."""

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _data_class(module, name)


_lenient_pickle = types.ModuleType("alae_lenient_pickle")
_lenient_pickle.Unpickler = _LenientUnpickler  # type: ignore[attr-defined]
_lenient_pickle.load = lambda f, **kw: _LenientUnpickler(f, **kw).load()  # type: ignore[attr-defined]


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict:
    """Their checkpoint dict, read with `weights_only=True` (their tracker's two data classes
    allowed as inert stand-ins) unless `trust_pickle`, which runs the full unpickler."""
    path = Path(path)
    if not path.is_file():
        raise OfficialError(f"{path}: checkpoint not found")
    try:
        if trust_pickle:
            ckpt = torch.load(path, map_location="cpu", weights_only=False,
                              pickle_module=_lenient_pickle)
        else:
            with torch.serialization.safe_globals(_THEIR_DATA_CLASSES):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if trust_pickle or not found:
            raise OfficialError(f"{path}: not a checkpoint (unreadable pickle: "
                                f"{str(e).splitlines()[0][:120]})") from None
        raise OfficialError(
            f"{path}: holds a Python object ({found.group(1)}) that a weights-only load does not "
            "build; if you trust the file (e.g. downloaded from the authors' links), rerun with "
            "--trust-pickle, which lets loading it run code") from None
    except Exception as e:  # zip, pickle, EOF, ...: all mean "not a checkpoint"
        raise OfficialError(f"{path}: not a checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120] if str(e) else 'unreadable'})") from None
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        raise OfficialError(f"{path}: is already a model file of this project (use it as --model)")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("models"), dict):
        raise OfficialError(f"{path}: not a checkpoint of the authors' training code (no "
                            "'models' dict of state_dicts)")
    return ckpt


def pick_networks(ckpt: dict, weights: str = "ema") -> dict[str, dict]:
    """{network: state_dict} of the EMA (`ema`: the `_s` copies) or trained networks, plus
    `dlatent_avg`."""
    suffix = {"ema": "_s", "trained": ""}[weights]
    models = ckpt["models"]
    nets = {name: models.get(name + suffix) for name in NETWORKS}
    nets["dlatent_avg"] = models.get("dlatent_avg")
    missing = [name + (suffix if name != "dlatent_avg" else "")
               for name, sd in nets.items() if not isinstance(sd, dict)]
    if missing:
        hint = (" (--weights trained imports the trained networks)"
                if weights == "ema" and all(isinstance(models.get(n), dict) for n in NETWORKS) else "")
        raise OfficialError(f"has no {', '.join(missing)} in 'models'{hint}")
    return nets


# --- the mapping, one entry per tensor -----------------------------------------------------------
def _per_channel(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _equal_layer(entries: list, net: str, key: str, ours: str, layer, bias: Optional[str] = None,
                 transposed: bool = False) -> None:
    """An equalized-lr layer: theirs stores the effective weight (convention 1); `bias` names a
    separate (1, C, 1, 1) bias parameter (convention 2); `transposed`: convention 3."""
    shape = tuple(layer.weight.shape)
    if transposed:
        entries.append(Entry(net, key + ".weight", (shape[1], shape[0], *shape[2:]), f"{ours}.weight",
                             lambda t, s=layer.scale: t.transpose(0, 1).flip(-1, -2) / s))
    else:
        entries.append(Entry(net, key + ".weight", shape, f"{ours}.weight",
                             lambda t, s=layer.scale: t / s))
    if layer.bias is not None:
        their_bias = bias or key + ".bias"
        bias_shape = (1, shape[0], 1, 1) if bias else (shape[0],)
        entries.append(Entry(net, their_bias, bias_shape, f"{ours}.bias",
                             lambda t, m=layer.lr_mul: t.reshape(-1) / m))


def _blur_check(t: torch.Tensor) -> torch.Tensor:
    if t.device.type != "meta":
        k = torch.tensor([1.0, 2.0, 1.0])
        if not torch.allclose(t, (k[:, None] * k[None, :] / 16).expand_as(t), atol=1e-7):
            raise OfficialError("a blur kernel is not [1, 2, 1] x [1, 2, 1] / 16: not the "
                                "authors' StyleALAE")
    return t


def _one_row(t: torch.Tensor) -> torch.Tensor:
    """Convention 6: the per-slot average of w must be one average repeated."""
    if t.device.type != "meta":
        spread = (t - t[:1]).abs().max().item()
        if spread > 1e-6 * max(1.0, t.abs().max().item()):
            raise OfficialError(f"dlatent_avg: its rows differ (by up to {spread:.3g}); this "
                                "project's truncation has one average w, so it is not imported")
    return t[0]


def entries(model: ALAE) -> list[Entry]:
    """Every tensor of their checkpoint for this model's configuration, in their layout."""
    if not model.progressive:
        raise OfficialError("the authors' released models are StyleALAEs (model.kind: style)")
    out: list[Entry] = []
    g, e, levels, latent = model.synthesis, model.encoder, model.num_levels, model.latent
    for i, block in enumerate(g.blocks):  # G: their decode_block.i is our level i
        theirs, ours = f"decode_block.{i}", f"synthesis.blocks.{i}"
        if block.first:
            out.append(Entry("generator", "const", tuple(block.const.shape), f"{ours}.const",
                             lambda t: t))
        else:
            _equal_layer(out, "generator", f"{theirs}.conv_1", f"{ours}.conv1", block.conv1,
                         transposed=4 * 2 ** i >= FUSED_FROM)
        channels = block.bias1.shape[0]
        out.append(Entry("generator", f"{theirs}.blur.weight", (channels, 1, 3, 3), None, _blur_check))
        for n in (1, 2):
            for name, mine in ((f"noise_weight_{n}", f"noise{n}.weight"), (f"bias_{n}", f"bias{n}")):
                out.append(Entry("generator", f"{theirs}.{name}", (1, channels, 1, 1),
                                 f"{ours}.{mine}", _per_channel))
            _equal_layer(out, "generator", f"{theirs}.style_{n}", f"{ours}.style{n}.style",
                         getattr(block, f"style{n}").style)
        _equal_layer(out, "generator", f"{theirs}.conv_2", f"{ours}.conv2", block.conv2)
    for i, layer in enumerate(g.to_rgb):
        _equal_layer(out, "generator", f"to_rgb.{i}.to_rgb", f"synthesis.to_rgb.{i}", layer)
    if not e.as_reference:
        raise OfficialError("their E needs model.encoder_as_reference: true")
    for lod, block in enumerate(e.blocks):  # E: their index is finest first (convention 4)
        j = levels - 1 - lod
        theirs, ours = f"encode_block.{j}", f"encoder.blocks.{lod}"
        _equal_layer(out, "discriminator", f"from_rgb.{j}.from_rgb", f"encoder.from_rgb.{lod}",
                     e.from_rgb[lod])
        _equal_layer(out, "discriminator", f"{theirs}.conv_1", f"{ours}.conv1", block.conv1,
                     bias=f"{theirs}.bias_1")
        out.append(Entry("discriminator", f"{theirs}.blur.weight",
                         (block.conv1.weight.shape[0], 1, 3, 3), None, _blur_check))
        _equal_layer(out, "discriminator", f"{theirs}.conv_2", f"{ours}.conv2", block.conv2,
                     bias=f"{theirs}.bias_2")
        for n in (1, 2):
            _equal_layer(out, "discriminator", f"{theirs}.style_{n}", f"{ours}.style{n}",
                         getattr(block, f"style{n}"))
    linear = [m for m in model.mapping.net if hasattr(m, "scale")]
    for k, layer in enumerate(linear):
        _equal_layer(out, "mapping_fl", f"map_blocks.{k}.fc", f"mapping.net.{2 * k}", layer)
    d = list(model.discriminator.net)
    for k, layer in enumerate(d[:-1]):
        _equal_layer(out, "mapping_tl", f"map_blocks.{k}", f"discriminator.net.{k}", layer)
    last, k = d[-1], len(d) - 1  # convention 5: their row `latent` of 2 * latent
    out.append(Entry("mapping_tl", f"map_blocks.{k}.weight", (2 * latent, latent),
                     f"discriminator.net.{k}.weight",
                     lambda t, s=last.scale: t[latent:latent + 1] / s))
    out.append(Entry("mapping_tl", f"map_blocks.{k}.bias", (2 * latent,),
                     f"discriminator.net.{k}.bias",
                     lambda t, m=last.lr_mul: t[latent:latent + 1] / m))
    out.append(Entry("dlatent_avg", "buff", (2 * levels, latent), "w_avg", _one_row))
    return out


def mismatches(nets: dict[str, dict], model: ALAE) -> list[str]:
    """What in `nets` does not fit this model's configuration: missing, surplus, misshapen."""
    problems, expected = [], entries(model)
    for entry in expected:
        t = nets[entry.net].get(entry.key)
        if t is None:
            problems.append(f"{entry.net}.{entry.key} is missing")
        elif tuple(t.shape) != entry.shape:
            problems.append(f"{entry.net}.{entry.key} is {tuple(t.shape)}, not {entry.shape}")
    known = {(entry.net, entry.key) for entry in expected}
    problems += [f"{net}.{key} is not in this configuration" for net, sd in nets.items()
                 for key in sd if (net, key) not in known]
    return problems


def convert(nets: dict[str, dict], model: ALAE, config: str) -> dict[str, torch.Tensor]:
    """This project's state_dict for `model` from their networks (one line if they do not fit)."""
    problems = mismatches(nets, model)
    if problems:
        fits = [c for c in CONFIGS if c != config and not mismatches(nets, build_official(c, "meta"))]
        hint = f"; it fits --config {' / '.join(fits)}" if fits else ""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise OfficialError(f"does not fit --config {config}: {problems[0]}{more}{hint}")
    state = {k: v for k, v in model.state_dict().items()}  # lod/alpha: fully grown
    for entry in entries(model):
        t = entry.convert(nets[entry.net][entry.key].to(torch.float32))
        if entry.ours is not None:
            state[entry.ours] = t
    return state


def import_official(path: str | Path, config: str, out: str | Path, weights: str = "ema",
                    trust_pickle: bool = False) -> str:
    """Read their checkpoint at `path`, write this project's model file `out` (atomically, and
    only when every tensor fitted); returns the line to print."""
    path, out = Path(path), Path(out)
    if out.resolve() == path.resolve():
        raise OfficialError(f"--out {out}: is the checkpoint itself")
    params = official_params(config)
    ckpt = read_checkpoint(path, trust_pickle)
    model = build_official(config)
    try:
        state = convert(pick_networks(ckpt, weights), model, config)
    except OfficialError as e:
        raise OfficialError(f"{path}: {e}") from None
    model.load_state_dict(state)
    meta = {"imported_from": str(path), "source_sha256": file_sha256(path),
            "official_config": config, "weights": weights, "origin": "podgorskiy/ALAE"}
    save_model(out, model.eval(), params, meta)
    size = sum(p.numel() for p in model.parameters())
    return (f"imported {path} ({'EMA' if weights == 'ema' else 'trained'} networks, config "
            f"{config}: {model.resolution}x{model.resolution}, latent {model.latent}, "
            f"{size / 1e6:.1f}M parameters) into {out}")
