"""Data split, weight files, and training that checkpoints and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

import constrained_diffusion as cd
from constrained_diffusion.models import UNet, UNetConfig
from constrained_diffusion.models.classifier import MNISTClassifier
from constrained_diffusion.models.weights import load_weights, save_weights
from constrained_diffusion.training import TrainConfig, export_weights, train

TINY = UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), sample_size=16)


def test_mnist_split_is_fixed_and_stratified():
    x_tr, y_tr = cd.data.mnist("train")
    x_te, y_te = cd.data.mnist("held-out")
    assert x_tr.shape == (4500, 1, 32, 32) and x_te.shape == (500, 1, 32, 32)
    assert torch.bincount(y_te).tolist() == [50] * 10 and torch.bincount(y_tr).tolist() == [450] * 10
    assert float(x_tr.min()) == -1.0 and float(x_tr.max()) == 1.0
    assert bool((x_tr[:, :, :2] == -1).all() and (x_tr[:, :, :, -2:] == -1).all())  # zero padding
    flat_tr, flat_te = x_tr.flatten(1), x_te.flatten(1)
    assert not bool((torch.cdist(flat_te[:50], flat_tr) == 0).any())  # no test digit in train
    x_again, _ = cd.data.mnist("held-out")
    assert torch.equal(x_te, x_again)
    with pytest.raises(ValueError, match="split must be"):
        cd.data.mnist("val")  # type: ignore[arg-type]


def _data() -> torch.Tensor:
    return torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("kind", ["ddpm", "flow"])
def test_resume_gives_the_same_weights_and_log(tmp_path, kind):
    cfg = TrainConfig(kind=kind, unet=TINY, steps=4, batch_size=4, log_every=1, checkpoint_every=2, warmup=2)
    train(cfg, _data(), tmp_path / "straight", log=lambda _: None)
    train(cfg.model_copy(update={"steps": 2}), _data(), tmp_path / "pieces", log=lambda _: None)
    train(cfg, _data(), tmp_path / "pieces", log=lambda _: None)  # resumes at step 2
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "pieces" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    strip = lambda p: [{k: v for k, v in json.loads(ln).items() if k != "seconds"} for ln in p.read_text().splitlines()]
    assert strip(tmp_path / "straight" / "log.jsonl") == strip(tmp_path / "pieces" / "log.jsonl")
    assert [r["step"] for r in strip(tmp_path / "pieces" / "log.jsonl")] == [1, 2, 3, 4]


def test_log_written_after_the_last_checkpoint_is_dropped_on_resume(tmp_path):
    cfg = TrainConfig(unet=TINY, steps=2, batch_size=2, log_every=1, checkpoint_every=2, warmup=0)
    train(cfg, _data(), tmp_path, log=lambda _: None)
    with (tmp_path / "log.jsonl").open("a") as f:  # a crash after logging step 3, before its checkpoint
        f.write(json.dumps({"step": 3, "loss": 9.9, "lr": 0.0, "seconds": 0.0}) + "\n")
    train(cfg.model_copy(update={"steps": 3}), _data(), tmp_path, log=lambda _: None)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])["loss"] != 9.9


def test_resume_with_another_config_is_refused(tmp_path):
    cfg = TrainConfig(unet=TINY, steps=1, batch_size=2)
    train(cfg, _data(), tmp_path, log=lambda _: None)
    with pytest.raises(ValueError, match="different configuration"):
        train(cfg.model_copy(update={"lr": 1e-3}), _data(), tmp_path, log=lambda _: None)


def test_export_and_load_as_a_denoiser(tmp_path):
    cfg = TrainConfig(kind="flow", unet=TINY, steps=2, batch_size=2)
    train(cfg, _data(), tmp_path, log=lambda _: None)
    exact = cd.MNISTDenoiser.from_file(export_weights(tmp_path, tmp_path / "w32.safetensors", dtype=None))
    trained = UNet(TINY).eval()
    trained.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["ema"])
    x, t = _data()[:3], torch.tensor([0.0, 400.0, 999.0])
    with torch.no_grad():
        assert torch.equal(exact.network(x, t), trained(x, t))  # the exported weights are the EMA weights, exactly
    path = export_weights(tmp_path, tmp_path / "w.safetensors")
    model = cd.MNISTDenoiser.from_file(path)
    assert model.sample_shape == (1, 16, 16) and model.metadata["train_steps"] == "2"
    r = cd.ConstrainedSampler(model, steps=3, inner_steps=1).sample(
        cd.Inpainting(torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)), progress=False)
    assert torch.isfinite(r.sample).all()


def test_weight_files_round_trip(tmp_path):
    torch.manual_seed(0)
    for model in (UNet(TINY), MNISTClassifier()):
        path = save_weights(tmp_path / f"{type(model).__name__}.safetensors", model.eval(), {"note": "x"})
        loaded, meta = load_weights(path)
        assert type(loaded) is type(model) and meta["note"] == "x"
        for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="no weight file"):
        load_weights(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="unknown architecture"):
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(1)}, str(tmp_path / "odd.safetensors"), metadata={"architecture": "Odd"})
        load_weights(tmp_path / "odd.safetensors")


def test_a_live_run_is_not_entered_twice(tmp_path):
    import os

    from constrained_diffusion.training.checkpoint import RunInUseError

    cfg = TrainConfig(unet=TINY, steps=1, batch_size=2)
    (tmp_path / "LOCK").write_text(str(os.getppid()))  # a live process holds the run
    with pytest.raises(RunInUseError, match="in use by a running training process"):
        train(cfg, _data(), tmp_path, log=lambda _: None)
    (tmp_path / "LOCK").write_text("999999999")  # left behind by a process that died
    train(cfg, _data(), tmp_path, log=lambda _: None)
    assert not (tmp_path / "LOCK").exists() and (tmp_path / "checkpoint.pt").exists()


def test_export_only_does_not_touch_the_run(tmp_path):
    from constrained_diffusion.cli.main import main

    cfg = TrainConfig(unet=TINY, steps=2, batch_size=2, log_every=1)
    train(cfg, _data(), tmp_path / "run", log=lambda _: None)
    log_before = (tmp_path / "run" / "log.jsonl").read_text()
    ckpt_before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    assert main(["train", "ddpm", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "w.safetensors"), "--export-only"]) == 0
    assert (tmp_path / "run" / "log.jsonl").read_text() == log_before
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == ckpt_before
    assert cd.MNISTDenoiser.from_file(tmp_path / "w.safetensors").metadata["train_steps"] == "2"
    assert main(["train", "ddpm", "--out", str(tmp_path / "empty"), "--export", str(tmp_path / "x.safetensors"), "--export-only"]) == 2


def test_sigterm_checkpoints_and_stops(tmp_path):
    import signal
    import subprocess
    import sys

    script = (
        "import torch, sys\n"
        "from constrained_diffusion.training import TrainConfig, train\n"
        "from constrained_diffusion.models import UNetConfig\n"
        "cfg = TrainConfig(unet=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), sample_size=16),"
        " steps=100000, batch_size=2, log_every=1, checkpoint_every=100000)\n"
        "train(cfg, torch.zeros(4, 1, 16, 16), sys.argv[1], log=lambda s: print(s, flush=True))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until it is training
        if '"step": 3' in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0 and "on signal" in rest
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] >= 3 and not (tmp_path / "LOCK").exists()


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from constrained_diffusion.cli.main import main

    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _state(path):
    return torch.load(path, weights_only=True)


def test_checkpoints_default_to_a_folder_outside_the_repo_and_resume(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from constrained_diffusion.training.checkpoint import HOME_ENV

    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    command = ["train", "ddpm", "--steps", "2", "--batch-size", "2", "--device", "cpu"]
    assert _cli(command, capsys)[0] == 0
    run = tmp_path / "home" / "runs" / "mnist-ddpm"
    repo = Path(cd.__file__).resolve().parents[1]
    assert not run.resolve().is_relative_to(repo)
    assert _state(run / "checkpoint.pt")["step"] == 2
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()][-1] == 2
    rc, out, _ = _cli(command, capsys)  # the same command again: resumes, nothing left to do
    assert rc == 0 and "resumed from step 2" in out and _state(run / "checkpoint.pt")["step"] == 2
    log = tmp_path / "elsewhere" / "log.jsonl"
    rc, out, _ = _cli([*command[:2], "--steps", "3", *command[4:], "--log", str(log)], capsys)
    assert rc == 0 and "resumed from step 2" in out and _state(run / "checkpoint.pt")["step"] == 3
    assert [json.loads(ln)["step"] for ln in log.read_text().splitlines()] == [3]


@pytest.mark.parametrize("kind", ["ddpm", "flow"])
def test_init_from_shipped_loads_the_shipped_weights_before_any_step(tmp_path, kind):
    from safetensors import safe_open

    from constrained_diffusion.models import pretrained_path
    from constrained_diffusion.models.pretrained import weights_digest
    from constrained_diffusion.training.diffusion import prepare_run

    shipped = pretrained_path(f"mnist_{kind}.safetensors")
    run = prepare_run(TrainConfig(kind=kind, steps=10**6), tmp_path / "checkpoint.pt", shipped)
    name = "down.0.0.conv1.weight"
    with safe_open(str(shipped), framework="pt") as f:
        steps = int(f.metadata()["train_steps"])
        file_tensors = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 (not a dict)
    assert torch.equal(run.model.state_dict()[name], file_tensors[name])
    for net in (run.model, run.ema.model):
        assert all(torch.equal(net.state_dict()[k], v) for k, v in file_tensors.items())
    assert run.step == steps and not run.resumed and run.init == {"path": str(shipped), "digest": weights_digest(shipped)}
    fresh = prepare_run(TrainConfig(kind=kind), tmp_path / "checkpoint.pt")  # without init_from: other weights
    assert not torch.equal(fresh.model.state_dict()[name], file_tensors[name])


def test_init_from_shipped_trains_further_and_the_same_command_resumes(tmp_path, capsys):
    from constrained_diffusion.models.weights import read_metadata

    steps = int(read_metadata(cd.models.pretrained_path("mnist_ddpm.safetensors"))["train_steps"])
    out = tmp_path / "run"
    command = ["train", "ddpm", "--init-from", "shipped", "--steps", str(steps + 1), "--batch-size", "2",
               "--device", "cpu", "--out", str(out)]
    rc, printed, _ = _cli(command, capsys)
    assert rc == 0 and f"at step {steps}" in printed
    state = _state(out / "checkpoint.pt")
    assert state["step"] == steps + 1 and state["init_from"]["digest"].startswith("sha256:")
    rc, printed, _ = _cli(command, capsys)  # the checkpoint wins when it started from the same weights
    assert rc == 0 and f"resumed from step {steps + 1}" in printed
    other = export_weights(out, tmp_path / "other.safetensors")
    rc, _, err = _cli([*command[:3], str(other), *command[4:]], capsys)
    assert rc == 2 and "--init-from" in err and "already holds a run" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(["train", "ddpm", "--init-from", "shipped", "--steps", "5", "--out", str(tmp_path / "b")], capsys)
    assert rc == 2 and "--steps" in err and f"trained for {steps} steps" in err


def test_init_from_refuses_a_run_trained_from_scratch(tmp_path):
    from constrained_diffusion.training.checkpoint import TrainArgumentError

    cfg = TrainConfig(unet=TINY, steps=1, batch_size=2)
    train(cfg, _data(), tmp_path / "run", log=lambda _: None)
    weights = export_weights(tmp_path / "run", tmp_path / "w.safetensors")
    with pytest.raises(TrainArgumentError, match="trained from scratch") as info:
        train(cfg, _data(), tmp_path / "run", init_from=weights, log=lambda _: None)
    assert info.value.argument == "init_from"


@pytest.mark.parametrize("argv, flag, message", [
    (["train", "ddpm", "--init-from", "shiped"], "--init-from", "unknown source 'shiped'"),
    (["train", "flow", "--init-from", "{tmp}/missing.safetensors"], "--init-from", "no weight file at"),
    (["train", "classifier", "--init-from", "{tmp}/missing", "--export", "{tmp}/c.safetensors"], "--init-from", "no weight file"),
    (["train", "ddpm", "--init-from", "{classifier}", "--steps", "99999", "--out", "{tmp}/run"], "--init-from", "does not hold UNet"),
    (["train", "ddpm", "--out", "{tmp}/empty", "--export", "{tmp}/w.safetensors", "--export-only"], "--out", "no checkpoint"),
])
def test_bad_training_input_is_a_one_line_error_naming_the_flag(tmp_path, capsys, argv, flag, message):
    classifier = cd.models.pretrained_path("mnist_classifier.safetensors")
    rc, _, err = _cli([a.format(tmp=tmp_path, classifier=classifier) for a in argv], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"error: {flag}:" in err and message in err


def test_a_log_of_another_run_is_not_cut(tmp_path):
    from constrained_diffusion.training.checkpoint import TrainArgumentError

    cfg = TrainConfig(unet=TINY, steps=2, batch_size=2, log_every=1)
    train(cfg, _data(), tmp_path / "a", log_path=tmp_path / "log.jsonl", log=lambda _: None)
    before = (tmp_path / "log.jsonl").read_text()
    with pytest.raises(TrainArgumentError, match="already has records up to step 2") as info:
        train(cfg, _data(), tmp_path / "b", log_path=tmp_path / "log.jsonl", log=lambda _: None)
    assert info.value.argument == "log_path" and (tmp_path / "log.jsonl").read_text() == before


def test_classifier_init_from_shipped_starts_from_its_weights():
    from constrained_diffusion.training.classifier import initial_classifier

    shipped, _ = load_weights(cd.models.pretrained_path("mnist_classifier.safetensors"))
    model = initial_classifier(cd.models.pretrained_path("mnist_classifier.safetensors"))
    assert all(p.requires_grad for p in model.parameters())
    for (k, a), (_, b) in zip(shipped.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k




_LOCKER = """
import json, os, sys, time
from constrained_diffusion.training.checkpoint import RunInUseError, run_lock
run, seconds = sys.argv[1], float(sys.argv[2])
marker = os.path.join(run, "inside")
print("ready", flush=True)
sys.stdin.readline()  # both start together
ran = refused = both = 0
end = time.time() + seconds
while time.time() < end:  # enter the run again and again while the other process does the same
    try:
        with run_lock(run):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if the other one is inside too
            except FileExistsError:
                both += 1
                continue
            ran += 1
            time.sleep(0.001)
            os.close(fd)
            os.unlink(marker)
    except RunInUseError as exc:
        assert "in use by a running training process" in str(exc)
        refused += 1
print(json.dumps({"ran": ran, "refused": refused, "both": both}))
"""


def test_two_trainers_started_together_exactly_one_runs(tmp_path):
    """The lock is atomic: two processes entering one run over and over at the same time are never both inside."""
    import json
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", _LOCKER, str(tmp_path), "2"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    counts = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(c["both"] for c in counts) == 0, f"both processes were inside the run at once: {counts}"
    assert all(c["ran"] > 0 and c["refused"] > 0 for c in counts), counts  # they really contended
