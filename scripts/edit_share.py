"""Does an edit do what its name says? The share of test images of one class that the featurenet
calls another class after moving them along a direction (`alae edit`'s convention).

Directions come from `alae directions --method METHOD` on the model (train codes); the first
`--count` test images labelled SOURCE are edited at each strength (in standard deviations of the
training codes along the direction) on the style slots `--layers`, decoded, and classified by
the pipeline's featurenet (a judge trained on real images, not on the model's):

    python scripts/edit_share.py [--model models/alae.pt] [--source Sneaker]
        [--target "Ankle boot"] [--strengths 0,0.5,1,2,3] [--layers all] [--method mean]

Prints one line per strength: the share called TARGET, called SOURCE, and the other classes
the featurenet sees (strength 0 is the plain reconstruction G(E(x))).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import click  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from alae.errors import UserError, exits_cleanly  # noqa: E402


def _label(names: list[str], name: str, option: str) -> int:
    folded = [n.casefold() for n in names]
    if name.casefold() not in folded:
        raise UserError(f"{option} {name!r}: the data's labels are {', '.join(names)}")
    return folded.index(name.casefold())


@click.command()
@click.option("--model", default="models/alae.pt", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--featurenet", default="models/featurenet.pt", show_default=True)
@click.option("--source", default="Sneaker", show_default=True)
@click.option("--target", default="Ankle boot", show_default=True,
              help="a class, or a direction A->B (judged by B)")
@click.option("--strengths", default="0,0.5,1,2,3", show_default=True)
@click.option("--layers", default="all", show_default=True)
@click.option("--method", default="mean", show_default=True)
@click.option("--count", default=200, show_default=True)
@exits_cleanly
def main(model: str, shards: str, featurenet: str, source: str, target: str, strengths: str,
         layers: str, method: str, count: int) -> None:
    from alae.checkpoint import load_model
    from alae.data import eval_batches, read_manifest
    from alae.edit.directions import ARROW, load_directions
    from alae.edit.strips import edit_images, edit_slots
    from alae.featurenet import load_featurenet

    names = read_manifest(shards)["label_names"] or []
    # an `A->B` direction is judged by its B
    src = _label(names, source, "--source")
    dst = _label(names, ARROW.split(target)[-1].strip(), "--target")
    net, _ = load_featurenet(featurenet)
    net.eval()
    ae, _, _ = load_model(model)
    ae.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "directions.npz"
        subprocess.run([sys.executable, "-m", "alae.cli", "directions", "--model", model,
                        "--data", shards, "--method", method, "--out", str(path)], cwd=ROOT,
                       check=True, capture_output=True)
        directions = load_directions(path)
    _, vector, std = directions.resolve(target)
    picked = []
    for x, y in eval_batches(shards, "test", int(ae.resolution), 500):
        picked.append(x[y == src])
        if sum(len(p) for p in picked) >= count:
            break
    x = torch.cat(picked)[:count]
    with torch.no_grad():
        real = (net(x).argmax(1) == src).float().mean().item()
    print(f"the featurenet calls {real:.0%} of these {len(x)} real test {source}s {source}")
    levels = np.array([float(s) for s in strengths.split(",")])
    edited = edit_images(ae, x, vector, std, levels, edit_slots(ae, layers))  # (N, T, C, H, W)
    with torch.no_grad():
        for t, s in enumerate(levels):
            called = np.bincount(net(edited[:, t].clamp(-1, 1)).argmax(1).numpy(),
                                 minlength=len(names)) / len(x)
            rest = ", ".join(f"{names[k]} {called[k]:.0%}" for k in np.argsort(-called)[:4]
                             if k not in (src, dst) and called[k] > 0)
            print(f"{method} {target!r} {s:+.1f} std on {layers}: {len(x)} test {source}s -> "
                  f"{called[dst]:.0%} called {names[dst]}, {called[src]:.0%} {names[src]}"
                  + (f" ({rest})" if rest else ""))
    print(f"(1 std = {std:.2f} along the unit direction; directions: {method}, "
          f"model {model})")


if __name__ == "__main__":
    main()
