"""The benchmark's measuring parts (not its numbers): FLOP counting, and one level's side-by-side
rows on a tiny StyleALAE."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from alae.config import parse_params
from alae.cost import FlopCount
from benchmarks.__main__ import level_speeds

TINY = {"data": {"resolution": 8},
        "model": {"kind": "style", "latent": 8, "mapping_layers": 2, "start_channels": 4,
                  "max_channels": 8},
        "train": {"batch_size": 4}}


def test_flop_count_of_a_convolution_forward_and_backward():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    counter = FlopCount()
    with counter:
        y = F.conv2d(x, w, padding=1)
    forward = 2 * 2 * 5 * 3 * 9 * 8 * 8  # 2 FLOPs per multiply-add, per output element
    assert counter.flops == forward
    with counter:
        y.sum().backward()
    assert counter.flops == 3 * forward  # gradients of the input and of the weight


def test_level_speeds_gives_every_variant_with_ratios_and_fewer_flops_where_expected():
    params = parse_params(TINY)
    variants = {"plain": {}, "fused_resample": {"fused_resample": True},
                "lazy_r1": {"r1_interval": 4}}
    rows = {r["variant"]: r for r in level_speeds(params, 1, variants, seconds=0.0, rounds=1)}
    assert rows.keys() == variants.keys()
    assert rows["plain"]["ratio_plain_vs_plain"] == 1.0
    for name, row in rows.items():
        assert row["img_per_s"] > 0 and row["gflop_per_s"] > 0, row
        speed, plain = row["img_per_s"], rows["plain"]["img_per_s"]
        ratio = speed / plain  # of the rates as rounded (to 0.01 img/s): the ratio was taken of
        # the unrounded ones and rounded to 0.001, so the two differ by at most both roundings
        slack = ratio * (0.005 / speed + 0.005 / plain) + 0.0005
        assert abs(row[f"ratio_{name}_vs_plain"] - ratio) <= slack * 1.01, (name, row, plain)
    plain, fused = rows["plain"]["gflop_per_img"], rows["fused_resample"]["gflop_per_img"]
    assert fused < 0.9 * plain  # G's up-conv and E's down-conv at 8x8: 4/9 of their work
    assert rows["lazy_r1"]["gflop_per_img"] < plain  # R1 on one step in four


def test_explorer_speed_times_every_action_of_a_model_at_its_top_level():
    from alae.nn.alae import Level, build_model
    from benchmarks.explorer_speed import time_actions

    params = parse_params(TINY)
    torch.manual_seed(0)
    model = build_model(params.model, 1, 8)
    model.set_level(Level(model.num_levels - 1, 1.0))
    times = time_actions(model.eval(), repeats=1)
    assert times.keys() == {"reconstruct", "edit", "mix", "sample"}
    assert all(0 < t < 60 for t in times.values()), times


def test_loader_measure_counts_the_workers_cpu_and_closes_them(tiny_shards):
    import multiprocessing

    from benchmarks.loader_speed import measure

    row = measure(tiny_shards, 32, 16, workers=2, images=64, shuffle_buffer=100)
    assert row["processes"] == 3 and row["images"] >= 64  # the training process and 2 workers
    assert row["cpu_seconds"] >= 0.5  # never a 0-tick window (CI divided by zero once)
    assert row["pss_all_mib"] > 100   # torch alone is more than that
    assert row["img_per_s"] > 0 and 0 < row["cpu_seconds"] and row["img_per_cpu_s"] > 0
    assert not multiprocessing.active_children()


def test_eval_memory_runs_the_evaluate_stage_and_reports_its_peak(tiny_shards):
    from click.testing import CliRunner

    from benchmarks.eval_memory import main

    out = CliRunner().invoke(main, ["--shards", str(tiny_shards), "--preset", "mnist",
                                    "--widths", "2,8", "--num-images", "64", "--batch-size", "32"])
    assert out.exit_code == 0, out.output
    line = out.output.strip().splitlines()[-1]
    assert "mnist architecture, channels 2 -> 8, num_images 64, batch 32" in line, line
    assert int(line.rsplit("peak Pss ", 1)[1].split()[0]) > 100   # torch alone is more


def test_gpu_check_without_cuda_says_so_exits_0_and_runs_nothing(tmp_path):
    import subprocess
    import sys

    from pipeline_helpers import ROOT

    if torch.cuda.is_available():
        import pytest
        pytest.skip("this machine has CUDA: make gpu-check runs the real thing")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out",
                          str(tmp_path / "gpu.json")], capture_output=True, text=True)
    assert out.returncode == 0 and "needs a CUDA device" in out.stdout, out
    assert not (tmp_path / "gpu.json").exists()


def test_evaluate_versions_gives_the_old_code_a_file_it_reads_of_the_same_model(tmp_path):
    import click
    import pytest
    import yaml

    from alae.checkpoint import save_model
    from alae.nn import build_model
    from benchmarks.evaluate_versions import model_for

    params = parse_params(TINY)
    model = build_model(params.model, 1, 8)
    path = tmp_path / "alae.pt"
    save_model(path, model, params, {}, training={"images_seen": 1})
    old = tmp_path / "before"
    (old / "alae").mkdir(parents=True)
    (old / "alae" / "checkpoint.py").write_text("FORMAT = 'x'\nVERSION = 2\n")
    old_params = {"model": params.to_dict()["model"], "seed": 0}   # fewer keys, as old code had
    (old / "params.yaml").write_text(yaml.safe_dump(old_params))
    ckpt = torch.load(model_for(old, path, tmp_path), weights_only=False)
    assert ckpt["version"] == 2 and ckpt["params"] == old_params and "training" not in ckpt
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ckpt["ema"].items())
    old_params["model"]["latent"] = 16   # another model: timing it would compare nothing
    (old / "params.yaml").write_text(yaml.safe_dump(old_params))
    with pytest.raises(click.ClickException, match="model section differs"):
        model_for(old, path, tmp_path)
