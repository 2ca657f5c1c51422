"""FID arithmetic against numpy and pytorch-fid, the metric plumbing against test doubles whose
answers are known by hand (a "model" that returns the test set, or noise), reference statistics
files, and `alae fid` in the classifier space."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

import re

from click.testing import CliRunner
from PIL import Image

from alae.checkpoint import load_model, save_model
from alae.cli import main as cli
from alae.config import ConfigError, EvaluateConfig, ModelConfig, parse_params
from alae.data import read_manifest
from alae.errors import UserError
from alae.featurenet import save_featurenet
from alae.metrics import (METRICS_PROTOCOL, default_metrics, evaluate_model, metric_names,
                          provenance, register, resolve_names, run_metrics)
from alae.metrics.features import ClassifierFeatures, load_extractor, resize
from alae.metrics.fid import FeatureStats, frechet_distance, load_stats, save_stats
from alae.metrics.refstats import compute_reference, load_reference, write_reference
from alae.nn import build_model
from alae.nn.layers import NoiseInjection
from metric_doubles import Double, load_test_split, load_train_split

rng = np.random.default_rng(0)


def stats_of(x, chunk=None) -> FeatureStats:
    s = FeatureStats()
    for i in range(0, len(x), chunk or len(x)):
        s.update(x[i:i + (chunk or len(x))])
    return s


# ---------------------------------------------------------------- FeatureStats, frechet_distance

def test_stats_match_numpy():
    x = rng.normal(50.0, 3.0, size=(400, 6)) @ rng.normal(size=(6, 6))  # far from 0, correlated
    x = x.astype(np.float32).astype(np.float64)   # float32 features, as extractors give them
    s = stats_of(torch.from_numpy(x).float())
    assert s.n == 400
    np.testing.assert_allclose(s.mean(), x.mean(0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(s.cov(), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("chunk", [1, 7, 128])
def test_stats_do_not_depend_on_batch_size(chunk):
    x = rng.normal(size=(300, 5)) + 10
    whole, parts = stats_of(x), stats_of(x, chunk)
    np.testing.assert_allclose(parts.mean(), whole.mean(), rtol=1e-12)
    np.testing.assert_allclose(parts.cov(), whole.cov(), rtol=1e-10, atol=1e-12)


def test_stats_keep_their_features_when_asked():
    x = rng.normal(size=(30, 4)).astype(np.float32)
    kept = FeatureStats(keep=True).update(x[:7]).update(torch.from_numpy(x[7:]))
    np.testing.assert_array_equal(kept.features(), x)
    assert kept.features().dtype == np.float32
    plain = FeatureStats().update(x[:7]).update(x[7:])
    np.testing.assert_array_equal(kept.cov(), plain.cov())   # the same statistics
    with pytest.raises(ValueError, match="keep"):
        stats_of(x).features()


def test_stats_refuse_too_few_and_mixed_widths():
    s = FeatureStats().update(np.ones((1, 3)))
    with pytest.raises(ValueError):
        s.cov()
    with pytest.raises(ValueError):
        s.update(np.ones((2, 4)))


def test_fid_diagonal_by_hand():
    # Diagonal covariances: the sum over axes of m² + a + b - 2·sqrt(ab). The four points
    # (±1, 0), (0, ±1) have mean 0 and unbiased variance 2/3 on each axis, covariance 0.
    cross = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    a = stats_of(cross)                                   # variances 2/3, 2/3
    b = stats_of(cross * [2.0, 3.0] + [3.0, 0.0])          # mean (3, 0), variances 8/3, 6
    by_hand = 9 + (2 / 3 + 8 / 3 - 2 * 4 / 3) + (2 / 3 + 6 - 2 * 2)
    assert frechet_distance(a, b) == pytest.approx(by_hand, rel=1e-9)


def test_fid_equal_covariances_is_squared_mean_difference():
    x = rng.normal(size=(500, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance(stats_of(x), stats_of(x + shift)) == pytest.approx(
        float(shift @ shift), rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero():
    x = rng.normal(size=(300, 8))
    assert abs(frechet_distance(stats_of(x), stats_of(x, 13))) < 1e-6


@pytest.mark.parametrize("n", [4, 64])
def test_fid_independent_of_batch_size(n):
    x = rng.normal(size=(300, 6)) * [1, 2, 3, 1, 1, 5]
    y = rng.normal(0.2, 1.0, size=(200, 6))
    whole = frechet_distance(stats_of(x), stats_of(y))
    assert frechet_distance(stats_of(x, n), stats_of(y, n + 3)) == pytest.approx(whole, rel=1e-9)


def test_stats_file_round_trip(tmp_path):
    x = rng.normal(size=(50, 5))
    s = stats_of(x)
    save_stats(tmp_path / "s.npz", s, features="classifier", featurenet_sha256="ab" * 32)
    back, meta = load_stats(tmp_path / "s.npz")
    assert back.n == 50 and meta == {"features": "classifier", "featurenet_sha256": "ab" * 32}
    np.testing.assert_array_equal(back.mean(), s.mean())
    np.testing.assert_array_equal(back.cov(), s.cov())
    assert frechet_distance(back, s) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        back.update(x)
    # pytorch-fid's own files hold only mu and sigma.
    np.savez(tmp_path / "pf.npz", mu=s.mean(), sigma=s.cov())
    assert load_stats(tmp_path / "pf.npz")[1] == {}
    np.savez(tmp_path / "bad.npz", m=s.mean())
    with pytest.raises(UserError, match="no 'mu' and 'sigma'"):
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(UserError, match="not found"):
        load_stats(tmp_path / "missing.npz")


def test_fid_failure_of_sqrtm_is_one_line(monkeypatch):
    import pytorch_fid.fid_score

    def imaginary(*args):
        raise ValueError("Imaginary component 0.4")

    monkeypatch.setattr(pytorch_fid.fid_score, "calculate_frechet_distance", imaginary)
    few = stats_of(rng.normal(size=(5, 8)))
    with pytest.raises(UserError, match="5 vectors cannot give a full-rank 8-d covariance"):
        frechet_distance(few, few)


def test_fid_matches_pytorch_fid():
    x = rng.normal(size=(400, 10))
    y = rng.normal(0.3, 1.5, size=(350, 10)) @ rng.normal(size=(10, 10))
    ours = frechet_distance(stats_of(x, 64), stats_of(y, 50))
    ref = calculate_frechet_distance(x.mean(0), np.cov(x, rowvar=False),
                                     y.mean(0), np.cov(y, rowvar=False))
    assert ours == pytest.approx(ref, rel=1e-8)


# ---------------------------------------------------------------- extractor

def test_resize():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(resize(x, 4), x)
    assert torch.allclose(resize(x, 2)[0, 0, 0, 0], x[0, 0, :2, :2].mean())   # area
    assert resize(x, 8).shape == (1, 1, 8, 8)


@pytest.fixture(scope="module")
def extractor(tiny_classifier) -> ClassifierFeatures:
    return tiny_classifier


def test_extractor_interface(extractor):
    assert extractor.name == "classifier" and extractor.dim == 32
    assert len(extractor.sha256) == 64
    assert extractor(torch.zeros(3, 1, 16, 16)).shape == (3, 32)   # resized up to 32
    with pytest.raises(ValueError, match="channel"):
        extractor(torch.zeros(2, 3, 32, 32))


# ---------------------------------------------------------------- evaluate_model with doubles

FID_METRICS = ["fid", "rec_fid", "fid_floor", "mse"]
KEYS = {"fid_classifier", "rec_fid_classifier", "fid_floor_classifier", "mse"}
KID_PR = ["kid", "pr", "rec_kid", "rec_pr"]
KID_PR_KEYS = {f"{rec}{k}_classifier" for rec in ("", "rec_")
               for k in ("kid", "kid_std", "precision", "recall")}
ALL_KEYS = KEYS | {"kid_classifier", "kid_std_classifier", "precision_classifier",
                  "recall_classifier", "ppl_full_classifier", "ppl_end_classifier", "probe_acc",
                  "probe_acc_pixels", "rec_distance_classifier"}   # the default list: rec_kid
                                                                   # and rec_pr when asked for


@pytest.mark.parametrize("resolution", [32, 16])
def test_perfect_model(extractor, tiny_shards, resolution):
    n_test = read_manifest(tiny_shards)["counts"]["test"]
    model = Double(resolution, bank=load_test_split(tiny_shards, resolution))
    cfg = EvaluateConfig(num_images=n_test, batch_size=128)
    m = evaluate_model(model, extractor, tiny_shards, cfg, FID_METRICS)
    assert set(m) == KEYS and all(isinstance(v, float) for v in m.values())
    assert m["mse"] == 0.0
    assert abs(m["rec_fid_classifier"]) < 1e-6   # reconstructions are the test set
    assert abs(m["fid_classifier"]) < 1e-6       # samples are the test set
    assert m["fid_floor_classifier"] > 1e-3      # other real images: a finite floor


def test_noise_model(extractor, tiny_shards):
    x = load_test_split(tiny_shards, 32)
    cfg = EvaluateConfig(num_images=200, batch_size=64, seed=5)
    m = evaluate_model(Double(32, rec="zeros"), extractor, tiny_shards, cfg, FID_METRICS)
    assert m["fid_classifier"] > 10 * m["fid_floor_classifier"]
    assert m["rec_fid_classifier"] > 10 * m["fid_floor_classifier"]
    # Reconstructing zeros: the error is the mean square of the first 200 test images.
    assert m["mse"] == pytest.approx(x[:200].double().pow(2).mean().item(), rel=1e-9)
    again = evaluate_model(Double(32), extractor, tiny_shards, cfg, ["fid"])
    assert again == {"fid_classifier": m["fid_classifier"]}   # the model's own noise is seeded


def test_kid_and_pr_of_real_images_and_of_noise(extractor, tiny_shards):
    n_test = read_manifest(tiny_shards)["counts"]["test"]
    # Samples and reconstructions that are the test set itself: inside each other's manifold.
    same = evaluate_model(Double(32, bank=load_test_split(tiny_shards, 32)), extractor,
                          tiny_shards, EvaluateConfig(num_images=n_test, batch_size=128),
                          ["pr", "rec_pr"])
    assert same == dict.fromkeys(["precision_classifier", "recall_classifier",
                                  "rec_precision_classifier", "rec_recall_classifier"], 1.0)
    # Other real images (train) against noise; reconstructions that are all zeros.
    cfg = EvaluateConfig(num_images=300, batch_size=128)
    real = evaluate_model(Double(32, bank=load_train_split(tiny_shards, 32, 300)), extractor,
                          tiny_shards, cfg, ["kid", "pr"])
    noise = evaluate_model(Double(32, rec="zeros"), extractor, tiny_shards, cfg, KID_PR)
    assert set(noise) == KID_PR_KEYS
    for rec in ("", "rec_"):
        assert noise[f"{rec}kid_classifier"] > 20 * abs(real["kid_classifier"])
        assert noise[f"{rec}kid_classifier"] > 5 * noise[f"{rec}kid_std_classifier"]
    assert real["precision_classifier"] > 0.7 and real["recall_classifier"] > 0.5
    # Noise covers none of the test images; nor does one point (all zeros: balls of radius 0).
    assert noise["recall_classifier"] == noise["rec_recall_classifier"] == 0.0


def test_kid_and_pr_read_test_features_when_the_reference_is_given(extractor, tiny_shards):
    ref = compute_reference(extractor, tiny_shards, 32, batch_size=128)
    cfg = EvaluateConfig(num_images=150, batch_size=64)
    model = Double(32, gen="z")
    alone = evaluate_model(model, extractor, tiny_shards, cfg, ["fid"], reference=ref)
    both = evaluate_model(model, extractor, tiny_shards, cfg, ["fid", "kid", "pr"], reference=ref)
    computed = evaluate_model(model, extractor, tiny_shards, cfg, ["kid", "pr", "fid"])
    assert both["fid_classifier"] == alone["fid_classifier"]   # FID's number does not move
    assert both["kid_classifier"] > 0
    for key in ("kid_classifier", "precision_classifier", "recall_classifier"):
        assert both[key] == pytest.approx(computed[key], rel=1e-6)
    # The protocol beside each result: sample sizes, subsets, k, seed.
    results = {r.metric: r for r in run_metrics(model, extractor, tiny_shards, cfg, ["kid", "pr"])}
    defaults = {"reference": "test", "resize": "legacy"}
    assert results["kid"].protocol == {"n": 150, "n_ref": 600, "subsets": 100, "subset_size": 150,
                                       "subset_seed": 0, "seed": 0,
                                       "kernel": "(x.y/d + 1)^3", **defaults}
    assert results["pr"].protocol == {"n": 150, "n_ref": 600, "k": 3, "seed": 0, **defaults}
    assert results["kid"].values["kid_classifier"] == both["kid_classifier"]


def test_reconstruction_noise_is_seeded_whatever_the_process_drew_before(extractor, tiny_shards):
    cfg = EvaluateConfig(num_images=200, batch_size=64, seed=5)
    runs = []
    for before in (1, 2):
        torch.manual_seed(before)  # another history of the global RNG
        runs.append(evaluate_model(Double(32, rec="noisy"), extractor, tiny_shards, cfg,
                                   ["rec_fid", "mse"]))
    assert runs[0] == runs[1] and runs[0]["mse"] > 0.005
    other = evaluate_model(Double(32, rec="noisy"), extractor, tiny_shards,
                           EvaluateConfig(num_images=200, batch_size=64, seed=6), ["mse"])
    assert other["mse"] != runs[0]["mse"]  # the seed does reach the noise


def test_samples_do_not_depend_on_batch_size(extractor, tiny_shards):
    def fid(batch_size, seed=0):
        return evaluate_model(Double(32, gen="z"), extractor, tiny_shards,
                              EvaluateConfig(num_images=100, batch_size=batch_size, seed=seed),
                              ["fid"])["fid_classifier"]
    # Same samples; only float32 rounding inside the extractor depends on the batch shape.
    assert fid(64) == pytest.approx(fid(30), rel=1e-6)
    assert fid(64) != fid(64, seed=1)


def noisy_style_model(resolution: int = 16) -> torch.nn.Module:
    """A real StyleALAE whose per-pixel noise matters: a fresh one's noise weights are 0 (the
    reference's init), a trained one's are not."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="style", latent=16, mapping_layers=2), 1, resolution)
    for m in model.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(1.0)
    return model.eval().requires_grad_(False)


def test_style_alae_numbers_do_not_depend_on_batch_size(extractor, tiny_shards):
    model = noisy_style_model()
    quiet = copy.deepcopy(model)
    for m in quiet.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.zero_()

    def run(batch_size, model=model):
        return evaluate_model(model, extractor, tiny_shards,
                              EvaluateConfig(num_images=120, batch_size=batch_size, seed=0),
                              ["fid", "rec_fid", "mse"])
    m = run(64)
    for batch_size in (25, 120):
        # Same images; only float32 rounding inside the networks depends on the batch shape.
        assert run(batch_size) == pytest.approx(m, rel=1e-6)
    # Noise moves every number 100x more than that (so the check above can fail).
    assert all(abs(v / m[k] - 1) > 1e-4 for k, v in run(64, quiet).items())


def test_registry_and_provenance(extractor, tiny_shards):
    assert {"fid", "kid", "pr", "rec_fid", "rec_kid", "rec_pr", "fid_floor", "mse", "ppl_full",
            "ppl_end", "probe"} <= set(metric_names())
    assert resolve_names(["kid", "ppl", "ppl_end", "kid"]) == ["kid", "ppl_full", "ppl_end"]
    assert set(metric_names()) - set(default_metrics()) == {"rec_kid", "rec_pr"}
    with pytest.raises(ValueError):
        register("fid")(lambda ev: {})
    with pytest.raises(ValueError, match="uses"):
        register("fid2", uses={"generated_images"})(lambda ev: {})
    with pytest.raises(ValueError, match="unknown"):
        evaluate_model(Double(32), extractor, tiny_shards, EvaluateConfig(), ["nope"])
    assert provenance(extractor) == {"metrics_protocol": str(METRICS_PROTOCOL),
                                     "features": "classifier",
                                     "featurenet_sha256": extractor.sha256}


def test_every_metric_on_a_tiny_mlp_alae(extractor, tiny_shards):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="mlp", latent=8, mapping_layers=2, hidden=32), 1, 32)
    model.eval().requires_grad_(False)
    cfg = EvaluateConfig(num_images=100, batch_size=100, ppl_samples=40, probe_train=200)
    m = evaluate_model(model, extractor, tiny_shards, cfg)
    assert set(m) == ALL_KEYS and all(np.isfinite(v) for v in m.values())
    assert 0 <= m["probe_acc"] <= 1 and 0.5 < m["probe_acc_pixels"] <= 1
    assert m["ppl_full_classifier"] > 0 and m["ppl_end_classifier"] > 0


def test_lpips_chosen_without_its_weights_stops_in_one_line(extractor, tiny_shards, monkeypatch,
                                                             tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))   # whether or not lpips is installed
    cfg = EvaluateConfig(num_images=100, batch_size=100, ppl_samples=40, ppl_distance="lpips")
    with pytest.raises(UserError, match="evaluate.ppl_distance lpips") as e:
        evaluate_model(Double(32), extractor, tiny_shards, cfg, ["fid", "ppl_full"])
    assert "\n" not in str(e.value)


def test_evaluate_config_validation():
    assert parse_params({"evaluate": {"features": "inception"}}).evaluate.features == "inception"
    assert parse_params({}).evaluate.ppl_distance == "classifier"
    assert parse_params({"evaluate": {"ppl_distance": "lpips"}}).evaluate.ppl_distance == "lpips"
    for bad, key in [({"features": "vgg"}, "evaluate.features"),
                     ({"ppl_samples": 1}, "evaluate.ppl_samples"),
                     ({"ppl_distance": "vgg"}, "evaluate.ppl_distance"),
                     ({"features": "inception", "resize": "bicubic"}, "evaluate.resize"),
                     ({"resize": "clean"}, "evaluate.resize"),   # the classifier space
                     ({"reference": "val"}, "evaluate.reference"),
                     ({"rec_distance": "mse"}, "evaluate.rec_distance"),
                     ({"ppl_crop": "eyes"}, "evaluate.ppl_crop"),
                     ({"seed": -1}, "evaluate.seed"),
                     ({"probe_train": 0}, "evaluate.probe_train"),
                     ({"device": "tpu"}, "evaluate.device")]:
        with pytest.raises(ConfigError, match=re.escape(key)) as e:
            parse_params({"evaluate": bad})
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------- reference statistics

def test_reference_file_is_reused(extractor, tiny_shards, tmp_path):
    path = tmp_path / "refstats_classifier.npz"
    written = write_reference(path, extractor, tiny_shards, batch_size=128)
    assert written.n == read_manifest(tiny_shards)["counts"]["test"]
    ref = load_reference(path, extractor, tiny_shards, 32)
    np.testing.assert_allclose(ref.mean(), written.mean(), rtol=1e-12)
    cfg = EvaluateConfig(num_images=100, batch_size=64)
    model = Double(32, gen="z")
    computed = evaluate_model(model, extractor, tiny_shards, cfg, ["fid"])
    reused = evaluate_model(model, extractor, tiny_shards, cfg, ["fid"], reference=ref)
    assert reused["fid_classifier"] == pytest.approx(computed["fid_classifier"], rel=1e-6)
    # batch size: rounding only
    again = compute_reference(extractor, tiny_shards, 32, batch_size=37)
    np.testing.assert_allclose(again.cov(), written.cov(), rtol=1e-5, atol=1e-7)
    # another resolution: not this file's business, the caller computes it
    assert load_reference(path, extractor, tiny_shards, 16) is None


def test_reference_file_from_elsewhere_is_refused(extractor, tiny_shards, tmp_path):
    stats = stats_of(rng.normal(size=(20, extractor.dim)))
    path = tmp_path / "r.npz"
    save_stats(path, stats, features="classifier", resolution=32, dataset="0" * 64,
               featurenet_sha256=extractor.sha256)
    with pytest.raises(UserError, match="other test shards"):
        load_reference(path, extractor, tiny_shards, 32)
    save_stats(path, stats, features="classifier", featurenet_sha256="f" * 64)
    with pytest.raises(UserError, match="featurenet_sha256"):
        load_reference(path, extractor, tiny_shards, 32)
    save_stats(path, stats, features="inception")
    with pytest.raises(UserError, match="inception feature space"):
        load_reference(path, extractor, tiny_shards, 32)


# ---------------------------------------------------------------- alae fid (classifier space)

@pytest.fixture(scope="module")
def featurenet_file(extractor, tmp_path_factory):
    path = tmp_path_factory.mktemp("fnfile") / "featurenet.pt"
    save_featurenet(extractor.net, path)
    return path


def write_folder(folder, images) -> None:
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")


def test_alae_fid_classifier(tiny_shards, featurenet_file, tmp_path):
    x = load_test_split(tiny_shards, 32)[:60].add(1).mul(127.5).round().byte()[:, 0].numpy()
    write_folder(tmp_path / "a", x[:30])
    write_folder(tmp_path / "b", x[30:])
    runner = CliRunner()

    def fid(*args):
        out = runner.invoke(cli, ["fid", *map(str, args), "--featurenet", str(featurenet_file),
                                  "--device", "cpu", "--batch-size", "7"])
        assert out.exit_code == 0, out.output
        return float(re.search(r"FID:\s+(\S+)", out.output).group(1)), out.output

    same, text = fid(tmp_path / "a", tmp_path / "a")
    assert abs(same) < 1e-6 and "classifier features, featurenet sha256" in text
    ab, _ = fid(tmp_path / "a", tmp_path / "b")
    assert ab > 1e-3
    # The same numbers as the library on the same pixels.
    ex = load_extractor("classifier", featurenet_file)
    lib = frechet_distance(stats_of(ex(torch.from_numpy(x[:30, None]).float() / 127.5 - 1)),
                           stats_of(ex(torch.from_numpy(x[30:, None]).float() / 127.5 - 1)))
    assert ab == pytest.approx(lib, rel=1e-4)
    out = runner.invoke(cli, ["fid", "--save-stats", str(tmp_path / "a"), str(tmp_path / "a.npz"),
                              "--featurenet", str(featurenet_file), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert fid(tmp_path / "a.npz", tmp_path / "b")[0] == pytest.approx(ab, rel=1e-6)
    missing = runner.invoke(cli, ["fid", str(tmp_path / "nope"), str(tmp_path / "b")])
    assert missing.exit_code == 1 and "no such folder or file" in missing.output


# ---------------------------------------------------------------- alae metrics (any model file)

def test_alae_metrics_appends_one_line_per_metric(tiny_shards, featurenet_file, tmp_path):
    params = parse_params({"model": {"kind": "mlp", "latent": 8, "mapping_layers": 2,
                                     "hidden": 32}})
    torch.manual_seed(0)
    save_model(tmp_path / "m.pt", build_model(params.model, 1, 32), params, meta={})
    out = tmp_path / "results.jsonl"
    runner = CliRunner()
    args = ["metrics", "--model", str(tmp_path / "m.pt"), "--data", str(tiny_shards),
            "--featurenet", str(featurenet_file), "--num-images", "120", "--batch-size", "60",
            "--ppl-samples", "20", "--device", "cpu", "--out", str(out)]
    done = runner.invoke(cli, [*args, "--metrics", "fid,kid,pr,ppl"])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["metric"] for r in lines] == ["fid", "kid", "pr", "ppl_full", "ppl_end"]
    kid = lines[1]
    assert set(kid["values"]) == {"kid_classifier", "kid_std_classifier"}
    assert kid["values"]["kid_classifier"] > 0    # an untrained model
    protocol = kid["protocol"]
    assert protocol["n"] == 120 and protocol["subset_size"] == 120 and protocol["seed"] == 0
    assert protocol["features"] == "classifier" and protocol["metrics_protocol"] == METRICS_PROTOCOL
    assert protocol["featurenet_sha256"] == ClassifierFeatures.from_file(featurenet_file).sha256
    assert len(protocol["model_sha256"]) == 64 and len(protocol["dataset"]) == 64
    assert lines[3]["protocol"]["distance"] == "classifier"
    # The same numbers as the library's.
    ex = load_extractor("classifier", featurenet_file)
    cfg = EvaluateConfig(num_images=120, batch_size=60, ppl_samples=20)
    lib = evaluate_model(load_model(tmp_path / "m.pt")[0], ex, tiny_shards, cfg, ["kid", "fid"])
    assert kid["values"]["kid_classifier"] == pytest.approx(lib["kid_classifier"], rel=1e-6)
    assert lines[0]["values"]["fid_classifier"] == pytest.approx(lib["fid_classifier"], rel=1e-6)
    # A second run appends; an unknown name is refused in one line, before any work.
    again = runner.invoke(cli, [*args, "--metrics", "mse"])
    assert again.exit_code == 0, again.output
    assert len(out.read_text().splitlines()) == 6
    bad = runner.invoke(cli, [*args, "--metrics", "fid,fdi"])
    assert bad.exit_code == 1
    error = bad.stderr.strip().splitlines()
    assert len(error) == 1 and "unknown metric(s) fdi; known: fid, kid, pr," in error[0]
    assert len(out.read_text().splitlines()) == 6


def test_the_stages_start_without_the_libraries_only_some_metrics_need():
    """torchvision (through pytorch-fid) and scikit-learn add ~2 s each to the start of every
    process that imports them; only Inception features, the Fréchet distance's sqrtm and the
    probe need them, so the stages' and the command's modules import them when called (`alae
    fid`'s folder module keeps pytorch-fid's own image extensions)."""
    import subprocess
    import sys

    from pipeline_helpers import ROOT

    code = ("import sys, runpy\n"
            "import alae.cli, alae.metrics, alae.metrics.features\n"
            "for stage in ('evaluate', 'refstats', 'figures', 'featurenet', 'train'):\n"
            "    runpy.run_path(f'stages/{stage}.py', run_name='not_main')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torchvision', 'sklearn', 'pytorch_fid'}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
