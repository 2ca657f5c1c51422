"""Reference configurations (presets/NAME.yaml) written into params.yaml, so that `dvc.lock`,
`dvc exp show` and MLflow see the values a run really used."""
from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any, Optional

import yaml

from alae.config import ConfigError, Params, merge_params, parse_params
from alae.io import atomic_open

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
# Trained on MNIST by the reference; the default data (Fashion-MNIST) runs, but is not MNIST.
MNIST_PRESETS = ("mlp", "mnist")


def preset_path(name: str, params_path: str | Path = "params.yaml") -> Path:
    """presets/NAME.yaml beside the params file, else in this checkout; or a path to a file."""
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else [
        Path(params_path).resolve().parent / "presets" / f"{name}.yaml", PRESETS_DIR / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    raise ConfigError(f"preset {name!r}: not found (known: {', '.join(known)})")


def _read_preset(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset is a mapping of params.yaml sections")
    return raw


def merged_preset(name: str, params_path: str | Path = "params.yaml") -> Params:
    """params.yaml with the preset written in, validated (nothing is written)."""
    base = yaml.safe_load(Path(params_path).read_text()) or {}
    return parse_params(merge_params(copy.deepcopy(base), _read_preset(preset_path(name, params_path))))


def preset_params(name: str) -> Params:
    """Preset NAME over the built-in defaults alone (no params.yaml): what a model imported with
    that configuration records (`alae import-official`)."""
    return parse_params(_read_preset(preset_path(name)))


def _show(value: Any) -> str:
    """A value as params.yaml spells it: null, true, [128, 64]."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")


def changes(base: dict, preset: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for each value of `preset` that differs from `base`."""
    lines = []
    for key, new in preset.items():
        if isinstance(new, dict):
            old = base.get(key)
            lines += changes(old if isinstance(old, dict) else {}, new, f"{prefix}{key}.")
        elif key not in base or base[key] != new:
            old = _show(base[key]) if key in base else "(not set)"
            lines.append(f"{prefix}{key}: {old} -> {_show(new)}")
    return lines


def preset_note(name: str, params: Params) -> Optional[str]:
    """What else a preset needs that it cannot write itself."""
    if name in MNIST_PRESETS and params.data.source != "mnist-idx":
        return (f"preset {name} is the reference's MNIST configuration: for MNIST itself set "
                "data.source: mnist-idx and data.path: a folder with the four MNIST IDX files "
                "(README, Data sources)")
    return None


def apply_preset(name: str, params_path: str | Path = "params.yaml") -> tuple[Params, list[str]]:
    """Write the preset's values into params.yaml (comments and order kept where ruamel.yaml, a
    DVC dependency, is there to round-trip them), after validating the result; returns the
    params and the changed values (`changes`)."""
    params_path = Path(params_path)
    preset = _read_preset(preset_path(name, params_path))
    text = params_path.read_text() if params_path.is_file() else ""
    base = yaml.safe_load(text) or {}
    params = parse_params(merge_params(copy.deepcopy(base), preset))
    try:
        from ruamel.yaml import YAML
        from ruamel.yaml.comments import CommentedSeq
    except ImportError:  # plain YAML: valid and complete, without the comments
        out = yaml.safe_dump(merge_params(copy.deepcopy(base), preset), sort_keys=False)
    else:
        rt = YAML()
        rt.preserve_quotes = True
        # ruamel writes None as an empty value; params.yaml spells it `null`
        rt.representer.add_representer(
            type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
        doc = rt.load(text) or {}

        def flow(value: Any) -> Any:  # tables as one-line lists, like the rest of params.yaml
            if isinstance(value, dict):
                return {k: flow(v) for k, v in value.items()}
            if isinstance(value, list):
                seq = CommentedSeq(value)
                seq.fa.set_flow_style()
                return seq
            return value

        merge_params(doc, flow(preset))
        buf = io.StringIO()
        rt.dump(doc, buf)
        out = buf.getvalue()
    if parse_params(yaml.safe_load(out)) != params:  # the file must say exactly what we checked
        raise ConfigError(f"{params_path}: writing preset {name!r} would not round-trip")
    mode = params_path.stat().st_mode & 0o777 if params_path.is_file() else 0o644
    with atomic_open(params_path, "w") as f:
        f.write(out)
    params_path.chmod(mode)  # the temporary file's 0600 would otherwise stay
    return params, changes(base, preset)
