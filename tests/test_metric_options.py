"""The protocol options of the evaluate section (alae/config.py): the reference split
(`evaluate.reference`), the reconstruction distance (`evaluate.rec_distance`), PPL's face crop
(`evaluate.ppl_crop`) and Inception's resize (`evaluate.resize`; its pixels are checked against
clean-fid in tests/test_inception.py): each names itself in the keys when not the default, is in
its metric's protocol, is validated in one line, and reaches `alae metrics`. Answers by hand where
they exist: replaying a split, identity and all-zero reconstructions."""
from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from alae.checkpoint import save_model
from alae.cli import main as cli
from alae.config import EvaluateConfig, parse_params
from alae.data import read_manifest
from alae.errors import UserError
from alae.featurenet import save_featurenet
from alae.metrics import evaluate_model, run_metrics
from alae.metrics.features import ClassifierFeatures
from alae.metrics.ppl import FeatureDistance
from alae.metrics.refstats import load_reference, write_reference
from alae.nn import build_model
from metric_doubles import Double, load_test_split, load_train_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def extractor(tiny_classifier):
    return tiny_classifier


# ---------------------------------------------------------------- evaluate.reference

def test_train_reference_compares_with_the_train_split(extractor, tiny_shards):
    counts = read_manifest(tiny_shards)["counts"]
    n = counts["train"]
    assert n == counts["test"] == 600   # equal splits: the two data floors are one FID
    train_ref = EvaluateConfig(num_images=n, batch_size=128, reference="train")
    # Samples that are the train split: at the train reference they score 0, and cover it.
    replay = evaluate_model(Double(32, bank=load_train_split(tiny_shards, 32, n)), extractor,
                            tiny_shards, train_ref, ["fid", "pr", "fid_floor"])
    assert set(replay) == {"fid_classifier_trainref", "precision_classifier_trainref",
                           "recall_classifier_trainref", "fid_floor_classifier_trainref"}
    assert abs(replay["fid_classifier_trainref"]) < 1e-6
    assert replay["precision_classifier_trainref"] == replay["recall_classifier_trainref"] == 1.0
    # The floor is then the test images against the train split: with all 600 of each, the
    # default floor (train images against the test split) mirrored, and FID is symmetric.
    test_ref = evaluate_model(Double(32), extractor, tiny_shards,
                              EvaluateConfig(num_images=n, batch_size=128), ["fid_floor"])
    assert replay["fid_floor_classifier_trainref"] == pytest.approx(
        test_ref["fid_floor_classifier"], rel=1e-6)
    # The protocol says which split, and how many images, the numbers were compared with.
    results = {r.metric: r.protocol for r in run_metrics(
        Double(32, gen="z"), extractor, tiny_shards, train_ref, ["kid", "fid_floor"])}
    assert results["kid"]["reference"] == "train" and results["kid"]["n_ref"] == n
    assert results["fid_floor"]["floor_split"] == "test"


def test_train_reference_statistics_from_the_refstats_file(extractor, tiny_shards, tmp_path):
    cfg = EvaluateConfig(num_images=100, batch_size=64, reference="train")
    model = Double(32, gen="z")
    path = tmp_path / "refstats_classifier.npz"
    write_reference(path, extractor, tiny_shards, batch_size=128, split="train")
    ref = load_reference(path, extractor, tiny_shards, 32, "train")
    reused = evaluate_model(model, extractor, tiny_shards, cfg, ["fid"], reference=ref)
    computed = evaluate_model(model, extractor, tiny_shards, cfg, ["fid"])
    assert reused["fid_classifier_trainref"] == pytest.approx(computed["fid_classifier_trainref"],
                                                              rel=1e-6)
    # A file of one split never stands in for the other, either way.
    with pytest.raises(UserError, match="train split, not the test split") as e:
        load_reference(path, extractor, tiny_shards, 32)
    assert "\n" not in str(e.value)
    write_reference(path, extractor, tiny_shards, batch_size=128)
    with pytest.raises(UserError, match="test split, not the train split"):
        load_reference(path, extractor, tiny_shards, 32, "train")


def test_refstats_stage_writes_the_chosen_split(extractor, tiny_shards, tmp_path):
    featurenet, params, out = tmp_path / "featurenet.pt", tmp_path / "params.yaml", \
        tmp_path / "refstats_classifier.npz"
    save_featurenet(extractor.net, featurenet)
    params.write_text("evaluate: {reference: train, device: cpu}\n")
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "refstats.py"), "--params",
                           str(params), "--featurenet", str(featurenet), "--shards",
                           str(tiny_shards), "--out", str(out), "--batch-size", "128"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "600 train images in the classifier space" in done.stdout
    extractor = ClassifierFeatures.from_file(featurenet)   # this file's sha256
    ref = load_reference(out, extractor, tiny_shards, 32, "train")
    by_hand = extractor(load_train_split(tiny_shards, 32, 600)).double()
    torch.testing.assert_close(torch.from_numpy(ref.mean()), by_hand.mean(0), rtol=1e-6,
                               atol=1e-6)


# ---------------------------------------------------------------- evaluate.rec_distance

def test_rec_distance_by_hand(extractor, tiny_shards):
    cfg = EvaluateConfig(num_images=150, batch_size=64)
    same = evaluate_model(Double(32), extractor, tiny_shards, cfg, ["rec_distance"])
    assert same == {"rec_distance_classifier": 0.0}
    zeros = evaluate_model(Double(32, rec="zeros"), extractor, tiny_shards, cfg,
                           ["rec_distance", "fid"])
    x = load_test_split(tiny_shards, 32)[:150]
    by_hand = FeatureDistance.of_features(extractor(x), extractor(torch.zeros_like(x))).mean()
    assert zeros["rec_distance_classifier"] == pytest.approx(by_hand.item(), rel=1e-5)
    # The features the test pass has anyway (reused in the classifier space) or the distance's
    # own pass (another extractor object): one number.
    own = FeatureDistance(copy.deepcopy(extractor))
    apart = evaluate_model(Double(32, rec="zeros"), extractor, tiny_shards, cfg,
                           ["rec_distance", "fid"], rec_distance=own)
    assert apart["rec_distance_classifier"] == pytest.approx(zeros["rec_distance_classifier"],
                                                             rel=1e-5)


def test_rec_distance_lpips_without_its_weights_stops_in_one_line(extractor, tiny_shards,
                                                                   monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))   # an empty hub cache
    cfg = EvaluateConfig(num_images=100, batch_size=100, rec_distance="lpips")
    with pytest.raises(UserError, match="evaluate.rec_distance lpips") as e:
        evaluate_model(Double(32), extractor, tiny_shards, cfg, ["rec_distance"])
    assert "\n" not in str(e.value) and "evaluate.rec_distance: classifier" in str(e.value)


# ---------------------------------------------------------------- evaluate.ppl_crop

def test_ppl_face_crop_is_in_the_key_and_the_protocol(extractor, tiny_shards):
    torch.manual_seed(0)
    model = build_model(parse_params({"model": {"kind": "mlp", "latent": 8, "mapping_layers": 2,
                                                "hidden": 32}}).model, 1, 32).eval()
    cfg = EvaluateConfig(num_images=50, batch_size=50, ppl_samples=20)
    whole = {r.metric: r for r in run_metrics(model, extractor, tiny_shards, cfg, ["ppl_full"])}
    face = {r.metric: r for r in run_metrics(model, extractor, tiny_shards,
                                             dataclasses.replace(cfg, ppl_crop="face"),
                                             ["ppl_full"])}
    assert set(whole["ppl_full"].values) == {"ppl_full_classifier"}
    assert set(face["ppl_full"].values) == {"ppl_full_classifier_facecrop"}
    assert whole["ppl_full"].protocol["crop"] == "none"
    assert face["ppl_full"].protocol["crop"] == "face"
    assert face["ppl_full"].values["ppl_full_classifier_facecrop"] != pytest.approx(
        whole["ppl_full"].values["ppl_full_classifier"], rel=1e-3)


# ---------------------------------------------------------------- params and `alae metrics`

def test_option_defaults_and_choices():   # bad values: test_metrics' validation test
    cfg = parse_params({}).evaluate
    assert (cfg.resize, cfg.reference, cfg.rec_distance, cfg.ppl_crop) == \
        ("legacy", "test", "classifier", "none")
    ok = parse_params({"evaluate": {"features": "inception", "resize": "clean",
                                    "reference": "train", "rec_distance": "lpips",
                                    "ppl_crop": "face"}}).evaluate
    assert (ok.resize, ok.reference, ok.rec_distance, ok.ppl_crop) == \
        ("clean", "train", "lpips", "face")


def test_alae_metrics_takes_the_options(extractor, tiny_shards, tmp_path):
    featurenet = tmp_path / "featurenet.pt"
    save_featurenet(extractor.net, featurenet)
    params = parse_params({"model": {"kind": "mlp", "latent": 8, "mapping_layers": 2,
                                     "hidden": 32}})
    torch.manual_seed(0)
    save_model(tmp_path / "m.pt", build_model(params.model, 1, 32), params, meta={})
    out = tmp_path / "results.jsonl"
    args = ["metrics", "--model", str(tmp_path / "m.pt"), "--data", str(tiny_shards),
            "--featurenet", str(featurenet), "--num-images", "100", "--batch-size", "50",
            "--ppl-samples", "20", "--device", "cpu", "--out", str(out)]
    runner = CliRunner()
    done = runner.invoke(cli, [*args, "--metrics", "fid,rec_distance,ppl_full",
                               "--reference", "train", "--ppl-crop", "face"])
    assert done.exit_code == 0, done.output
    lines = {r["metric"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(lines["fid"]["values"]) == {"fid_classifier_trainref"}
    assert lines["fid"]["protocol"]["reference"] == "train"
    assert len(lines["fid"]["protocol"]["dataset_train"]) == 64
    assert set(lines["rec_distance"]["values"]) == {"rec_distance_classifier"}
    assert set(lines["ppl_full"]["values"]) == {"ppl_full_classifier_facecrop"}
    # The classifier space has no Inception resize: one line naming the option, before any work.
    bad = runner.invoke(cli, [*args, "--metrics", "fid", "--resize", "clean"])
    assert bad.exit_code == 1
    error = bad.stderr.strip().splitlines()
    assert len(error) == 1 and "--resize" in error[0] and "--features" in error[0]
    assert len(out.read_text().splitlines()) == 3
