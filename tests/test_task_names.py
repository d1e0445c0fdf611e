"""One meaning per task name: the MNIST tools build `image_tasks` problems; ``box``/``free-form`` warn once."""

from __future__ import annotations

import argparse
import json
import warnings

import pytest
import torch

from constrained_diffusion.evaluation import task_names
from constrained_diffusion.evaluation.image_tasks import make_problem


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that has warned about no name yet."""
    monkeypatch.setattr(task_names, "_warned", set())


def _old_constraint(task: str, images: torch.Tensor, first_index: int = 0, seed: int = 0):
    """``tasks.make_constraint`` with the name the MNIST tools gave before 0.2 (the module is deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        from constrained_diffusion.evaluation.tasks import make_constraint

        return make_constraint(task, images, first_index=first_index, seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("old, new", [("box", "top-half"), ("free-form", "mnist-free-form")])
def test_an_old_name_keeps_its_new_meaning_and_warns_once(fresh, old, new):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert task_names.renamed_task(old, "--task") == old  # one meaning per name: the image_tasks task
        assert task_names.renamed_task(old, "task=") == old  # a command passing it on to a function: no second warning
        assert task_names.renamed_task(new, "--task") == new
    assert [w.category for w in caught] == [FutureWarning]
    message = str(caught[0].message)
    assert message.startswith(f"--task {old}: since 0.2 {old!r}") and message.endswith(f"before is {new!r}")


def test_sample_and_the_studies_warn_about_an_old_name(fresh, tmp_path):
    from constrained_diffusion.cli.main import main

    with pytest.warns(FutureWarning, match="--task free-form: since 0.2 'free-form' is"):
        assert main(["sample", "--model", "gaussian", "--task", "free-form", "--steps", "1", "--inner-steps", "1", "--quiet",
                     "--out", str(tmp_path / "s.png")]) == 0
    from constrained_diffusion.default_model import default_denoiser
    from constrained_diffusion.evaluation.adaptive import Setting, run_study

    model = default_denoiser()
    with pytest.warns(FutureWarning, match="task= box: since 0.2 'box' is the centred box"):
        records = run_study(model, model.sample_prior(1, torch.Generator().manual_seed(0)).float(), tmp_path / "a.jsonl",
                            (Setting("K=1", 1),), task="box", steps=1, progress=False)
    assert [r["task"] for r in records] == ["box"]
    with pytest.raises(ValueError, match="task: unknown 'sr8'"):
        run_study(model, torch.zeros(1, 1, 8, 8), tmp_path / "a.jsonl", task="sr8", progress=False)


def test_the_task_option_takes_the_mnist_tasks_and_names_them_in_its_help(capsys):
    from constrained_diffusion.cli.main import main
    from constrained_diffusion.cli.task_option import TASK_HELP

    assert all(name in TASK_HELP.replace(",", " ").split() for name in task_names.MNIST_TASKS)
    for argv in (["sample", "--task", "sr8"], ["analyze", "secant", "--tasks", "sr4", "style"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "expected one of top-half, box, random-box, mnist-free-form, free-form, sr4" in capsys.readouterr().err


@pytest.mark.parametrize("old, new", [("box", "top-half"), ("free-form", "mnist-free-form"), ("sr4", "sr4")])
@pytest.mark.parametrize("digit", [0, 3, 7])
def test_sample_builds_bit_for_bit_the_constraint_the_old_name_built(old, new, digit):
    """``sample --task NEW --digit i`` meets exactly the constraint ``--task OLD --digit i`` met before 0.2."""
    from constrained_diffusion.cli.sample import _constraint
    from constrained_diffusion.data.mnist import demo_digits

    image = demo_digits()[0][digit:digit + 1]
    constraint, what = _constraint(argparse.Namespace(task=new, digit=digit), image)
    before = _old_constraint(old, image, first_index=digit)
    assert what == f"task {new}" and type(constraint) is type(before)
    if new == "sr4":
        assert torch.equal(constraint.y, before.y)
    else:
        assert torch.equal(constraint.mask, before.mask) and torch.equal(constraint.image, before.image)
        assert not bool(constraint.mask.all())  # a real hole


@pytest.mark.parametrize("seed", [0, 2])
def test_the_studies_ids_give_the_old_masks_batched_or_spread(seed):
    """Batch dependence (contiguous positions, any batching) and secant (spread indices) get the masks they had."""
    from constrained_diffusion.constraints.masks import free_form_mask

    images = torch.zeros(6, 1, 32, 32)
    whole = make_problem("mnist-free-form", images, [str(5 + i) for i in range(6)], seed).constraint
    assert torch.equal(whole.mask, _old_constraint("free-form", images, first_index=5, seed=seed).mask)
    part = make_problem("mnist-free-form", images[2:4], ["7", "8"], seed).constraint
    assert torch.equal(part.mask, whole.mask[2:4])
    spread = [0, 250, 499]  # secant's indices: its own copy of the stroke rule before 0.2
    old = torch.cat([free_form_mask((32, 32), 0.3, torch.Generator().manual_seed(seed * 100_003 + i)) for i in spread])
    assert torch.equal(make_problem("mnist-free-form", images[:3], [str(i) for i in spread], seed).constraint.mask, old)
    top = make_problem("top-half", images, [str(i) for i in range(6)], seed).constraint.mask
    assert torch.equal(top, _old_constraint("box", images, seed=seed).mask)
    assert not torch.equal(top, make_problem("box", images, [str(i) for i in range(6)], seed).constraint.mask)


def test_a_record_written_before_the_rename_serves_the_new_name_only(tmp_path):
    from constrained_diffusion.evaluation.adaptive import KEY_FIELDS, study_store

    path = tmp_path / "study.jsonl"
    old = {"model": "ddpm x", "task": "box", "steps": 20, "solver": "inexact-newton", "seed": 0, "device": "cpu",
           "setting": "K=1", "options": "{}", "digit": 0, "psnr": 17.5}
    path.write_text(json.dumps(old) + "\n")  # as adaptive wrote it before 0.2: no task_names, 'box' = the top half
    store = study_store(path)
    key = {f: old[f] for f in KEY_FIELDS if f in old}
    assert task_names.find_record(store, {**key, "task": "top-half"}) == {**old, "task": "top-half"}
    assert task_names.find_record(store, key) is None  # the new 'box' (centred) is another task
    store.append({**task_names.stored_key(key), "psnr": 12.0})
    assert task_names.find_record(store, key)["psnr"] == 12.0
    assert task_names.find_record(study_store(path), {**key, "task": "top-half"})["psnr"] == 17.5
