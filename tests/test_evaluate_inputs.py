"""The harness's inputs: image folders, tasks and their seeds, and every bad input stopped before sampling."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from constrained_diffusion.cli.main import main
from constrained_diffusion.data.images import ImageFolder, load_available, open_images
from constrained_diffusion.evaluation.image_tasks import image_seed, make_problem


def _write(path: Path, size: tuple[int, int], color: tuple[int, int, int], fmt: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    for x in range(size[0] // 2):  # a left stripe, to see the crop
        for y in range(size[1]):
            img.putpixel((x, y), (0, 0, 0))
    img.save(path, format=fmt)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "imgs"
    _write(root / "a.png", (40, 40), (255, 255, 255))
    _write(root / "sub" / "b.jpg", (64, 40), (255, 0, 0))
    _write(root / "sub" / "deeper" / "c.webp", (40, 80), (0, 255, 0), "WEBP")
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_is_recursive_sorted_and_resized(folder):
    images = ImageFolder(folder, (3, 32, 32))
    assert images.ids == ["a.png", "sub/b.jpg", "sub/deeper/c.webp"] and not images.skipped
    for i in range(3):
        x = images.load(i)
        assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1
    wide = images.load(1)  # 64x40 red with a black left half: the centre crop keeps 40x40, half black
    assert float(wide[0, :, -1].mean()) > 0.9 and float(wide[0, :, 0].mean()) < -0.9
    grey = ImageFolder(folder, (1, 16, 16)).load(0)
    assert grey.shape == (1, 16, 16)


def test_a_corrupt_file_is_reported_and_skipped(folder):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    lines: list[str] = []
    images = ImageFolder(folder, (3, 32, 32), report=lines.append, check=True)  # decoded up front on request
    assert "broken.png" not in images.ids and [s.id for s in images.skipped] == ["broken.png"]
    assert len(lines) == 1 and "skipped" in lines[0] and "broken.png" in lines[0]
    lines.clear()
    lazy = ImageFolder(folder, (3, 32, 32), report=lines.append)  # the default: reported and skipped when reached
    assert "broken.png" in lazy.ids and not lazy.skipped and not lines
    x, kept = load_available(lazy, lazy.ids)
    assert kept == ["a.png", "sub/b.jpg", "sub/deeper/c.webp"] and x.shape == (3, 3, 32, 32)
    assert [s.id for s in lazy.skipped] == ["broken.png"] and len(lines) == 1 and "broken.png" in lines[0]
    load_available(lazy, lazy.ids)  # reported once
    assert len(lines) == 1


def test_a_small_image_and_an_empty_folder_are_errors(folder, tmp_path):
    _write(folder / "tiny.png", (20, 20), (1, 2, 3))
    with pytest.raises(ValueError, match="tiny.png is 20x20 pixels, smaller than the model's resolution 32x32"):
        ImageFolder(folder, (3, 32, 32), check=True)
    lazy = ImageFolder(folder, (3, 32, 32))
    with pytest.raises(ValueError, match="tiny.png is 20x20 pixels, smaller than the model's resolution 32x32"):
        lazy.load(lazy.ids.index("tiny.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no readable image"):
        open_images(tmp_path / "empty", (3, 32, 32))
    with pytest.raises(ValueError, match="unknown image set"):
        open_images("mnist-val", (1, 32, 32))


def test_mnist_sets_are_views_of_the_held_out_digits():
    from constrained_diffusion.data import mnist

    held = open_images("mnist-held-out", (1, 32, 32))
    assert len(held) == 500 and torch.equal(held.load(3), mnist("held-out")[0][3])
    views = {name: open_images(f"mnist-{name}", (1, 32, 32)) for name in ("validation", "test")}
    val, test = views["validation"], views["test"]
    assert len(val) == len(test) == 250
    assert set(val.ids).isdisjoint(test.ids) and sorted(val.ids + test.ids) == held.ids
    for view in (val, test):  # a digit is the same image under its id in every view
        for k in (0, 17, 249):
            assert torch.equal(view.load(k), held.load(int(view.ids[k])))


def test_validation_and_test_are_disjoint_stratified_and_seeded():
    from constrained_diffusion.data import mnist

    (xv, yv), (xt, yt) = mnist("validation"), mnist("test")
    assert torch.bincount(yv).tolist() == [25] * 10 and torch.bincount(yt).tolist() == [25] * 10
    flat_v, flat_t = {tuple(x.flatten().tolist()) for x in xv}, {tuple(x.flatten().tolist()) for x in xt}
    assert flat_v.isdisjoint(flat_t)  # no digit image is in both halves
    xh, _ = mnist("held-out")
    assert flat_v | flat_t == {tuple(x.flatten().tolist()) for x in xh}  # together they are the held-out digits
    assert torch.equal(mnist("validation")[0], xv)  # the same split on every call
    with pytest.raises(ValueError, match="split must be one of"):
        mnist("valid")


@pytest.mark.parametrize("task", ["box", "top-half", "random-box", "free-form", "sr4", "sr8"])
def test_tasks_hold_for_the_truth_and_depend_only_on_the_image_id(task):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ids = ["a", "b", "c", "d"]
    p = make_problem(task, x, ids, seed=1)
    assert float(p.constraint.residual(x).max()) < 1e-5 and float(p.constraint.residual(torch.zeros_like(x)).min()) > 0.1
    part = make_problem(task, x[[2, 0]], ["c", "a"], seed=1)  # another batch, another order: same observation
    assert torch.allclose(part.observation, p.observation[[2, 0]], atol=1e-6)
    if task in ("box", "random-box"):
        assert float((p.constraint.mask == 0).float().mean()) == pytest.approx(0.25)
    if task == "random-box":
        assert not torch.equal(p.constraint.mask[0], p.constraint.mask[1])  # seeded per image
    if task == "free-form":
        holes = (p.constraint.mask == 0).float().mean(dim=(1, 2, 3))
        assert bool(((holes > 0.1) & (holes < 0.55)).all())
    if task == "sr8":
        assert p.constraint.y.shape == (4, 3, 4, 4)


@given(sigma=st.floats(0.01, 1.0), seed=st.integers(0, 2**31))
def test_measurement_noise_is_seeded_per_image_and_scaled(sigma, seed):
    x = torch.zeros(2, 1, 16, 16)
    a = make_problem("box", x, ["p", "q"], seed=seed, noise_std=sigma).constraint
    b = make_problem("box", x[1:], ["q"], seed=seed, noise_std=sigma).constraint
    assert torch.equal(a.image[1:], b.image)
    noise = a.image / sigma
    assert 0.6 < float(noise.std()) < 1.4  # N(0, 1) noise times sigma


def test_image_seed_separates_streams_and_runs():
    seeds = {image_seed(s, i, k) for s in (0, 1) for i in ("x", "y") for k in ("noise", "mask")}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)


def _eval(tmp_path, *extra: str) -> list[str]:
    return ["evaluate", "--model", "mnist-ddpm", "--data", "mnist-test", "--task", "box", "--method", "inexact-newton",
            "--limit", "2", "--steps", "1", "--out", str(tmp_path / "out"), "--quiet", *extra]


@pytest.mark.parametrize("change, needle", [
    (["--task", "boxx"], "--task: unknown task 'boxx'"),
    (["--method", "newtonian"], "--method: unknown method 'newtonian'"),
    (["--metrics", "psnr", "bleu"], "--metrics: unknown metric 'bleu'"),
    (["--metrics", "lpips"], "--metrics lpips needs"),
    (["--metrics", "fid"], "--metrics fid needs"),
    (["--set", "lr=-1"], "--set for method 'inexact-newton'"),
    (["--set", "nonsense"], "--set must be KEY=VALUE"),
    (["--set", "dps:steps=3"], "no method is labelled 'dps'"),
    (["--set", "task.size=3"], "--set task.size: task 'box' takes no options"),
    (["--task", "style"], "--style-image"),
    (["--task", "free-form", "--set", "task.hole_ratio=[0.5,0.2]"], "task.hole_ratio"),
    (["--task", "inpainting", "--noise-std", "0.1"], "--noise-std: task 'inpainting' has no observation"),
    (["--data", "mnist-valid"], "--data: unknown image set"),
    (["--model", "mnist-classifier"], "--model: 'mnist-classifier' is not a diffusion or flow model"),
    (["--fid-features", "nowhere:Thing", "--metrics", "fid"], "--fid-features: cannot import"),
    (["--dtype", "float8"], "unknown dtype 'float8'"),
])
def test_bad_input_is_one_line_before_any_sampling(tmp_path, capsys, change, needle):
    argv = _eval(tmp_path)
    for flag in change[::2]:  # replace the flag given by the test
        if flag in argv and flag not in ("--method", "--set", "--metrics"):
            i = argv.index(flag)
            del argv[i:i + 2]
    if "--method" in change and change[change.index("--method") + 1] != "inexact-newton":
        i = argv.index("--method")
        del argv[i:i + 2]
    assert main([*argv, *change]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_bad_files_are_one_line_errors(tmp_path, capsys, folder):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    cases = [
        (["--data", str(bad)], "--data: cannot read image"),
        (["--data", str(tmp_path / "missing")], "--data:"),
        (["--prompts", str(tmp_path / "none.json")], "--prompts:"),
        (["--config", str(tmp_path / "none.yaml")], "--config:"),
    ]
    small = tmp_path / "small"
    _write(small / "x.png", (20, 20), (9, 9, 9))
    cases.append((["--data", str(small)], "smaller than the model's resolution"))
    prompts = tmp_path / "p.json"
    prompts.write_text('{"00000": "a digit"}')
    cases.append((["--prompts", str(prompts)], "--prompts: " + str(prompts) + " has no caption for 1 of the 2 images"))
    for change, needle in cases:
        argv = _eval(tmp_path)
        if change[0] == "--data":
            i = argv.index("--data")
            del argv[i:i + 2]
        assert main([*argv, *change]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, (change, err)
    assert not (tmp_path / "out" / "records.jsonl").exists()
    with pytest.raises(SystemExit):
        main([*_eval(tmp_path), "--noise-std", "-0.1"])
    assert "--noise-std: expected a number >= 0, got -0.1" in capsys.readouterr().err


def test_required_fields_and_the_config_file(tmp_path, capsys):
    assert main(["evaluate", "--model", "mnist-ddpm", "--out", str(tmp_path)]) == 2
    assert "--data is required" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mnist-ddpm\ndata: mnist-test\ntask: box\nmethod: [inexact-newton, {name: dps, label: DPS, set: {steps: 3}}]\n"
                   "set: {eta: 0.5}\nlimit: 2\nbogus: 1\n")
    assert main(["evaluate", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "unknown field 'bogus'" in capsys.readouterr().err
    from constrained_diffusion.cli.evaluate import options
    from constrained_diffusion.cli.main import build_parser
    from constrained_diffusion.evaluation.harness import Evaluation

    cfg.write_text(cfg.read_text().replace("bogus: 1\n", ""))
    args = build_parser().parse_args(["evaluate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--limit", "1",
                                      "--set", "DPS:lr=0.5"])
    (opts,) = options(args)
    assert opts["limit"] == 1 and opts["task"] == "box"  # the flag wins over the file
    run = Evaluation(**opts)
    methods, _ = run._methods((1, 32, 32), "")
    assert [m.label for m in methods] == ["inexact-newton", "DPS"]
    assert methods[1].recipe.config.steps == 3 and methods[1].recipe.config.eta == 0.5 and methods[1].recipe.config.lr == 0.5
    assert methods[0].recipe.config.eta == 0.5 and methods[0].recipe.config.lr != 0.5 and methods[0].settings != methods[1].settings


def test_a_local_hugging_face_image_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    imgs = [Image.new("RGB", (40, 36), (10 * k, 0, 0)) for k in range(3)]
    ds = datasets.Dataset.from_dict({"image": imgs, "file_name": ["a", "b", "c"]}).cast_column("image", datasets.Image())
    datasets.DatasetDict({"train": ds, "test": ds.select([2, 0])}).save_to_disk(str(tmp_path / "hf"))
    images = open_images(tmp_path / "hf", (3, 32, 32))
    assert images.ids == ["c", "a"] and images.load(0).shape == (3, 32, 32)
    assert float(images.load(0)[0].mean()) == pytest.approx(20 / 127.5 - 1, abs=1e-3)


def test_compare_tasks_are_harness_tasks_and_mnist_free_form_is_seeded_by_position():
    """One task module: compare's box/free-form/sr4 are top-half/mnist-free-form/sr4 of image_tasks, mask for mask."""
    from constrained_diffusion.constraints.masks import free_form_mask

    with pytest.warns(DeprecationWarning, match="evaluation.tasks is deprecated"):
        import constrained_diffusion.evaluation.tasks as old_tasks  # compare's task names of 0.1

        importlib.reload(old_tasks)  # (warns on every reload, as on the first import)
    HARNESS_TASK, make_constraint = old_tasks.HARNESS_TASK, old_tasks.make_constraint

    x = torch.rand(3, 1, 32, 32) * 2 - 1
    strokes = make_problem("mnist-free-form", x, ["00007", "00008", "00009"], seed=2).constraint.mask
    for k, i in enumerate((7, 8, 9)):  # digit i's strokes: 30% of the image from seed * 100003 + i, whatever its batch
        assert torch.equal(strokes[k:k + 1], free_form_mask((32, 32), 0.3, torch.Generator().manual_seed(2 * 100_003 + i)))
    assert torch.equal(make_constraint("free-form", x, first_index=7, seed=2).mask, strokes)
    top = make_constraint("box", x).mask
    assert torch.equal(top, make_problem(HARNESS_TASK["box"], x, ["0", "1", "2"]).constraint.mask)
    assert top[:, :, :16].eq(0).all() and top[:, :, 16:].eq(1).all()  # the top half, not the harness's centred box
    assert not torch.equal(top, make_problem("box", x, ["0", "1", "2"]).constraint.mask)
    with pytest.raises(ValueError, match="held-out positions"):
        make_problem("mnist-free-form", x, ["a.png", "b.png", "c.png"])
