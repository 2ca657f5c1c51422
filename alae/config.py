"""Typed, validated `params.yaml`.

One frozen dataclass per section. `load_params` checks every key, type and range before any
stage does work, and reports the first problem as one line naming the key and the value
(`ConfigError`), with the closest known key suggested for a typo.

The dataclass defaults are the shipped configuration: `params.yaml` spells out the same values
(DVC tracks params only in that file) and `tests/test_config.py` fails, naming the key, when the
two disagree. So `parse_params({})` is what `dvc repro` runs, and a partial dict (a test, a
Python caller) means "the shipped run, but...". Changing a default: edit it in `params.yaml`,
then here, where the test points.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from alae.errors import UserError


class ConfigError(UserError, ValueError):
    """A bad value in params.yaml; the message is one line a user can act on."""


SOURCES = ("fashion-mnist", "mnist-idx", "folder", "shards")
ENCODING_CHOICES = ("auto", "png", "jpeg", "npy")  # data.encoding (alae/data/encoding.py)
DEFAULT_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FEATURENET_KINDS = ("classifier", "selfsup")  # what the featurenet is trained for: its space's name


def is_pipe_url(path: Optional[str]) -> bool:
    """Whether webdataset would run `path` as a shell command (its `pipe:` URL scheme)."""
    return path is not None and path.startswith("pipe:")


def _power_of_two(n: int) -> bool:
    return n >= 4 and n & (n - 1) == 0


@dataclass(frozen=True)
class DataConfig:
    source: str = "fashion-mnist"   # one of SOURCES
    path: Optional[str] = None      # source location; fashion-mnist defaults to the Debian path
    resolution: int = 32            # stored resolution, a power of two
    channels: int = 1               # 1 (grayscale) or 3 (RGB)
    limit: Optional[int] = None     # cap on images per split (smoke runs, tests)
    test_fraction: float = 0.1      # folder source: share of images in the test split
    shard_size: int = 10000         # samples per tar shard
    allow_pipe: bool = False        # let data.path be a webdataset `pipe:` URL (a shell command)
    workers: int = 0                # shard stage processes decoding and encoding; 0 = all cores
    encoding: str = "auto"          # image inside the shards: auto | png | jpeg | npy
    jpeg_quality: int = 95          # encoding jpeg: its quality (1-100)
    loader_workers: int = 0         # training: processes that decode batches (0: the training
                                    # process itself); the batches are the same for any number
    flip: bool = False              # training: mirror about half the images left to right (the
                                    # reference does for faces), drawn from the seeded stream

    def check(self) -> None:
        _choice("data.source", self.source, SOURCES)
        _require("data.resolution", self.resolution, _power_of_two(self.resolution),
                 "a power of two >= 4")
        _choice("data.channels", self.channels, (1, 3))
        if self.limit is not None:
            _require("data.limit", self.limit, self.limit >= 1, ">= 1 or null")
        _require("data.test_fraction", self.test_fraction, 0.0 < self.test_fraction < 1.0,
                 "between 0 and 1")
        _require("data.shard_size", self.shard_size, self.shard_size >= 1, ">= 1")
        _require("data.workers", self.workers, self.workers >= 0, ">= 0 (0: all cores)")
        _choice("data.encoding", self.encoding, ENCODING_CHOICES)
        _require("data.jpeg_quality", self.jpeg_quality, 1 <= self.jpeg_quality <= 100,
                 "in 1..100")
        _require("data.loader_workers", self.loader_workers, self.loader_workers >= 0,
                 ">= 0 (0: decode in the training process)")
        if self.source in ("mnist-idx", "folder", "shards") and not self.path:
            raise ConfigError(f"data.path: required for data.source={self.source!r}")
        if is_pipe_url(self.path):
            self._check_pipe()

    def _check_pipe(self) -> None:
        """A `pipe:` path is a shell command webdataset would run: refused unless asked for, since
        params can arrive from anywhere (`dvc exp run -S`, a shared params.yaml, a preset)."""
        if not self.allow_pipe:
            raise ConfigError(f"data.path: {self.path!r} runs a shell command (webdataset pipe: "
                              "URL); set data.allow_pipe: true to allow it")
        if self.source != "shards":
            raise ConfigError(f"data.path: {self.path!r} is a pipe: URL, which only "
                              f"data.source: shards reads (not {self.source!r})")
        if "{split}" not in str(self.path):
            raise ConfigError(f"data.path: {self.path!r} needs {{split}} in it (replaced by "
                              "train and test, so the splits read different shards)")

    @property
    def source_path(self) -> str:
        return self.path or DEFAULT_FASHION_MNIST


@dataclass(frozen=True)
class FeaturenetConfig:
    kind: str = "classifier"  # classifier: trained on the labels; selfsup: contrastive, no labels
    seed: int = 0            # its own seed: the feature space depends only on data and these
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.001
    features: int = 128      # width of the penultimate layer (the FID feature space)

    def check(self) -> None:
        _choice("featurenet.kind", self.kind, FEATURENET_KINDS)
        _require("featurenet.epochs", self.epochs, self.epochs >= 1, ">= 1")
        _require("featurenet.batch_size", self.batch_size, self.batch_size >= 1, ">= 1")
        _require("featurenet.lr", self.lr, self.lr > 0, "> 0")
        _require("featurenet.features", self.features, self.features >= 2, ">= 2")


# A per-level table: one value for every level, or a list indexed by level of detail
# (4x4 first) whose last entry repeats for the levels beyond it (the reference's tables).
IntTable = typing.Union[int, tuple[int, ...]]
FloatTable = typing.Union[float, tuple[float, ...]]
_TABLES = {IntTable: int, FloatTable: float}


def table_entry(table: int | float | tuple, level: int) -> Any:
    """The value of a per-level table at `level` (the last entry repeats)."""
    if not isinstance(table, tuple):
        return table
    return table[min(level, len(table) - 1)]


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "style"         # style: StyleALAE, progressive; mlp: the paper's MNIST MLP
    latent: int = 128           # size of z and w
    mapping_layers: int = 4     # layers of F
    hidden: int = 1024          # mlp: width of the encoder and generator
    start_channels: int = 8     # style: feature maps at the final resolution...
    max_channels: int = 32      # ...doubling towards 4x4 up to this cap
    fused_resample: bool = True  # style: conv+pool and upsample+conv as one strided conv
                                 # (same sums, 4/9 of the work); false: the reference's order
    encoder_as_reference: bool = True  # style: E as the authors' (from-RGB leaky ReLU twice,
                                       # statistics -> w at gain sqrt 2); false: once, gain 1

    def check(self) -> None:
        _choice("model.kind", self.kind, ("style", "mlp"))
        _require("model.latent", self.latent, self.latent >= 1, ">= 1")
        _require("model.mapping_layers", self.mapping_layers, self.mapping_layers >= 1, ">= 1")
        _require("model.hidden", self.hidden, self.hidden >= 1, ">= 1")
        _require("model.start_channels", self.start_channels, self.start_channels >= 1, ">= 1")
        _require("model.max_channels", self.max_channels,
                 self.max_channels >= self.start_channels, ">= model.start_channels")


@dataclass(frozen=True)
class TrainConfig:
    kimg: float = 240.0          # training length in thousands of real images shown
    batch_size: IntTable = 64    # global batch per level (4x4 first; last entry repeats)
    lr_multiplier: FloatTable = 1.0  # per level, times the top-level lr (same table rule)
    transition_kimg: float = 15.0    # style: each level above 4x4 blends in over this...
    stabilize_kimg: float = 15.0     # ...then trains stable for this (4x4: both, no blend)
    style_mixing: float = 0.0    # style: probability of mixing two w per batch (authors': 0.9)
    r1_gamma: float = 0.1       # R1 weight gamma: penalty (gamma/2)*|grad|^2 on real images
    beta1: float = 0.0
    beta2: float = 0.99
    ema_kimg: float = 1.0       # half-life of the EMA networks, in thousands of images
    tick_kimg: float = 4.0       # log losses and img/s every this many thousand images
    checkpoint_kimg: float = 10.0  # resumable checkpoint this often (at the next tick end)
    keep_checkpoints: int = 3    # most recent checkpoints kept in .alae/runs/<run key>/
    fid_every_kimg: float = 30.0  # quick classifier-space FID this often (0 = off)
    fid_images: int = 1000       # generated images per quick FID
    device: str = "auto"         # auto | cpu | cuda | cuda:N
    precision: str = "fp32"      # fp32 | bf16 (autocast; GPUs, AMX CPUs) | fp16 (CUDA, scaled)
    r1_interval: int = 1         # lazy R1 (StyleGAN2): penalty every k-th step, times k; 1: faithful
    channels_last: bool = False  # NHWC memory format for the convolutions
    d_zero_grad_step: bool = False  # the authors' runs (torch 1.x) also stepped D's Adam with zero
                                    # gradients in the latent update (v decays twice per batch)
    nproc: int = 1               # data-parallel processes (torchrun); each global batch is split
    threads: int = 2             # torch CPU threads; 0 = torch's default

    def check(self) -> None:
        _require("train.kimg", self.kimg, self.kimg > 0, "> 0")
        _require_table("train.batch_size", self.batch_size, lambda v: v >= 1, ">= 1")
        _require_table("train.lr_multiplier", self.lr_multiplier, lambda v: v > 0, "> 0")
        _require("train.transition_kimg", self.transition_kimg, self.transition_kimg >= 0, ">= 0")
        _require("train.stabilize_kimg", self.stabilize_kimg, self.stabilize_kimg >= 0, ">= 0")
        _require("train.style_mixing", self.style_mixing, 0 <= self.style_mixing <= 1,
                 "in [0, 1]")
        _require("train.r1_gamma", self.r1_gamma, self.r1_gamma >= 0, ">= 0")
        _require("train.beta1", self.beta1, 0 <= self.beta1 < 1, "in [0, 1)")
        _require("train.beta2", self.beta2, 0 <= self.beta2 < 1, "in [0, 1)")
        _require("train.ema_kimg", self.ema_kimg, self.ema_kimg >= 0, ">= 0")
        _require("train.tick_kimg", self.tick_kimg, self.tick_kimg > 0, "> 0")
        _require("train.checkpoint_kimg", self.checkpoint_kimg, self.checkpoint_kimg >= 0,
                 ">= 0 (0: only at the end)")
        _require("train.keep_checkpoints", self.keep_checkpoints, self.keep_checkpoints >= 1, ">= 1")
        _require("train.fid_every_kimg", self.fid_every_kimg, self.fid_every_kimg >= 0,
                 ">= 0 (0: off)")
        _require("train.fid_images", self.fid_images, self.fid_images >= 2, ">= 2")
        _require("train.device", self.device,
                 self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                 "auto, cpu, cuda or cuda:N")
        _require("train.threads", self.threads, self.threads >= 0, ">= 0")
        _choice("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        _require("train.r1_interval", self.r1_interval, self.r1_interval >= 1, ">= 1")
        _require("train.nproc", self.nproc, self.nproc >= 1, ">= 1")
        _require_table("train.batch_size", self.batch_size, lambda v: v % self.nproc == 0,
                       f"a multiple of train.nproc={self.nproc} (each rank takes an equal share)")


# The evaluate section's keys with a fixed set of values (also `alae metrics`'s option choices).
EVALUATE_CHOICES = {"features": (*FEATURENET_KINDS, "inception"),
                    "ppl_distance": ("classifier", "lpips"),
                    "resize": ("legacy", "clean"),
                    "reference": ("test", "train"),
                    "rec_distance": ("classifier", "lpips"),
                    "ppl_crop": ("none", "face")}


@dataclass(frozen=True)
class EvaluateConfig:
    num_images: int = 10000      # generated and reconstructed images per FID (the paper used 50k)
    batch_size: int = 500
    features: str = "classifier"  # FID feature space: the featurenet's (classifier or selfsup,
    #                               as featurenet.kind) or inception
    seed: int = 0
    ppl_samples: int = 2000      # PPL pairs per sampling (StyleGAN used 100k, the paper 50k)
    ppl_distance: str = "classifier"  # PPL's image distance: classifier (featurenet) | lpips
    probe_train: int = 10000     # train images the linear probe is fitted on
    device: str = "auto"         # auto | cpu | cuda | cuda:N
    # Protocol options (alae/metrics): a non-default choice is named in the metric keys.
    resize: str = "legacy"       # Inception's resize to 299: legacy (pytorch-fid's bilinear) |
                                 # clean (clean-fid's PIL bicubic; space `inception_clean`)
    reference: str = "test"      # split FID / KID / P/R compare with: test | train (the paper's;
                                 # keys get `_trainref`, the data floor then reads test images)
    rec_distance: str = "classifier"  # distance of x to G(E(x)), key rec_distance_<it>:
                                 # classifier (featurenet) | lpips (the paper's)
    ppl_crop: str = "none"       # none | face: StyleGAN's central face crop, then above 256 px
                                 # box-downsampled to 256, before PPL's distance (`_facecrop`)

    def check(self) -> None:
        _require("evaluate.num_images", self.num_images, self.num_images >= 2, ">= 2")
        _require("evaluate.batch_size", self.batch_size, self.batch_size >= 1, ">= 1")
        _require("evaluate.ppl_samples", self.ppl_samples, self.ppl_samples >= 2, ">= 2")
        _require("evaluate.seed", self.seed, self.seed >= 0, ">= 0")
        _require("evaluate.probe_train", self.probe_train, self.probe_train >= 2, ">= 2")
        _require("evaluate.device", self.device,
                 self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                 "auto, cpu, cuda or cuda:N")
        for key, choices in EVALUATE_CHOICES.items():
            _choice(f"evaluate.{key}", getattr(self, key), choices)
        _require("evaluate.resize", self.resize,
                 self.resize == "legacy" or self.features == "inception",
                 f"legacy with evaluate.features: {self.features}, which resizes to its "
                 "featurenet's resolution; clean is for inception")


@dataclass(frozen=True)
class FiguresConfig:
    seed: int = 0
    samples: int = 64            # images in the sample grid
    pairs: int = 4               # rows of test images (each above its reconstruction)
    columns: int = 8
    psi: Optional[float] = 0.7   # truncation of sample grids towards the average w; null = none
    cutoff: int = 8              # ...on this many coarse style slots (StyleGAN's convention)

    def check(self) -> None:
        if self.psi is not None:
            _require("figures.psi", self.psi, 0 <= self.psi <= 1, "in [0, 1] or null")
        _require("figures.cutoff", self.cutoff, self.cutoff >= 1, ">= 1")
        _require("figures.samples", self.samples, self.samples >= 1, ">= 1")
        _require("figures.pairs", self.pairs, self.pairs >= 1, ">= 1")
        _require("figures.columns", self.columns, self.columns >= 1, ">= 1")


@dataclass(frozen=True)
class Params:
    lr: float = 0.002            # base learning rate (`dvc exp run -S lr=...`)
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    featurenet: FeaturenetConfig = field(default_factory=FeaturenetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)

    def check(self) -> None:
        _require("lr", self.lr, self.lr > 0, "> 0")
        for f in fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.check()
        features, kind = self.evaluate.features, self.featurenet.kind
        if features in FEATURENET_KINDS and features != kind:
            raise ConfigError(f"evaluate.features: {features!r} is the featurenet's space, and "
                              f"featurenet.kind is {kind!r} (make them equal, or use inception)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys, as MLflow params."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out


def _require(key: str, value: Any, ok: bool, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {value!r} is not allowed (must be {what})")


def _require_table(key: str, table: Any, ok: Any, what: str) -> None:
    values = table if isinstance(table, tuple) else (table,)
    _require(key, list(table) if isinstance(table, tuple) else table,
             len(values) >= 1 and all(ok(v) for v in values), f"{what}, or a non-empty list of such")


def _choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check a YAML value against a field's type; ints are accepted where floats are expected."""
    if annotation in _TABLES:  # a scalar, or a list of them (kept as a tuple: params are frozen)
        element = _TABLES[annotation]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(f"{key}[{i}]", v, element) for i, v in enumerate(value))
        return _coerce(key, value, element)
    optional = typing.get_origin(annotation) is typing.Union
    if optional:
        if value is None:
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation in (int, str) and isinstance(value, annotation) and not isinstance(value, bool):
        return value
    wanted = annotation.__name__ + (" or null" if optional else "")
    raise ConfigError(f"{key}: {value!r} has the wrong type (expected {wanted})")


def _closest(key: str, known: set[str]) -> Optional[str]:
    """The known key a typo most likely meant: a close spelling, else one it abbreviates or
    extends (`reso` -> `resolution`, which spelling similarity alone misses)."""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return close[0]
    related = sorted(k for k in known if k.startswith(key) or key.startswith(k))
    return related[0] if len(related) == 1 else None


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'params'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            close = _closest(str(key), known)
            hint = f" (did you mean {prefix}{close}?)" if close else ""
            raise ConfigError(f"{prefix}{key}: unknown key{hint}")
        hint_type = hints[key]
        if dataclasses.is_dataclass(hint_type):
            kwargs[key] = _build(hint_type, value if value is not None else {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(prefix + key, value, hint_type)
    return cls(**kwargs)


def merge_params(base: dict, new: dict) -> dict:
    """Write `new`'s values into the params tree `base` in place (nested sections merge, any
    other value replaces), keeping base's key order; returns base. `new` may also be flat
    dotted keys (`{"train.kimg": 5}`, the `-S` form), which go where the dots say."""
    for key, value in new.items():
        if "." in key:
            head, rest = key.split(".", 1)
            value, key = {rest: value}, head
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_params(base[key], value)
        elif isinstance(value, dict) and any("." in k for k in value):
            base[key] = merge_params({}, value)
        else:
            base[key] = value
    return base


def parse_params(raw: Any) -> Params:
    params = _build(Params, raw if raw is not None else {}, "")
    params.check()
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_params(raw)
