"""The bench scripts a GPU session runs blind (bench/gpu.sh and what it calls):
they must parse, start and write their outputs, so that a scarce device call is
not spent finding a typo. Tiny sizes, CPU only."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GPU_SH = REPO / "bench" / "gpu.sh"


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable,
            "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path),
            "GPU_CACHE": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}


def test_gpu_sh_parses_and_refuses_unknown_stages(tmp_path):
    subprocess.run(["bash", "-n", str(GPU_SH)], check=True)
    done = subprocess.run(["bash", str(GPU_SH), "--help"], capture_output=True,
                          text=True, env=_env(tmp_path))
    assert done.returncode == 0 and "STAGE" in done.stdout
    done = subprocess.run(["bash", str(GPU_SH), "nonsense"], capture_output=True,
                          text=True, env=_env(tmp_path))
    assert done.returncode == 2 and "unknown stage" in done.stderr


@pytest.mark.parametrize(
    "script", ["train_bench.py", "kernels_bench.py", "bf16_accuracy.py", "cpu_fair.py",
               "certify_bench.py", "stamp_bench.py", "cpu_variants.py",
               "cpu_profile.py", "cpu_eval.py"])
def test_bench_entry_points_answer_help(script):
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), "--help"],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_gpu_sh_env_stage_writes_its_three_files(tmp_path):
    done = subprocess.run(["bash", str(GPU_SH), "--smoke", "env"], capture_output=True,
                          text=True, env=_env(tmp_path), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu-results.tgz", "gpu.log", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert "- commit: " in summary and "- versions: jax " in summary
    with tarfile.open(out / "gpu-results.tgz") as tar:
        assert "./env.md" in tar.getnames()


def test_balanced_take_spreads_class_sorted_labels():
    sys.path.insert(0, str(REPO))
    from bench.train_bench import balanced_take

    labels = np.repeat(np.arange(10), 50)  # sorted by class, like the parquet
    idx = balanced_take(labels, 200, seed=0)
    assert len(idx) == 200 and len(set(idx.tolist())) == 200
    assert np.bincount(labels[idx], minlength=10).tolist() == [20] * 10
    assert len(set(labels[idx[:10]].tolist())) > 1  # shuffled, not class-sorted
    np.testing.assert_array_equal(idx, balanced_take(labels, 200, seed=0))
    more = balanced_take(labels, 1203, seed=0)  # past the whole set: repeated
    assert len(more) == 1203
    assert np.bincount(labels[more], minlength=10).min() >= 120


def test_kernels_bench_per_layer_writes_json_and_markdown(tmp_path):
    sys.path.insert(0, str(REPO))
    from bench import kernels_bench

    out = tmp_path / "layers.json"
    kernels_bench.main(["--per-layer", "--layers", "conv1", "--replicas", "2",
                        "--batch", "2", "--convs", "im2col,grouped,shared",
                        "--repeats", "1", "--warmup", "0", "--inner", "1",
                        "--out", str(out)])
    rows = json.loads(out.read_text())["per_layer"]
    assert {r["impl"] for r in rows} == {"im2col", "grouped", "shared"}
    assert all(r["fwd_s_median"] > 0 and r["train_s_median"] > 0 for r in rows)
    md = out.with_suffix(".md").read_text()
    assert "| conv1 | shared |" in md and "R = 2" in md


@pytest.mark.slow
def test_gpu_sh_smoke_kernels_and_bf16_stages(tmp_path):
    done = subprocess.run(["bash", str(GPU_SH), "--smoke", "kernels", "bf16"],
                          capture_output=True, text=True, env=_env(tmp_path),
                          cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "- kernels: ok" in summary and "- bf16: ok" in summary


def test_gpu_sh_full_sizes_stop_where_jax_finds_no_gpu(tmp_path):
    # A CPU fallback on the device would spend the whole call at CPU speed.
    env = {k: v for k, v in _env(tmp_path).items() if k not in ("SMOKE", "ALLOW_CPU")}
    done = subprocess.run(["bash", str(GPU_SH), "train"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 3, done.stdout[-3000:]
    assert "not gpu: stopping" in done.stdout
    assert "STOPPED: jax backend cpu" in (tmp_path / "out" / "summary.md").read_text()


def test_stamp_bench_gives_every_variant_the_same_replicas_and_its_stamps():
    sys.path.insert(0, str(REPO))
    from bench.stamp_bench import VARIANTS, setup

    n, labels, keys, variants = setup(replicas=3, steps=2, poisoned=0.25)
    assert n == 256 and labels.shape == (3, 256) and set(variants) == set(VARIANTS)
    assert variants["plain"][1] == ()
    stored, (stamps, _) = variants["clean-label"]
    mask = np.asarray(stamps.mask)
    assert not mask[0].any() and mask[1:].any()  # a clean twin, poisoned replicas
    for name in ("badnets", "blend"):
        np.testing.assert_array_equal(variants[name][1][0].mask, mask)
    rows = np.asarray(stamps.rows)
    assert (rows[~mask] == np.nonzero(~mask)[1]).all()
    assert (rows[mask] >= n).all() and rows.max() < len(stored)


@pytest.mark.slow
def test_cpu_fair_runs_both_paths_and_writes_its_ratios(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "fair.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cpu_fair.py"), "--data", "",
         "--train-images", "200", "--replicas", "1,2", "--rounds", "2",
         "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    assert len(res["rounds"]) == 2 and res["threads"] == 1
    for row in res["rounds"]:
        # 200 images: one full batch and the short one, every path.
        assert row["engine_R1_s"] > 0 and row["engine_R2_s"] > 0 and row["torch_s"] > 0
        assert row["cost_R1"] == pytest.approx(1.0)
    assert "engine R=2" in done.stdout and "x PyTorch" in done.stdout


@pytest.mark.slow
def test_cpu_fair_end_to_end_times_the_sweep_and_the_peer_on_the_same_models(
        tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "e2e.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cpu_fair.py"), "--end-to-end",
         "--data", "sample", "--train-images", "300", "--seeds", "1", "--count", "20",
         "--epochs", "1", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"this", "torch"}
    for path in res.values():
        assert path["seconds"] > 0
        # One seed, clean and 20 cats flipped: the same two models both sides.
        assert set(path["cat"]) == set(path["test"]) == {"0/0", "20/0"}
        assert all(0 <= v <= 100 for v in (*path["cat"].values(),
                                           *path["test"].values()))
    assert "x PyTorch's time" in done.stdout


@pytest.mark.slow
def test_cpu_eval_formulations_agree_on_the_losses(tmp_path):
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cpu_eval.py"), "--replicas", "2",
         "--images", "1000", "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res) >= {"before", "after"}
    for row in res.values():
        # The same models on the same images: only the summation order differs.
        assert row["loss_rel_gap"] < 1e-5 and row["ms_per_replica_image"] > 0
