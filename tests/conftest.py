"""Shared pytest fixtures: real data where the machine has it, skipped with a hint where not."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from alae.config import DEFAULT_FASHION_MNIST, DataConfig


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    """The Debian Fashion-MNIST folder (four gzipped IDX files)."""
    path = Path(DEFAULT_FASHION_MNIST)
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist "
                    "(make test installs it)")
    return path


@pytest.fixture(scope="session")
def tiny_shards(fashion_mnist, tmp_path_factory) -> Path:
    """Real Fashion-MNIST shards, 600 images per split in shards of 250 (250, 250, 100)."""
    from alae.data import write_shards

    out = tmp_path_factory.mktemp("tiny") / "shards"
    write_shards(DataConfig(path=str(fashion_mnist), limit=600, shard_size=250), out)
    return out


@pytest.fixture(scope="session")
def shards8(fashion_mnist, tmp_path_factory) -> Path:
    """Real Fashion-MNIST at 8x8, 2000 images per split in shards of 1000: fast training."""
    from alae.data import write_shards

    out = tmp_path_factory.mktemp("s8") / "shards"
    write_shards(DataConfig(path=str(fashion_mnist), resolution=8, limit=2000, shard_size=1000), out)
    return out


@pytest.fixture(scope="session")
def featurenet8(tmp_path_factory) -> Path:
    """An untrained featurenet file for 8x8 images: what the quick FID loads (its numbers mean
    nothing here; the tests that use it check what computing them does to training)."""
    import torch

    from alae.featurenet import Featurenet, save_featurenet

    path = tmp_path_factory.mktemp("featurenet8") / "featurenet.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_featurenet(Featurenet(1, 8, 10, features=16), path)
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tiny_shards, tmp_path_factory):
    """Classifier features of a featurenet trained briefly (2 epochs, 32 features) on
    `tiny_shards`: a real feature space for the metrics' plumbing."""
    from alae.config import FeaturenetConfig
    from alae.featurenet import save_featurenet, train_featurenet
    from alae.metrics.features import ClassifierFeatures

    net, _ = train_featurenet(tiny_shards, FeaturenetConfig(epochs=2, batch_size=32, lr=2e-3,
                                                            features=32), "cpu")
    path = tmp_path_factory.mktemp("fn") / "featurenet.pt"
    save_featurenet(net, path)
    return ClassifierFeatures.from_file(path)


@pytest.fixture(autouse=True, scope="session")
def _private_mlflow_store(tmp_path_factory):
    """Stages run by tests record into a throw-away store, never the checkout's mlflow.db."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    yield
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="session")
def reproduced_repo(tmp_path_factory, fashion_mnist) -> Path:
    """A tiny pipeline repository after `dvc repro`, committing what DVC's hint says (`dvc.lock`
    and the `.gitignore`s): copy it (`copy_repo`) before changing it."""
    from pipeline_helpers import init_pipeline_repo, run

    repo = init_pipeline_repo(tmp_path_factory.mktemp("reproduced") / "repo")
    run(["dvc", "repro"], repo)
    run(["git", "add", "dvc.lock", "data/.gitignore", "models/.gitignore"], repo)
    run(["git", "commit", "-q", "-m", "dvc repro"], repo)
    return repo
