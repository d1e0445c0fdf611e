"""The solver comparison on the harness (``compare``), the eigenvector experiment and the model cards."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

import constrained_diffusion as cd
from constrained_diffusion.analysis import eigvec_rows
from constrained_diffusion.evaluation.comparison import EQUAL_TIME, Comparison, equal_time_label
from constrained_diffusion.evaluation.image_tasks import make_problem
from constrained_diffusion.evaluation.records import RECORDS


@pytest.fixture(scope="module")
def digits():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 16, 16, generator=g) * 2 - 1


@pytest.mark.parametrize("task", ["top-half", "mnist-free-form", "sr4"])
def test_compare_tasks_are_satisfied_by_the_clean_digits(task, digits):
    ids = [f"{i:05d}" for i in range(6)]
    c = make_problem(task, digits, ids).constraint
    assert float(c.residual(digits).max()) < 1e-5
    assert float(c.residual(torch.zeros_like(digits)).min()) > 0.1
    if task == "mnist-free-form":  # a digit's strokes do not depend on its batch
        assert torch.equal(make_problem(task, digits[2:4], ids[2:4]).constraint.mask, c.mask[2:4])


def _comparison(out, **options) -> Comparison:
    settings = dict(models=["mnist-ddpm"], tasks=["top-half"], solvers=["inexact-newton", "identity"], out=out, steps=2,
                    inner_steps=1, limit=4, batch_size=2, seed=1, quiet=True)
    return Comparison(**{**settings, **options})


def test_compare_reproduces_the_loop_of_0_1_digit_for_digit(tmp_path):
    """compare on the harness gives the records of its own loop of 0.1 (runner.py): same noise, masks and batches."""
    with pytest.warns(DeprecationWarning, match="runner"):
        import constrained_diffusion.evaluation.runner as runner

        importlib.reload(runner)  # warns on every (re)load, whichever test imported it first
    from constrained_diffusion.data import mnist
    from constrained_diffusion.models import load

    images, labels = mnist("held-out")
    solvers = ["inexact-newton", "gradient-descent"]
    old = runner.summarise(runner.evaluate({"ddpm": load("mnist-ddpm")}, load("mnist-classifier"), images, labels, ["free-form"],
                                           solvers, tmp_path / "old.jsonl", runner.Settings(steps=2, inner_steps=2, batch_size=2, limit=4, seed=1),
                                           equal_time=False, log=lambda _: None))
    rows = _comparison(tmp_path / "new", tasks=["mnist-free-form"], solvers=solvers, inner_steps=2, equal_time=False).run()
    renamed = {"mnist-free-form": "free-form"}  # top-half is box's mask for mask: tests/test_evaluate_inputs.py
    assert len(rows) == len(old) == 2
    for row in rows:
        (before,) = [r for r in old if (r["task"], r["solver"]) == (renamed[row["task"]], row["solver"])]
        # the same samples: only the order of the float32 means differs (per batch, then weighted, vs per image)
        for metric in ("psnr", "ssim", "label_accuracy", "residual"):
            assert row[metric] == pytest.approx(before[metric], rel=1e-6, abs=1e-7), (row["task"], row["solver"], metric)
        assert (row["nfe"], row["nbe"], row["n"]) == (before["nfe"], before["nbe"], 4)


def test_compare_resumes_and_keeps_its_equal_time_counts(tmp_path):
    out = tmp_path / "cmp"
    first = _comparison(out, solvers=["inexact-newton", "gradient-descent"]).run()
    assert [(r["solver"], r["budget"]) for r in first] == [("inexact-newton", "equal-steps"), ("gradient-descent", "equal-steps"),
                                                           ("gradient-descent", "equal-time")]
    folder = out / "mnist-ddpm" / "top-half"
    records = (folder / RECORDS).read_text().splitlines()
    assert len(records) == 3 * 4  # three methods x four digits, one record each
    (kept,) = [json.loads(line) for line in (folder / EQUAL_TIME).read_text().splitlines()]
    assert first[2]["steps"] == kept["steps"] == max(1, round(2 * kept["reference_seconds_per_step"] / kept["seconds_per_step"]))
    assert {json.loads(line)["method"] for line in records} == {"inexact-newton", "gradient-descent", equal_time_label("gradient-descent")}

    (folder / RECORDS).write_text("\n".join(records[:-2]) + "\n")  # a crash lost the last two records
    again = _comparison(out, solvers=["inexact-newton", "gradient-descent"]).run()
    assert len((folder / RECORDS).read_text().splitlines()) == len(records)  # the two recomputed, nothing doubled
    assert [json.loads(line) for line in (folder / EQUAL_TIME).read_text().splitlines()] == [kept]
    keys = [(r["image"], r["method"], r["settings"]) for r in map(json.loads, (folder / RECORDS).read_text().splitlines())]
    assert len(keys) == len(set(keys))
    assert [r["steps"] for r in again] == [r["steps"] for r in first]  # the kept counts, not a new timing
    for a, b in zip(first, again):
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-9) and a["label_accuracy"] == b["label_accuracy"]


def test_compare_keeps_the_counts_it_was_given_first(tmp_path):
    """Another process (or an earlier run) that stored its counts first wins: its steps are used, not new timings."""
    from constrained_diffusion.evaluation.config import MethodSpec
    from constrained_diffusion.evaluation.methods import resolve_methods
    from constrained_diffusion.utils.jsonl_store import JsonlStore

    c = _comparison(tmp_path / "cmp", solvers=["inexact-newton", "identity"])
    same = c.config("mnist-ddpm", "top-half", [MethodSpec(name=s) for s in c.solvers])
    reference = next(m.settings for m in resolve_methods(same, None, "")[0] if m.label == "inexact-newton")
    store = JsonlStore(c.folder("mnist-ddpm", "top-half") / EQUAL_TIME, ("reference", "limit", "solver"))
    store.append({"reference": reference, "limit": 4, "solver": "identity", "steps": 3, "seconds_per_step": 1.0,
                  "reference_seconds_per_step": 1.5})
    store.append({"reference": reference, "limit": 400, "solver": "identity", "steps": 9, "seconds_per_step": 1.0,
                  "reference_seconds_per_step": 4.5})  # another number of digits: not these counts
    rows = c.run()
    assert [(r["solver"], r["budget"], r["steps"]) for r in rows][-1] == ("identity", "equal-time", 3)
    assert rows[-1]["nfe"] == rows[1]["nfe"] * 3 / 2  # 3 steps where the equal-steps row took 2


def test_compare_cli_writes_a_folder_and_warns_on_the_old_names(tmp_path, capsys, monkeypatch):
    from constrained_diffusion.cli.main import main
    from constrained_diffusion.evaluation import task_names

    monkeypatch.setattr(task_names, "_warned", set())  # the warning comes once per process: as if this were a fresh one

    with pytest.warns(FutureWarning) as caught:
        assert main(["compare", "--models", "mnist-ddpm", "--tasks", "box", "--methods", "identity", "--steps", "1",
                     "--inner-steps", "1", "--limit", "2", "--batch-size", "2", "--device", "cpu", "--no-equal-time",
                     "--out", str(tmp_path / "old.jsonl"), "--quiet"]) == 0
    messages = [str(w.message) for w in caught]
    assert any("'box' is the centred box" in m for m in messages) and any("writing to" in m for m in messages)
    assert not (tmp_path / "old.jsonl").exists()
    (record,) = [json.loads(line) for line in (tmp_path / "old" / "mnist-ddpm" / "box" / RECORDS).read_text().splitlines()[:1]]
    assert record["task"] == "box" and record["method"] == "identity" and 0 <= record["label_accuracy"] <= 1
    table = capsys.readouterr().out
    assert "| ddpm  | box  | identity | equal-steps | 1 x 1" in table


def test_label_accuracy_is_the_classifier_reading_the_true_label(tmp_path):
    from constrained_diffusion.data.images import shipped_labels
    from constrained_diffusion.data.mnist import mnist
    from constrained_diffusion.evaluation.digits import read_digits
    from constrained_diffusion.evaluation.harness import Evaluation
    from constrained_diffusion.evaluation.scores import PerImage

    images, labels = mnist("held-out")
    ids = ["00003", "00010", "00042"]
    assert torch.equal(shipped_labels("mnist-held-out", ids), labels[[3, 10, 42]])
    assert torch.equal(shipped_labels("mnist-test:stratified-10", ids), labels[[3, 10, 42]])
    truth = images[[3, 10, 42]]
    wrong = torch.roll(truth, 1, dims=0)  # each image shows its neighbour's digit
    scores = PerImage(["psnr", "label_accuracy"])
    expected = (read_digits(wrong) == labels[[3, 10, 42]]).float()
    assert torch.equal(scores(wrong, truth, labels[[3, 10, 42]])["label_accuracy"], expected)
    assert scores(truth, truth, labels[[3, 10, 42]])["label_accuracy"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="label_accuracy: needs the images' labels"):
        scores(truth, truth)
    folder = tmp_path / "imgs"
    folder.mkdir()
    with pytest.raises(ValueError, match="--metrics label_accuracy: needs labelled images"):
        Evaluation(model="mnist-ddpm", data=str(folder), task="top-half", method="identity", out=tmp_path / "o",
                   metrics=["label_accuracy"]).check()


def test_the_new_run_options_leave_the_settings_hash_of_a_default_run_alone():
    from constrained_diffusion.evaluation.config import EvaluationConfig
    from constrained_diffusion.evaluation.methods import resolve_methods

    base = dict(model="mnist-ddpm", data="mnist-test", task="top-half", method="identity", out="o")
    settings = lambda **o: resolve_methods(EvaluationConfig(**{**base, **o}), (1, 32, 32), "")[0][0].settings  # noqa: E731
    default = settings()
    assert settings(noise_seeding="image-id", precision="float32") == default
    assert settings(device="cuda:0") == settings(device="cuda:1") != default  # a GPU's records and seconds are its own
    assert len({default, settings(noise_seeding="position"), settings(precision="tf32-emulated"), settings(device="cuda")}) == 4


def test_precision_reaches_the_network_and_keys_its_own_records(tmp_path):
    """tf32-emulated rounds the DDPM's convolutions (other samples, other records beside the float32 ones)."""
    from constrained_diffusion.evaluation.harness import Evaluation

    run = lambda precision: Evaluation(model="mnist-ddpm", data="mnist-test", task="sr4", method="inexact-newton",  # noqa: E731
                                       out=tmp_path, limit=2, batch_size=2, steps=2, quiet=True, precision=precision,
                                       set={"inner_steps": 1}).run(log=lambda _: None)["methods"][0]
    plain, rounded = run("float32"), run("tf32-emulated")
    records = [json.loads(line) for line in (tmp_path / RECORDS).read_text().splitlines()]
    assert len(records) == 4 and len({r["settings"] for r in records}) == 2
    assert plain["psnr"] != rounded["psnr"]  # the finite difference feels the rounding (docs/evaluation.md, GPU against CPU)
    with pytest.raises(ValueError, match="--precision tf32-emulated: model 'gaussian' has no torch modules"):
        Evaluation(model="gaussian", data="mnist-test", task="sr4", method="identity", out=tmp_path / "g", limit=1,
                   precision="tf32-emulated", quiet=True).run(log=lambda _: None)


def test_run_options_that_cannot_hold_are_refused_before_sampling(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from constrained_diffusion.cli.main import main
    from constrained_diffusion.evaluation.harness import Evaluation

    with pytest.raises(ValueError, match="--precision tf32-emulated: rounds float32 arithmetic; it takes --dtype float32"):
        Evaluation(model="mnist-ddpm", data="mnist-test", task="top-half", method="identity", out=tmp_path / "a",
                   precision="tf32-emulated", dtype="float16").run()
    folder = tmp_path / "digits"
    folder.mkdir()
    Image.new("L", (32, 32)).save(folder / "seven.png")
    with pytest.raises(ValueError, match="noise_seeding: position: image ids must be held-out positions"):
        Evaluation(model="gaussian", data=str(folder), task="top-half", method="identity", out=tmp_path / "b",
                   noise_seeding="position", quiet=True).run(log=lambda _: None)
    assert not (tmp_path / "b").exists()  # nothing sampled, nothing written
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="compare runs as one process"):
        _comparison(tmp_path / "c").check()
    monkeypatch.delenv("WORLD_SIZE")
    page = tmp_path / "page.md"
    page.write_text("no block here\n")
    assert main(["compare", "--models", "mnist-ddpm", "--tasks", "sr4", "--methods", "identity", "--limit", "2", "--device", "cpu",
                 "--out", str(tmp_path / "d"), "--write-docs", str(page), "--block", "NOPE"]) == 2
    assert "--write-docs" in capsys.readouterr().err and not (tmp_path / "d").exists()  # refused before the run


def test_records_of_other_shipped_weights_are_not_reused(monkeypatch):
    """A shipped model retrained in a new release has another digest, so another settings hash."""
    from constrained_diffusion.evaluation import methods
    from constrained_diffusion.evaluation.config import EvaluationConfig

    cfg = EvaluationConfig(model="mnist-ddpm", data="mnist-test", task="top-half", method="identity", out="o")
    before = methods.resolve_methods(cfg, (1, 32, 32), "")[0][0].settings
    assert methods.shipped_weights("mnist-ddpm").startswith("sha256:") and methods.shipped_weights("org/model") == ""
    monkeypatch.setattr(methods, "shipped_weights", lambda model: "sha256:retrained")
    assert methods.resolve_methods(cfg, (1, 32, 32), "")[0][0].settings != before


def test_the_runner_and_task_names_of_0_1_still_import_with_a_warning():
    import constrained_diffusion.evaluation as evaluation

    for name in ("Settings", "evaluate", "summarise", "make_constraint", "TASKS", "precision_context"):
        with pytest.warns(DeprecationWarning, match=f"evaluation.{name} is deprecated since 0.2"):
            assert callable(getattr(evaluation, name)) or name == "TASKS"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        evaluation.nothing  # noqa: B018


def test_eigvec_rows_on_a_tiny_model(tiny_mnist):
    model = tiny_mnist
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = eigvec_rows(model, images, [900, 100], samples=2, k=4, log=lambda _: None)
    assert [r["t"] for r in rows] == [900.0, 100.0]
    for r in rows:
        # ||J - J^T|| / ||J|| lies in [0, 2]; a random UNet's J is not symmetric, so it is not 0
        assert 0 <= r["same_top-k"] <= 1 and 0 <= r["random_all"] <= 1 and 0 < r["asymmetry"] <= 2
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


def test_compare_cli_refuses_two_precisions(capsys):
    from constrained_diffusion.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--emulate-tf32", "--no-tf32", "--limit", "1"])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


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

    model = cd.GaussianDenoiser.smooth((1, 4, 4), length_scale=1.5)  # float32 on purpose (gaussian4 is float64): the default dtype
    a, _ = unconditional_samples(model, 5, steps=3, batch_size=2, seed=1)
    b, seconds = unconditional_samples(model, 5, steps=3, batch_size=5, seed=1)
    c, _ = unconditional_samples(model, 5, steps=3, batch_size=5, seed=2)
    assert a.shape == (5, 1, 4, 4) and torch.allclose(a, b, atol=1e-6) and not torch.allclose(b, c) and seconds > 0
    assert float(a.abs().max()) <= 1.0
