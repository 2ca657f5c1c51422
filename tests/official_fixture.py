"""Checkpoints in the layout of the authors' training code (podgorskiy/ALAE), written from a
statement of their conventions, not from their code nor from `alae.official`:

- `Checkpointer.save`: `{"models": {name: state_dict}, "auxiliary": {...}}`; G is `generator`,
  E `discriminator`, F `mapping_fl`, D `mapping_tl`, the average w `dlatent_avg`; EMA copies end
  in `_s`; `auxiliary` holds the optimizers, the scheduler and the loss tracker, whose running
  means are objects of their module `tracker`.
- Their equalized-lr layers store the effective weight and bias (`lreq.py`, implicit mode).
- G (`Generator`): block i works at 4 * 2**i px with min(start * 2**(levels-1-i), max) maps; block
  0 starts from `const`; others have `conv_1`, a transposed convolution (weight in, out, 3, 3) at
  128 px and above, else a convolution; per-channel `noise_weight_n` and `bias_n` are
  (1, C, 1, 1); `style_n` (latent -> 2C); `conv_2`; a stored `blur.weight`; `to_rgb.i.to_rgb`.
- E (`EncoderDefault`): block j (finest first) maps min(start * 2**j, max) to
  min(start * 2**(j+1), max) maps; `from_rgb.j.from_rgb`; `conv_1`/`conv_2` without biases and
  separate `bias_1`/`bias_2` (1, C, 1, 1); `style_1` (2 * in -> latent), `style_2` (2 * out ->
  latent).
- F (`MappingF`): `map_blocks.k.fc`, latent -> latent. D (`MappingD`): `map_blocks.k`, three
  linear layers, the last latent -> 2 * latent.
- `dlatent_avg.buff`: (2 * levels, latent), every row the same.
"""
from __future__ import annotations

import collections
import sys
import types
from typing import Optional

import torch

# their configs/*.yaml: resolution, channels, latent, mapping layers, start and max maps
OFFICIAL = {
    "mnist": (32, 1, 32, 4, 64, 256),
    "celeba": (128, 3, 256, 8, 64, 256),
    "celeba-hq256": (256, 3, 512, 8, 64, 512),
    "bedroom": (256, 3, 512, 8, 32, 512),
    "ffhq": (1024, 3, 512, 8, 16, 512),
}
BLUR = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


def their_shapes(resolution: int, channels: int, latent: int, mapping: int, start: int,
                 maximum: int) -> dict[str, dict[str, tuple]]:
    levels = resolution.bit_length() - 2  # 4x4 is level 0: 32 px has 4 levels
    g_maps = [min(start * 2 ** (levels - 1 - i), maximum) for i in range(levels)]
    g: dict[str, tuple] = {"const": (1, g_maps[0], 4, 4)}
    for i, c in enumerate(g_maps):
        b = f"decode_block.{i}"
        if i > 0:
            before = g_maps[i - 1]
            g[f"{b}.conv_1.weight"] = (before, c, 3, 3) if 4 * 2 ** i >= 128 else (c, before, 3, 3)
        g[f"{b}.blur.weight"] = (c, 1, 3, 3)
        for n in (1, 2):
            g[f"{b}.noise_weight_{n}"] = g[f"{b}.bias_{n}"] = (1, c, 1, 1)
            g[f"{b}.style_{n}.weight"], g[f"{b}.style_{n}.bias"] = (2 * c, latent), (2 * c,)
        g[f"{b}.conv_2.weight"] = (c, c, 3, 3)
        g[f"to_rgb.{i}.to_rgb.weight"], g[f"to_rgb.{i}.to_rgb.bias"] = (channels, c, 1, 1), (channels,)
    e: dict[str, tuple] = {}
    for j in range(levels):
        cin, cout = min(start * 2 ** j, maximum), min(start * 2 ** (j + 1), maximum)
        b = f"encode_block.{j}"
        e[f"from_rgb.{j}.from_rgb.weight"], e[f"from_rgb.{j}.from_rgb.bias"] = (cin, channels, 1, 1), (cin,)
        e[f"{b}.conv_1.weight"], e[f"{b}.bias_1"] = (cin, cin, 3, 3), (1, cin, 1, 1)
        e[f"{b}.blur.weight"] = (cin, 1, 3, 3)
        e[f"{b}.conv_2.weight"], e[f"{b}.bias_2"] = (cout, cin, 3, 3), (1, cout, 1, 1)
        e[f"{b}.style_1.weight"], e[f"{b}.style_1.bias"] = (latent, 2 * cin), (latent,)
        e[f"{b}.style_2.weight"], e[f"{b}.style_2.bias"] = (latent, 2 * cout), (latent,)
    f = {}
    for k in range(mapping):
        f[f"map_blocks.{k}.fc.weight"], f[f"map_blocks.{k}.fc.bias"] = (latent, latent), (latent,)
    d = {"map_blocks.0.weight": (latent, latent), "map_blocks.0.bias": (latent,),
         "map_blocks.1.weight": (latent, latent), "map_blocks.1.bias": (latent,),
         "map_blocks.2.weight": (2 * latent, latent), "map_blocks.2.bias": (2 * latent,)}
    return {"generator": g, "discriminator": e, "mapping_fl": f, "mapping_tl": d,
            "dlatent_avg": {"buff": (2 * levels, latent)}}


def _value(key: str, shape: tuple, gen: Optional[torch.Generator]) -> torch.Tensor:
    """Effective values, as their layers hold them: weights ~ N(0, 2 / fan_in) (scaled), biases,
    noise weights and the constant away from their zero / one initialisation."""
    if key.endswith("blur.weight"):
        return BLUR.expand(shape).clone()
    x = torch.randn(shape, generator=gen)
    if key.endswith("weight") and len(shape) >= 2 and "noise" not in key:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        return x * (2.0 / fan_in) ** 0.5
    if key == "const":
        return 1 + 0.5 * x
    return 0.2 * x


def their_networks(shapes: dict, seed: int = 0, device: str = "cpu") -> dict[str, dict]:
    """State dicts in their layout; on `meta`, shapes only."""
    if device == "meta":
        return {net: {k: torch.empty(s, device="meta") for k, s in keys.items()}
                for net, keys in shapes.items()}
    gen = torch.Generator().manual_seed(seed)
    nets = {net: {k: _value(k, s, gen) for k, s in keys.items()}
            for net, keys in shapes.items() if net != "dlatent_avg"}
    rows, latent = shapes["dlatent_avg"]["buff"]
    nets["dlatent_avg"] = {"buff": (0.3 * torch.randn(latent, generator=gen)).expand(rows, -1).clone()}
    return nets


def _tracker_state() -> dict:
    """Their loss tracker's state: running means as objects of their module `tracker`."""
    module = types.ModuleType("tracker")

    class RunningMeanTorch:
        def __init__(self):
            self.values = [torch.tensor([0.5])]

    RunningMeanTorch.__module__, RunningMeanTorch.__qualname__ = "tracker", "RunningMeanTorch"
    module.RunningMeanTorch = RunningMeanTorch  # type: ignore[attr-defined]
    sys.modules["tracker"] = module  # pickle looks the class up by name; removed after saving
    return {"tracks": collections.OrderedDict(loss_d=RunningMeanTorch()), "epochs": [1, 2],
            "means_over_epochs": collections.OrderedDict(loss_d=[0.7, 0.6])}


def save_their_checkpoint(path, config_or_shapes, seed: int = 0, ema: bool = True,
                          extra: Optional[dict] = None) -> dict:
    """Write a checkpoint as their `Checkpointer.save` would; returns the EMA (or trained)
    networks written, for comparison."""
    shapes = (their_shapes(*OFFICIAL[config_or_shapes]) if isinstance(config_or_shapes, str)
              else config_or_shapes)
    trained, averaged = their_networks(shapes, seed), their_networks(shapes, seed + 1)
    models = {net: sd for net, sd in trained.items()}
    if ema:
        models.update({f"{net}_s": sd for net, sd in averaged.items() if net != "dlatent_avg"})
    data = {"models": models,
            "auxiliary": {"encoder_optimizer": {"state": {}, "param_groups": [{"lr": 0.0015}]},
                          "scheduler": {"encoder_optimizer": {"last_epoch": 3}},
                          "tracker": _tracker_state()}}
    data.update(extra or {})
    try:
        torch.save(data, path)
    finally:
        sys.modules.pop("tracker", None)
    if not ema:
        return trained
    return {**{net: averaged[net] for net in averaged if net != "dlatent_avg"},
            "dlatent_avg": trained["dlatent_avg"]}
