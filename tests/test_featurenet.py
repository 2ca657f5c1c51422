"""The featurenet: shapes, the file format (round trip, hash, refusals) and real training."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from alae.config import ConfigError, FeaturenetConfig, parse_params
from alae.errors import CheckpointError, DataError
from alae.featurenet import (Featurenet, augment, load_featurenet, nt_xent, save_featurenet,
                             save_skipped, train_featurenet)

ROOT = Path(__file__).resolve().parents[1]
QUICK = FeaturenetConfig(seed=3, epochs=2, batch_size=32, lr=2e-3, features=32)


@pytest.mark.parametrize("channels,resolution", [(1, 16), (1, 32), (3, 32), (3, 64)])
def test_shapes_at_any_resolution(channels, resolution):
    net = Featurenet(channels, resolution, num_classes=7, features=24).eval()
    x = torch.rand(5, channels, resolution, resolution) * 2 - 1
    assert net.features(x).shape == (5, 24)
    assert net(x).shape == (5, 7)


@pytest.fixture(scope="module")
def trained(tiny_shards):
    return train_featurenet(tiny_shards, QUICK, "cpu")


def test_short_training_beats_chance(trained):
    net, acc = trained
    # 10 balanced classes: chance is 0.1; two epochs over 600 real images reach well above 0.5.
    assert acc > 0.5, acc
    assert net.test_accuracy == acc and not net.training
    # a classifier's file records no `kind` (byte-identical to files from before the choice)
    assert net.train_params == {k: v for k, v in dataclasses.asdict(QUICK).items() if k != "kind"}


def test_training_is_deterministic(trained, tiny_shards):
    again, acc = train_featurenet(tiny_shards, QUICK, "cpu")
    assert acc == trained[1]
    for (k, a), b in zip(trained[0].state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_save_load_round_trip(trained, tmp_path):
    net, acc = trained
    path = tmp_path / "sub" / "featurenet.pt"
    save_featurenet(net, path)
    assert [p.name for p in path.parent.iterdir()] == ["featurenet.pt"]  # no temp file left
    torch.load(path, weights_only=True)  # the project's checkpoint rule
    loaded, sha = load_featurenet(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.test_accuracy == acc and loaded.label_names == net.label_names
    assert loaded.train_params == net.train_params
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.features(x), net.features(x))


def test_files_that_are_not_ours(tmp_path):
    missing = tmp_path / "missing.pt"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a zip file")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    for path in (missing, junk, foreign):
        with pytest.raises(CheckpointError) as e:
            load_featurenet(path)
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg


def test_placeholder_points_at_selfsup_and_inception(tmp_path):
    path = tmp_path / "featurenet.pt"
    save_skipped(path)
    with pytest.raises(CheckpointError, match="selfsup.*evaluate.features: inception"):
        load_featurenet(path)


@pytest.fixture
def unlabelled(tiny_shards, tmp_path) -> Path:
    out = tmp_path / "unlabelled"
    shutil.copytree(tiny_shards, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["label_names"] = None
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_unlabelled_data_is_refused(unlabelled):
    with pytest.raises(DataError, match="no labels.*inception"):
        train_featurenet(unlabelled, QUICK, "cpu")


def _stage():
    spec = importlib.util.spec_from_file_location("stage_featurenet", ROOT / "stages/featurenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _params(tmp_path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text("featurenet: {epochs: 1, batch_size: 64, features: 16}\n")
    return p


def test_stage_writes_model_and_metrics(tiny_shards, tmp_path):
    out, metrics = tmp_path / "models/featurenet.pt", tmp_path / "metrics/featurenet.json"
    result = CliRunner().invoke(_stage(), ["--params", str(_params(tmp_path)), "--shards",
                                           str(tiny_shards), "--out", str(out),
                                           "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    written = json.loads(metrics.read_text())
    assert set(written) == {"kind", "accuracy", "sha256"} and written["kind"] == "classifier"
    assert written["sha256"] == load_featurenet(out)[1]
    assert 0.1 < written["accuracy"] <= 1


def test_stage_on_unlabelled_data(unlabelled, tmp_path):
    out, metrics = tmp_path / "featurenet.pt", tmp_path / "featurenet.json"
    result = CliRunner().invoke(_stage(), ["--params", str(_params(tmp_path)), "--shards",
                                           str(unlabelled), "--out", str(out),
                                           "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    assert json.loads(metrics.read_text()) == {"skipped": "no labels"}
    with pytest.raises(CheckpointError):
        load_featurenet(out)


def test_streaming_path_for_big_datasets(tiny_shards, monkeypatch):
    # Datasets over the in-memory budget stream from the shards each epoch (seeded loader).
    import alae.featurenet as featurenet
    monkeypatch.setattr(featurenet, "CACHE_BYTES", 0)
    cfg = dataclasses.replace(QUICK, epochs=1)
    (a, acc_a), (b, acc_b) = (train_featurenet(tiny_shards, cfg, "cpu") for _ in range(2))
    assert acc_a == acc_b and acc_a > 0.2
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --- the self-supervised featurenet (featurenet.kind: selfsup) -------------------------------
SELFSUP = dataclasses.replace(QUICK, kind="selfsup")


@pytest.fixture(scope="module")
def selfsup(tiny_shards):
    return train_featurenet(tiny_shards, SELFSUP, "cpu")


def test_views_are_seeded_in_range_and_differ_from_the_image():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.allclose(a, x, atol=0.05)
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(2)))


def test_nt_xent_is_low_when_each_view_finds_its_partner():
    z = torch.eye(8)[:4] * 10                       # four orthogonal directions (scale ignored)
    # cosine 1 with the partner, 0 with the other six: -log(e^(1/t) / (e^(1/t) + 6))
    t = 0.5
    expected = -torch.log(torch.exp(torch.tensor(1 / t)) / (torch.exp(torch.tensor(1 / t)) + 6))
    assert torch.isclose(nt_xent(torch.cat([z, z]), t), expected)
    assert nt_xent(torch.cat([z, z]), 0.05) < 1e-6   # each view finds its twin
    assert nt_xent(torch.cat([z, z.roll(1, 0)]), 0.05) > 15   # each partner is another's twin


def test_selfsup_training_is_deterministic_and_scores_by_neighbours(selfsup, tiny_shards):
    net, acc = selfsup
    assert net.kind == "selfsup" and net(torch.zeros(2, 1, 32, 32)).shape == (2, 64)
    # k-NN accuracy of features learnt without labels: above chance (0.1) on real images
    assert 0.3 < acc <= 1, acc
    again, acc_again = train_featurenet(tiny_shards, SELFSUP, "cpu")
    assert acc_again == acc
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 again.state_dict().values()))


def test_selfsup_trains_without_labels(unlabelled):
    net, acc = train_featurenet(unlabelled, dataclasses.replace(SELFSUP, epochs=1), "cpu")
    assert acc is None and net.kind == "selfsup" and net.label_names is None


def test_the_space_is_named_by_the_file_and_a_mismatch_is_one_line(selfsup, trained, tmp_path):
    from alae.metrics.features import load_extractor

    save_featurenet(selfsup[0], tmp_path / "selfsup.pt")
    save_featurenet(trained[0], tmp_path / "classifier.pt")
    assert load_featurenet(tmp_path / "selfsup.pt")[0].kind == "selfsup"
    assert load_extractor("selfsup", tmp_path / "selfsup.pt").name == "selfsup"
    assert load_extractor("classifier", tmp_path / "classifier.pt").name == "classifier"
    for space, file, other in (("classifier", "selfsup.pt", "selfsup"),
                               ("selfsup", "classifier.pt", "classifier")):
        with pytest.raises(CheckpointError) as e:
            load_extractor(space, tmp_path / file)
        assert f"a {other} featurenet" in str(e.value) and "\n" not in str(e.value)


def test_evaluate_features_must_name_the_featurenets_kind():
    parse_params({"featurenet": {"kind": "selfsup"}, "evaluate": {"features": "selfsup"}})
    parse_params({"featurenet": {"kind": "selfsup"}, "evaluate": {"features": "inception"}})
    with pytest.raises(ConfigError, match="evaluate.features.*featurenet.kind"):
        parse_params({"evaluate": {"features": "selfsup"}})
    with pytest.raises(ConfigError, match="featurenet.kind"):
        parse_params({"featurenet": {"kind": "simclr"}})


def test_stage_trains_selfsup_on_unlabelled_data(unlabelled, tmp_path):
    out, metrics = tmp_path / "featurenet.pt", tmp_path / "featurenet.json"
    params = tmp_path / "params.yaml"
    params.write_text("featurenet: {kind: selfsup, epochs: 1, batch_size: 64, features: 16}\n"
                      "evaluate: {features: selfsup}\n")
    result = CliRunner().invoke(_stage(), ["--params", str(params), "--shards", str(unlabelled),
                                           "--out", str(out), "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    written = json.loads(metrics.read_text())
    assert written == {"kind": "selfsup", "sha256": load_featurenet(out)[1]}


def test_metrics_in_the_selfsup_space_carry_its_name(selfsup, tiny_shards, tmp_path):
    from alae.config import EvaluateConfig
    from alae.metrics import evaluate_model
    from alae.metrics.features import load_extractor
    from alae.nn import build_model

    save_featurenet(selfsup[0], tmp_path / "selfsup.pt")
    params = parse_params({"model": {"latent": 8, "mapping_layers": 2, "start_channels": 4,
                                     "max_channels": 8}})
    torch.manual_seed(0)
    model = build_model(params.model, channels=1, resolution=32).eval()
    cfg = EvaluateConfig(num_images=50, batch_size=25, features="selfsup")
    got = evaluate_model(model, load_extractor("selfsup", tmp_path / "selfsup.pt"), tiny_shards,
                         cfg, metrics=["fid", "rec_fid", "kid"])
    assert set(got) == {"fid_selfsup", "rec_fid_selfsup", "kid_selfsup", "kid_std_selfsup"}
    assert all(v == v for v in got.values())  # numbers, not NaN
