"""Directions in W, and the file that holds them (`alae directions`, read by `alae edit`).

Four ways to a direction, all stored alike:
- `svm`: per label, one-vs-rest, the unit normal of a linear SVM's boundary fitted on E(x) of
  training images (InterFaceGAN, Shen et al. 2020; what the ALAE authors did for FFHQ in their
  `principal_directions/find_principal_directions.py`, LinearSVC with C = 1). Codes are
  standardised for the fit and the normal mapped back into W (coef / scale), so it is the normal
  of the same boundary in W's own coordinates; classes are weighted equally, so that a class
  with a tenth of the images still decides the boundary. Scored on held-out images.
- `mean`: per label, the difference between the mean code of its images and that of the others
  (the attribute vectors of autoencoders, Larsen et al. 2016, sec. 5), scored on held-out images
  by the cut halfway between the two means along it. Where the codes vary little along the
  SVM's normal (the default model's: README, "Editing"), G barely moves along it, and this is
  the direction that edits.
- `sefa`: no labels: the closed-form factorisation of G's style modulation (SeFa, Shen & Zhou,
  CVPR 2021, eq. 6): with A the affine weights of the chosen style slots (AdaIN's gamma and
  beta rows, each row scaled to unit length as in their code), the top-k eigenvectors of AᵀA,
  the unit directions in W that move those styles most.
- `official`: the authors' FFHQ `principal_directions/direction_K.npy` (raw SVM weights for
  attribute K of the CelebA-HQ classifiers), scaled to unit length, for their imported models.

The file (`numpy.savez`, no pickles; `load_directions` checks it):

    format        "alae-directions", version 1
    names         (K,) str      label or direction names, e.g. "Sneaker", "sefa0", "smile"
    vectors       (K, latent)   unit directions in W (float32)
    accuracy      (K,)          held-out accuracy of each label's classifier (NaN: none)
    balanced      (K,)          the same, balanced (mean of the two recalls: chance is 0.5)
    eigenvalues   (K,)          SeFa's eigenvalues (NaN for the others)
    code_mean     (latent,)     mean and covariance of the codes the strengths are measured
    code_cov      (latent, latent)  against (E(x) of training images, or F(z) of draws)
    std           (K,)          sqrt(v' code_cov v): one strength unit along each direction
    method, layers, codes_from, model_sha256   strings: how, for which style block, on what
                                codes and for which model file they were made

`A->B` (also `A→B`, e.g. `Sneaker->Ankle boot`) is resolved at edit time: the unit vector along
v_B - v_A, with its own std from `code_cov`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from alae.errors import UserError
from alae.io import atomic_open
from alae.nn import ALAE

FORMAT = "alae-directions"
VERSION = 1
SVM_C = 1.0            # the authors' (find_principal_directions.py)
ARROW = re.compile(r"\s*(?:->|→)\s*")
# Their attribute indices (the CelebA-HQ classifiers StyleGAN released) and their names for them
# (make_figures/make_traversarls.py); other indices are named direction_K.
OFFICIAL_NAMES = {0: "gender", 1: "smile", 2: "attractive", 3: "wavy-hair", 4: "young",
                  10: "big_lips", 11: "big_nose", 17: "chubby", 19: "glasses"}
OFFICIAL_FILE = re.compile(r"direction_(\d+)\.npy\Z")


@dataclass(frozen=True)
class Directions:
    names: list[str]
    vectors: np.ndarray
    accuracy: np.ndarray
    balanced: np.ndarray
    eigenvalues: np.ndarray
    code_mean: np.ndarray
    code_cov: np.ndarray
    method: str
    layers: str
    codes_from: str
    model_sha256: str

    @property
    def latent(self) -> int:
        return self.vectors.shape[1]

    @property
    def std(self) -> np.ndarray:
        return np.array([spread(self.code_cov, v) for v in self.vectors])

    def resolve(self, name: str) -> tuple[str, np.ndarray, float]:
        """(canonical name, unit vector, std of the codes along it) of `name` or `A->B`;
        names match without regard to case."""
        parts = ARROW.split(name.strip())
        if len(parts) == 2:
            (a, va, _), (b, vb, _) = self.resolve(parts[0]), self.resolve(parts[1])
            diff = vb - va
            if np.linalg.norm(diff) < 1e-8:
                raise UserError(f"--direction {name!r}: {a} and {b} are the same direction")
            v = diff / np.linalg.norm(diff)
            return f"{a}->{b}", v, spread(self.code_cov, v)
        wanted = {n.casefold(): i for i, n in enumerate(self.names)}
        i = wanted.get(parts[0].casefold()) if len(parts) == 1 else None
        if i is None:
            raise UserError(f"--direction {name!r}: not among the directions "
                            f"({', '.join(self.names)}; or A->B between two of them)")
        return self.names[i], self.vectors[i], spread(self.code_cov, self.vectors[i])


def spread(cov: np.ndarray, v: np.ndarray) -> float:
    """Standard deviation of the codes' projection on unit vector v."""
    return float(np.sqrt(max(v @ cov @ v, 0.0)))


def unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def code_stats(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(codes, np.float64)
    return codes.mean(0), np.atleast_2d(np.cov(codes, rowvar=False))


# --- from labels ---------------------------------------------------------------------------
def fit_direction(codes: np.ndarray, positive: np.ndarray, seed: int = 0
                  ) -> tuple[np.ndarray, Pipeline]:
    """(the unit normal in W of a linear SVM separating `positive` codes from the rest, pointing
    towards the positive side; the fitted classifier)."""
    classifier = make_pipeline(
        StandardScaler(),
        LinearSVC(C=SVM_C, dual=False, class_weight="balanced", random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(codes, positive)
    scaler, svm = classifier[0], classifier[1]
    # w . (x - mu) / s = (w / s) . x + const: the same boundary's normal in W's coordinates
    normal = svm.coef_[0] / scaler.scale_
    return normal / np.linalg.norm(normal), classifier


def mean_direction(codes: np.ndarray, positive: np.ndarray
                   ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(the unit vector from the others' mean code to the `positive` codes' mean; the classifier
    that cuts along it halfway between the two means)."""
    inside, outside = codes[positive].mean(0), codes[~positive].mean(0)
    v = (inside - outside) / np.linalg.norm(inside - outside)
    cut = v @ (inside + outside) / 2
    return v, lambda c: c @ v > cut


LABEL_METHODS = ("svm", "mean")


def from_labels(train, test, model_sha256: str, codes_from: str, seed: int = 0,
                method: str = "svm") -> Directions:
    """One direction per label of `train` (alae.edit.labelled.Labelled) by `method` (svm or
    mean), scored on `test`."""
    if method not in LABEL_METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(LABEL_METHODS)}")
    check_names(train.names)
    vectors, acc, bal = [], [], []
    for k, name in enumerate(train.names):
        positive = train.labels[:, k]
        if positive.all() or not positive.any():
            raise UserError(f"label {name!r}: {'every' if positive.all() else 'no'} training "
                            "image has it, so there is nothing to separate")
        if method == "svm":
            v, classifier = fit_direction(train.codes, positive, seed)
            predict = classifier.predict
        else:
            v, predict = mean_direction(train.codes, positive)
        vectors.append(v)
        if len(test.codes):
            predicted, truth = predict(test.codes), test.labels[:, k]
            acc.append(accuracy_score(truth, predicted))
            with warnings.catch_warnings():  # a held-out set without the label: one recall
                warnings.simplefilter("ignore", UserWarning)
                bal.append(balanced_accuracy_score(truth, predicted))
        else:
            acc.append(np.nan)
            bal.append(np.nan)
    mean, cov = code_stats(train.codes)
    k = len(vectors)
    return Directions(list(train.names), np.asarray(vectors), np.asarray(acc), np.asarray(bal),
                      np.full(k, np.nan), mean, cov, method, "all", codes_from, model_sha256)


# --- SeFa ----------------------------------------------------------------------------------
def style_weights(model: ALAE, slots: range) -> np.ndarray:
    """The affine (style modulation) weights of G's style slots `slots`, as applied: (rows,
    latent), slot 2i being block i's first AdaIN, 2i+1 its second."""
    if not model.progressive:
        raise UserError("SeFa factorises G's style modulation: StyleALAE only")
    rows = []
    for s in slots:
        block = model.synthesis.blocks[s // 2]
        layer = (block.style1 if s % 2 == 0 else block.style2).style
        rows.append((layer.weight * layer.scale).detach().double().cpu().numpy())
    return np.concatenate(rows)


def sefa(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-k unit eigenvectors of AᵀA as rows, their eigenvalues, largest first), A being
    `weights` with each row scaled to unit length."""
    a = unit_rows(np.asarray(weights, np.float64))
    values, vectors = np.linalg.eigh(a.T @ a)
    order = np.argsort(values)[::-1][:k]
    return vectors[:, order].T, values[order]


def from_sefa(model: ALAE, slots: range, layers: str, k: int, codes: np.ndarray,
              codes_from: str, model_sha256: str) -> Directions:
    if not 1 <= k <= model.latent:
        raise UserError(f"--top {k}: between 1 and the latent size {model.latent}")
    vectors, values = sefa(style_weights(model, slots), k)
    mean, cov = code_stats(codes)
    nan = np.full(k, np.nan)
    return Directions([f"sefa{i}" for i in range(k)], vectors, nan, nan, values, mean, cov,
                      "sefa", layers, codes_from, model_sha256)


# --- the authors' files --------------------------------------------------------------------
def official_files(path: str | Path) -> list[tuple[int, Path]]:
    """(attribute index, file) of the direction_K.npy files in a folder, or of one such file."""
    path = Path(path)
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    found = sorted((int(m[1]), f) for f in files if (m := OFFICIAL_FILE.match(f.name)))
    if not found:
        raise UserError(f"--official {path}: no direction_K.npy files (the authors' "
                        "principal_directions/ folder)")
    return found


def from_official(path: str | Path, latent: int, codes: np.ndarray, codes_from: str,
                  model_sha256: str) -> Directions:
    names, vectors = [], []
    for index, f in official_files(path):
        try:
            v = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{f}: not a .npy array ({type(e).__name__})") from None
        v = np.asarray(v, np.float64).reshape(-1)  # theirs: (latent,); (1, latent) as well
        if v.shape != (latent,) or not np.isfinite(v).all() or not v.any():
            raise UserError(f"{f}: a direction of {v.size} numbers, the model's W is "
                            f"{latent}-d (or it is zero or not finite)")
        names.append(OFFICIAL_NAMES.get(index, f"direction_{index}"))
        vectors.append(v / np.linalg.norm(v))
    mean, cov = code_stats(codes)
    nan = np.full(len(names), np.nan)
    return Directions(names, np.asarray(vectors), nan, nan, nan, mean, cov, "official", "all",
                      codes_from, model_sha256)


# --- the file ------------------------------------------------------------------------------
def save_directions(d: Directions, path: str | Path) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, format=np.str_(FORMAT), version=np.int64(VERSION),
                 names=np.asarray(d.names, dtype=str), vectors=d.vectors.astype(np.float32),
                 accuracy=d.accuracy, balanced=d.balanced, eigenvalues=d.eigenvalues,
                 code_mean=d.code_mean, code_cov=d.code_cov, std=d.std,
                 method=np.str_(d.method), layers=np.str_(d.layers),
                 codes_from=np.str_(d.codes_from), model_sha256=np.str_(d.model_sha256))


ARRAYS = ("names", "vectors", "accuracy", "balanced", "eigenvalues", "code_mean", "code_cov")
STRINGS = ("method", "layers", "codes_from", "model_sha256")


def load_directions(path: str | Path, latent: Optional[int] = None) -> Directions:
    """The file `save_directions` wrote; a one-line UserError for anything else, or for
    directions of another latent size than `latent`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != FORMAT or int(z["version"]) != VERSION:
                raise KeyError("format")
            arrays = {k: z[k] for k in ARRAYS}
            strings = {k: str(z[k]) for k in STRINGS}
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: not a directions file of `alae directions` "
                        f"({type(e).__name__})") from None
    d = Directions(names=[str(n) for n in arrays.pop("names")],
                   vectors=arrays.pop("vectors").astype(np.float64), **arrays, **strings)
    if latent is not None and d.latent != latent:
        raise UserError(f"{path}: directions in a {d.latent}-d W, the model's is {latent}-d")
    return d


def describe(d: Directions) -> list[str]:
    """One line per direction: name, std, and its score."""
    lines = []
    for i, name in enumerate(d.names):
        score = (f"held-out accuracy {d.accuracy[i]:.3f} (balanced {d.balanced[i]:.3f})"
                 if np.isfinite(d.accuracy[i]) else
                 f"eigenvalue {d.eigenvalues[i]:.4g}" if np.isfinite(d.eigenvalues[i]) else "")
        lines.append(f"{name}: 1 std = {d.std[i]:.4g}" + (f", {score}" if score else ""))
    return lines


QUIET = 0.5  # directions along which the codes vary less than this share of a typical one's


def quiet_note(d: Directions) -> Optional[str]:
    """A warning when the codes vary much less along the directions than along a typical
    direction of W (the RMS over an orthonormal basis): G was trained on codes that hardly move
    there, and may hardly respond (the default model's SVM directions: README, "Editing")."""
    typical = np.sqrt(np.trace(d.code_cov) / d.latent)
    if d.method != "svm" or typical == 0 or np.median(d.std) >= QUIET * typical:
        return None
    return (f"the codes vary less along these directions (median std {np.median(d.std):.3g}) "
            f"than along a typical one of W ({typical:.3g}): G may barely respond to them; "
            "--method mean follows the codes' own spread")


def check_names(names: Sequence[str]) -> None:
    for name in names:
        if ARROW.search(name):
            raise UserError(f"label {name!r}: '->' in a label name would read as A->B")
