"""End-to-end runs of ``constrained-diffusion evaluate``: outputs, resume after ``kill -9``, a diffusers folder, two processes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import PIL.Image
import pytest
import torch

from constrained_diffusion.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def _records(out: Path) -> list[dict]:
    path = out / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _argv(out: Path, *extra: str, limit: int = 3, batch: int = 2) -> list[str]:
    return ["evaluate", "--model", "mnist-ddpm", "--data", "mnist-test", "--task", "box", "--method", "inexact-newton",
            "--method", "dps", "--set", "dps:steps=2", "--steps", "1", "--set", "inner_steps=1", "--limit", str(limit),
            "--batch-size", str(batch), "--out", str(out), "--quiet", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_a_run_writes_records_images_summary_grid_and_pareto_and_resumes(tmp_path):
    out = tmp_path / "run"
    assert main(_argv(out, "--noise-std", "0.05")) == 0
    recs = _records(out)
    assert sorted((r["image"], r["method"]) for r in recs) == sorted((f"{i:05d}", m) for i in range(3) for m in ("inexact-newton", "dps"))
    for r in recs:
        assert {"psnr", "ssim", "residual", "nfe", "nbe", "seconds", "peak_mb", "device", "dtype", "settings"} <= set(r)
        assert r["noise_std"] == 0.05 and r["noise_scale"] == "[-1, 1] pixels" and r["resolution"] == [1, 32, 32]
        assert r["file"] == f"images/{r['method']}/{r['settings']}/{r['image']}.png"
        with PIL.Image.open(out / r["file"]) as png:
            assert png.size == (32, 32)
        assert r["observation"].startswith("images/observation/")
        with PIL.Image.open(out / r["observation"]) as png:
            assert png.size == (32, 32)
    by = {(r["image"], r["method"]): r for r in recs}
    assert by["00000", "dps"]["nbe"] > 0 and by["00000", "inexact-newton"]["nbe"] == 0
    summary = (out / "summary.md").read_text()
    assert "| inexact-newton | 3 " in summary and "±" in summary and "s / image" in summary
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "<svg" in (out / "pareto.svg").read_text()
    before = (out / "records.jsonl").read_text()
    assert main(_argv(out, "--noise-std", "0.05")) == 0  # nothing to do: nothing appended
    assert (out / "records.jsonl").read_text() == before
    # another batch size, the same per-image results (each image's noise and observation come from its id)
    other = tmp_path / "other"
    assert main(_argv(other, "--noise-std", "0.05", batch=1)) == 0
    for r in _records(other):
        assert r["psnr"] == pytest.approx(by[r["image"], r["method"]]["psnr"], abs=0.05)  # batched kernels round differently


def test_the_methods_of_a_run_share_the_initial_noise(tmp_path):
    """inexact Newton with zero inner steps is plain DDIM: two labels of it give the same images."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mnist-ddpm\ndata: mnist-test\ntask: sr4\nsteps: 2\nlimit: 2\nbatch_size: 2\nquiet: true\n"
                   "method:\n  - {name: inexact-newton, label: a, set: {inner_steps: 0}}\n"
                   "  - {name: exact-jvp, label: b, set: {inner_steps: 0}}\n")
    assert main(["evaluate", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 0
    recs = {(r["image"], r["method"]): r for r in _records(tmp_path / "o")}
    assert recs["00000", "a"]["settings"] != recs["00000", "b"]["settings"]
    for i in ("00000", "00001"):
        assert recs[i, "a"]["psnr"] == recs[i, "b"]["psnr"]


def test_kill_9_at_any_moment_then_rerun_gives_every_record_exactly_once(tmp_path):
    out = tmp_path / "killed"
    argv = _argv(out, limit=5, batch=1)
    proc = subprocess.Popen([sys.executable, "-m", "constrained_diffusion", *argv], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(_records(out)) < 1 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    got = len(_records(out))
    assert 1 <= got < 10, "the kill came before the first record or after the last"
    assert main(argv) == 0
    recs = _records(out)
    keys = [(r["image"], r["method"], r["settings"]) for r in recs]
    assert len(keys) == len(set(keys)) == 10


def test_a_diffusers_folder_an_image_folder_prompts_and_dataset_metrics(tmp_path):
    from PIL import Image
    from tiny_pipelines import tiny_sd

    tiny_sd(tmp_path).save_pretrained(tmp_path / "sd")
    data = tmp_path / "images"
    g = torch.Generator().manual_seed(0)
    for k in range(3):
        pixels = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        (data / f"d{k}").mkdir(parents=True)
        Image.fromarray(pixels).save(data / f"d{k}" / f"img{k}.png")
    prompts = tmp_path / "captions.csv"
    prompts.write_text("image,text\nd0/img0.png,a photo of a cat\nd1/img1.png,a red house\nd2/img2.png,a blue sky\n")
    out = tmp_path / "out"
    assert main(["evaluate", "--model", str(tmp_path / "sd"), "--data", str(data), "--task", "sr4", "--method", "paper-sr8",
                 "--method", "mpgd", "--steps", "2", "--set", "inner_steps=1", "--prompts", str(prompts),
                 "--metrics", "psnr", "ssim", "fid", "kid", "--fid-features", "mnist-classifier", "--batch-size", "2",
                 "--out", str(out), "--quiet"]) == 0
    recs = _records(out)
    assert len(recs) == 6 and {r["image"] for r in recs} == {"d0/img0.png", "d1/img1.png", "d2/img2.png"}
    by_method = {r["method"]: r["settings"] for r in recs}
    assert all(r["resolution"] == [3, 32, 32] for r in recs)
    with PIL.Image.open(out / "images" / "mpgd" / by_method["mpgd"] / "d1" / "img1.png") as png:
        assert (png.size, png.mode) == ((32, 32), "RGB")
    summary = json.loads((out / "summary.json").read_text())
    for row in summary["methods"]:
        assert row["n"] == 3 and math.isfinite(row["fid"]) and row["fid"] > 0 and math.isfinite(row["kid"])
    fids = [row["fid"] for row in summary["methods"]]
    assert len(set(fids)) == len(fids)  # each method's samples have their own distance to the images
    assert "FID" in (out / "summary.md").read_text()
    # the captions are part of the settings: other captions, other records
    prompts.write_text(prompts.read_text().replace("cat", "dog"))
    assert main(["evaluate", "--model", str(tmp_path / "sd"), "--data", str(data), "--task", "sr4", "--method", "mpgd",
                 "--steps", "2", "--set", "inner_steps=1", "--prompts", str(prompts), "--limit", "1", "--out", str(out), "--quiet"]) == 0
    assert len(_records(out)) == 7


def _torchrun(out: Path, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "constrained_diffusion", *argv], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _children_with_rank(parent: int, rank: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's process in /proc")
def test_two_processes_shard_the_images_match_one_process_and_resume_after_a_rank_is_killed(tmp_path):
    out = tmp_path / "two"
    argv = _argv(out, limit=4, batch=1)
    proc = _torchrun(out, argv)
    deadline = time.time() + 240
    rank1 = out / "records.rank1.jsonl"
    while time.time() < deadline and proc.poll() is None and not (rank1.exists() and rank1.read_text().count("\n") >= 1):
        time.sleep(0.05)
    victims = _children_with_rank(proc.pid, 1)
    assert victims, "rank 1 was not found"
    os.kill(victims[0], signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    assert not (out / "summary.md").exists()
    again = _torchrun(out, argv)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    recs = _records(out)
    keys = [(r["image"], r["method"]) for r in recs]
    assert len(keys) == len(set(keys)) == 8 and not list(out.glob("records.rank*.jsonl"))
    assert {r["image"]: r["rank"] for r in recs if r["method"] == "dps"} == {"00000": 0, "00001": 1, "00002": 0, "00003": 1}
    summary = (out / "summary.md").read_text()
    assert "(4 images, 1x32x32)" in summary and "\n8 records;" in summary  # both ranks' records summarised
    single = tmp_path / "one"  # one process, the same threads per process: the same numbers
    subprocess.run([sys.executable, "-m", "constrained_diffusion", *_argv(single, limit=4, batch=1)], env=_env(), check=True,
                   capture_output=True)
    one = {(r["image"], r["method"]): r for r in _records(single)}
    for r in recs:
        assert r["psnr"] == one[r["image"], r["method"]]["psnr"] and r["ssim"] == one[r["image"], r["method"]]["ssim"]
        assert r["settings"] == one[r["image"], r["method"]]["settings"]


def test_every_method_of_the_field_runs_through_evaluate_on_mnist_and_a_tiny_sd_pipeline(tmp_path):
    """Issue 24: each added method end to end through the harness, on the shipped DDPM and a latent diffusers folder."""
    from PIL import Image
    from tiny_pipelines import tiny_sd

    import constrained_diffusion as cd

    methods = [r.name for r in cd.recipes.METHODS]
    tiny_sd(tmp_path).save_pretrained(tmp_path / "sd")
    data = tmp_path / "images"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()).save(data / "img0.png")
    for model, images in (("mnist-ddpm", "mnist-test"), (str(tmp_path / "sd"), str(data))):
        out = tmp_path / f"out-{len(images)}"
        assert main(["evaluate", "--model", model, "--data", images, "--task", "box", "--methods", *methods, "--steps", "2",
                     "--limit", "1", "--batch-size", "1", "--out", str(out), "--quiet"]) == 0
        recs = _records(out)
        assert sorted(r["method"] for r in recs) == sorted(methods)
        assert all(math.isfinite(r["psnr"]) and r["nfe"] >= 2 for r in recs)
        assert all((out / r["file"]).stat().st_size > 0 for r in recs)
