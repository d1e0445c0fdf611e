"""The resumable evaluation runner and the eigenvector experiment, on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch

import constrained_diffusion as cd
from constrained_diffusion.analysis import eigvec_rows
from constrained_diffusion.evaluation import Settings, evaluate, make_constraint, summarise
from constrained_diffusion.models.classifier import MNISTClassifier


@pytest.fixture(scope="module")
def tiny_model(tiny_unet_factory) -> cd.MNISTDenoiser:
    return cd.MNISTDenoiser(tiny_unet_factory(sample_size=16, attention=(8,)), "ddpm")


@pytest.fixture(scope="module")
def digits():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 16, 16, generator=g) * 2 - 1, torch.randint(0, 10, (6,), generator=g)


@pytest.mark.parametrize("task", ["box", "free-form", "sr4"])
def test_tasks_are_satisfied_by_the_clean_digits(task, digits):
    images, _ = digits
    c = make_constraint(task, images)
    assert float(c.residual(images).max()) < 1e-5
    assert float(c.residual(torch.zeros_like(images)).min()) > 0.1
    # the free-form mask of a digit does not depend on the batching
    if task == "free-form":
        assert torch.equal(make_constraint(task, images[2:4], first_index=2).mask, c.mask[2:4])


def test_evaluation_resumes_without_loss_or_duplicates(tmp_path, tiny_model, digits):
    images, labels = digits
    clf = MNISTClassifier().eval()
    out = tmp_path / "eval.jsonl"
    s = Settings(steps=2, inner_steps=1, batch_size=2, limit=4)
    kwargs = dict(tasks=["box"], solvers=["inexact-newton", "gradient-descent"], out=out, settings=s, log=lambda _: None)
    first = evaluate({"ddpm": tiny_model}, clf, images, labels, **kwargs)
    keys = [(r["solver"], r["budget"], r["start"]) for r in first]
    assert len(keys) == len(set(keys)) == 2 * 2 + 2  # 2 solvers x 2 batches, + equal-time GD x 2 batches
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-2]) + "\n")  # a crash lost the last two records
    again = evaluate({"ddpm": tiny_model}, clf, images, labels, **kwargs)
    assert len(out.read_text().splitlines()) == len(lines)
    assert sorted((r["solver"], r["budget"], r["start"]) for r in again) == sorted(keys)
    rows = summarise(again)
    assert {(r["solver"], r["budget"]) for r in rows} == {("inexact-newton", "equal-steps"), ("gradient-descent", "equal-steps"),
                                                           ("gradient-descent", "equal-time")}
    for r in rows:
        assert r["n"] == 4 and r["nfe"] > 0 and 0 <= r["label_accuracy"] <= 1 and r["peak_mb"] == r["peak_mb"]
    assert json.loads(lines[0])["model"] == "ddpm"
    # other weights under the same name: nothing is reused, and the old records are not returned
    retrained = evaluate({"ddpm": tiny_model}, clf, images, labels, weights={"ddpm": "sha256:other"}, **kwargs)
    assert len(out.read_text().splitlines()) == 2 * len(lines)
    assert {r["weights"] for r in retrained} == {"sha256:other"} and len(retrained) == len(keys)


def test_eigvec_rows_on_a_tiny_model(tiny_mnist):
    model = tiny_mnist
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = eigvec_rows(model, images, [900, 100], samples=2, k=4, log=lambda _: None)
    assert [r["t"] for r in rows] == [900.0, 100.0]
    for r in rows:
        assert 0 <= r["same_top-k"] <= 1 and 0 <= r["random_all"] <= 1 and r["asymmetry"] >= 0
        assert r["same_all"] >= r["same_top-k"] - 1e-9  # a larger pool can only match better
        assert -1 <= r["inpainting_cos_Je"] <= 1 and r["sr4_reduction_newton"] <= 1 + 1e-9
    with pytest.raises(ValueError, match="need at least"):
        eigvec_rows(model, images[:2], [500], samples=2)


def test_eigvec_rows_resume_from_their_results_file(tiny_mnist, tmp_path):
    model = tiny_mnist
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    results = tmp_path / "eigvec.jsonl"
    first = eigvec_rows(model, images, [900], samples=2, k=4, log=lambda _: None, results=results, model_name="tiny")
    logged: list[str] = []
    both = eigvec_rows(model, images, [900, 100], samples=2, k=4, log=logged.append, results=results, model_name="tiny")
    assert both[0] == first[0] and "reused" in logged[0] and "reused" not in logged[1]
    assert len(results.read_text().splitlines()) == 2  # t=900 was not appended twice
    other = eigvec_rows(model, images, [900], samples=2, k=3, log=logged.append, results=results, model_name="tiny")
    assert "reused" not in logged[-1] and other[0]["t"] == 900.0  # another k is another row


def test_settings_tag_separates_devices_and_keeps_cpu_records():
    cpu = Settings(steps=20, inner_steps=5, batch_size=25, seed=0)
    assert cpu.tag() == "steps=20,inner=5,batch=25,seed=0"  # the tag of every CPU record written so far
    gpu = Settings(steps=20, inner_steps=5, batch_size=25, seed=0, device="cuda")
    assert gpu.tag() != cpu.tag() and "device=cuda" in gpu.tag()
    emulated = Settings(steps=20, inner_steps=5, batch_size=25, seed=0, precision="tf32-emulated")
    assert emulated.tag() == cpu.tag() + ",precision=tf32-emulated"


def test_compare_cli_refuses_two_precisions(capsys):
    from constrained_diffusion.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--emulate-tf32", "--no-tf32", "--limit", "1"])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_evaluation_rejects_a_model_on_another_device(tmp_path, tiny_model, digits):
    images, labels = digits
    with pytest.raises(ValueError, match="settings.device"):
        evaluate({"ddpm": tiny_model}, MNISTClassifier().eval(), images, labels, ["box"], ["inexact-newton"],
                 tmp_path / "eval.jsonl", Settings(steps=1, inner_steps=1, batch_size=2, limit=2, device="cuda"))
    assert not (tmp_path / "eval.jsonl").exists()


def test_eigvec_rows_resume_after_a_kill_mid_line(tiny_mnist, tmp_path):
    model = tiny_mnist
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    results = tmp_path / "eigvec.jsonl"
    first = eigvec_rows(model, images, [900, 100], samples=2, k=4, log=lambda _: None, results=results, model_name="tiny")
    lines = results.read_text().splitlines()
    results.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed while writing t=100
    logged: list[str] = []
    again = eigvec_rows(model, images, [900, 100], samples=2, k=4, log=logged.append, results=results, model_name="tiny")
    assert "reused" in logged[0] and "reused" not in logged[1]
    assert again == first and results.read_text().splitlines() == lines  # the torn line was replaced, not kept


def test_read_digits_and_the_classifier_card():
    from constrained_diffusion.data.mnist import demo_digits
    from constrained_diffusion.evaluation import read_digits
    from constrained_diffusion.evaluation.model_card import classifier_card

    digits, labels = demo_digits()
    classifier = cd.models.load("mnist-classifier")
    assert torch.equal(read_digits(digits, classifier), labels)
    assert torch.equal(read_digits(digits.double() * 3), read_digits(digits.sign()))  # clamped to [-1, 1] first
    card = classifier_card(classifier, digits, labels)
    assert card.accuracy == 1.0 and card.per_digit == [1.0] * 10 and card.parameters == 157_290
    wrong = classifier_card(classifier, digits, (labels + 1) % 10)
    assert wrong.accuracy == 0.0


def test_unconditional_samples_do_not_depend_on_the_batching():
    from constrained_diffusion.evaluation.model_card import unconditional_samples

    model = cd.GaussianDenoiser.smooth((1, 4, 4), length_scale=1.5)
    a, _ = unconditional_samples(model, 5, steps=3, batch_size=2, seed=1)
    b, seconds = unconditional_samples(model, 5, steps=3, batch_size=5, seed=1)
    c, _ = unconditional_samples(model, 5, steps=3, batch_size=5, seed=2)
    assert a.shape == (5, 1, 4, 4) and torch.allclose(a, b, atol=1e-6) and not torch.allclose(b, c) and seconds > 0
    assert float(a.abs().max()) <= 1.0


def test_evaluation_store_keeps_the_record_format(tmp_path, tiny_model, digits):
    from constrained_diffusion.evaluation import KEY_FIELDS, results_store

    images, labels = digits
    out = tmp_path / "eval.jsonl"
    s = Settings(steps=1, inner_steps=1, batch_size=2, limit=2)
    evaluate({"ddpm": tiny_model}, MNISTClassifier().eval(), images, labels, ["box"], ["inexact-newton"], out, s,
             log=lambda _: None, weights={"ddpm": "sha256:x"})
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert list(record)[-len(KEY_FIELDS):] == list(KEY_FIELDS)  # metrics first, then the key, as in runs/*.jsonl
    assert record["setting"] == s.tag() and record["weights"] == "sha256:x" and record["start"] == 0
    assert (s.tag(), "ddpm", "sha256:x", "box", "inexact-newton", "equal-steps", 0) in results_store(out)
