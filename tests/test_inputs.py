"""Inputs read right or refused (issue 22): image modes and bit depths, lazy folders, finite-difference steps,
overflowing observations, empty batches, ``--arg`` parsing."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from constrained_diffusion.data.images import ImageFolder, open_images


def _png16(path: Path, arr: np.ndarray) -> Path:
    """Write ``(H, W)`` or ``(H, W, C)`` uint16 as a 16-bit PNG (PIL writes 16-bit grey but not 16-bit RGB)."""
    if arr.ndim == 2:
        Image.fromarray(arr).save(path)
        return path
    H, W, C = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[C]
    raw = arr.astype(">u2").reshape(H, -1)
    scanlines = b"".join(b"\x00" + row.tobytes() for row in raw)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", W, H, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_png_round_trips_within_one_level(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 65536, size=(16, 16) if channels == 1 else (16, 16, 3), dtype=np.uint16)
    folder = tmp_path / "images"
    folder.mkdir()
    _png16(folder / "a.png", truth)
    x = ImageFolder(folder, (channels, 16, 16)).load(0)  # (C, H, W) in [-1, 1]
    expected = torch.from_numpy(truth.astype(np.float64) / 65535.0).float()
    expected = expected[None] if channels == 1 else expected.permute(2, 0, 1)
    got = (x + 1) / 2
    assert float((got - expected).abs().max()) <= 1 / 255
    if channels == 1:  # grey 16-bit is read at full precision
        assert float((got - expected).abs().max()) < 1e-6


def test_16bit_grey_feeds_an_rgb_model_and_a_mask(tmp_path: Path) -> None:
    from constrained_diffusion.constraints.masks import load_mask_png

    truth = np.full((8, 8), 30000, dtype=np.uint16)
    path = _png16(tmp_path / "m.png", truth)
    x = open_images(path, (3, 8, 8)).load(0)
    assert torch.allclose((x + 1) / 2, torch.full((3, 8, 8), 30000 / 65535), atol=1e-6)
    assert torch.allclose(load_mask_png(str(path)), torch.full((1, 1, 8, 8), 30000 / 65535), atol=1e-6)


def _modes() -> list[tuple[str, Image.Image, float]]:
    """(name, image, expected grey value in [0, 1]) for a flat image of every mode."""
    rgb = Image.new("RGB", (4, 4), (100, 150, 200))
    luma = (100 * 299 + 150 * 587 + 200 * 114) / 1000 / 255
    half_alpha = Image.new("RGBA", (4, 4), (0, 0, 0, 128))  # black at alpha 128/255 over white
    return [
        ("1", Image.new("1", (4, 4), 1), 1.0),
        ("L", Image.new("L", (4, 4), 51), 51 / 255),
        ("P", rgb.convert("P"), None),
        ("RGB", rgb, luma),
        ("RGBA opaque", rgb.convert("RGBA"), luma),
        ("RGBA half", half_alpha, 1 - 128 / 255),
        ("LA transparent", Image.new("LA", (4, 4), (0, 0)), 1.0),
        ("CMYK", rgb.convert("CMYK"), luma),
        ("I;16B", Image.new("I;16B", (4, 4), 40000), 40000 / 65535),
        ("I", Image.new("I", (4, 4), 40000), 40000 / 65535),
        ("F", Image.new("F", (4, 4), 0.25), 0.25),
    ]


@pytest.mark.parametrize("name,img,grey", _modes(), ids=[m[0] for m in _modes()])
def test_every_mode_is_scaled_by_its_range(name: str, img: Image.Image, grey: float | None) -> None:
    from constrained_diffusion.utils.images import pil_to_tensor

    x = pil_to_tensor(img, 1)
    assert x.shape == (1, 4, 4) and x.dtype == torch.float32
    if grey is None:  # palette: whatever the palette holds, as its RGB would read
        grey = float(pil_to_tensor(img.convert("RGB"), 1)[0, 0, 0])
    assert torch.allclose(x, torch.full_like(x, grey), atol=1.5 / 255), (name, float(x[0, 0, 0]), grey)
    assert pil_to_tensor(img, 3).shape == (3, 4, 4)


def test_out_of_range_int_and_float_images_are_refused() -> None:
    from constrained_diffusion.utils.images import pil_to_tensor

    with pytest.raises(ValueError, match="mode 'I'"):
        pil_to_tensor(Image.new("I", (2, 2), 70000), 1)
    with pytest.raises(ValueError, match="mode 'F'"):
        pil_to_tensor(Image.new("F", (2, 2), 3.0), 1)


def test_8bit_reading_is_unchanged() -> None:
    """The 8-bit path gives the same float32 bits as before (``v / 127.5 - 1``)."""
    from constrained_diffusion.utils.images import pil_to_tensor

    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = pil_to_tensor(Image.fromarray(arr), 1, (-1.0, 1.0))
    assert torch.equal(x[0], torch.from_numpy(arr).float() / 127.5 - 1.0)


# ---------------------------------------------------------------------------------------------
# A finite-difference step below the rounding floor of the model's dtype


def _gaussian_inpainting(model):
    """Left-half inpainting of two draws from ``model``'s prior (seed 0), in the model's dtype."""
    import constrained_diffusion as cd

    truth = model.sample_prior(2, torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8, dtype=model.dtype)
    mask[..., :4] = 1
    return model, cd.Inpainting(truth, mask)


@pytest.mark.parametrize("solver", ["inexact-newton", "secant-newton", "exact-newton"])
def test_h_below_the_float32_rounding_floor_is_refused_before_sampling(gaussian32, solver: str) -> None:
    import constrained_diffusion as cd

    model, constraint = _gaussian_inpainting(gaussian32)
    sampler = cd.ConstrainedSampler(model, cd.solvers.get(solver, h=1e-12), steps=3, inner_steps=2)
    nfe = model.nfe
    with pytest.raises(ValueError, match=r"h=1e-12 is below the rounding floor 5\.96e-08 of torch\.float32"):
        sampler.sample(constraint, generator=torch.Generator().manual_seed(0), progress=False)
    assert model.nfe == nfe  # refused before any network call


def test_h_near_the_floor_is_warned_and_float64_takes_it(gaussian32) -> None:
    import constrained_diffusion as cd

    model, constraint = _gaussian_inpainting(gaussian32)
    sampler = cd.ConstrainedSampler(model, cd.InexactNewton(h=5e-7), steps=2, inner_steps=1)
    with pytest.warns(UserWarning, match=r"h=5e-07 is within 20x of the rounding floor 5\.96e-08 of torch\.float32 arithmetic: .* about 24 % rounding error"):
        sampler.sample(constraint, generator=torch.Generator().manual_seed(0), progress=False)
    # the same prior built in float64 (the dtype is the point): float64's floor is 2.2e-16, so 1e-12 is a valid step there
    model64, constraint64 = _gaussian_inpainting(cd.GaussianDenoiser.smooth((1, 8, 8), dtype=torch.float64))
    cd.ConstrainedSampler(model64, cd.InexactNewton(h=1e-12), steps=2, inner_steps=1).sample(
        constraint64, generator=torch.Generator().manual_seed(0), progress=False)


def test_rounding_floor_follows_the_precision_rule() -> None:
    from constrained_diffusion.linalg.finite_difference import check_h, default_h, rounding_floor, unit_roundoff

    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        assert rounding_floor(dtype) == unit_roundoff(dtype)
        check_h(float(default_h(dtype)), dtype)  # the precision-aware default is never refused nor warned about
    assert rounding_floor(torch.float32, tf32=True) == 2.0**-11
    with pytest.warns(UserWarning, match=r"h=0\.005 is within 20x of the rounding floor 0\.00391 of torch\.bfloat16"):
        check_h(0.005, torch.bfloat16)  # the paper's float32 step is under one bfloat16 ulp of 1: warned, still allowed
    with pytest.raises(ValueError, match=r"h=0\.001 is below the rounding floor 0\.00391 of torch\.bfloat16"):
        check_h(0.001, torch.bfloat16)


def test_encoded_constraint_refuses_h_below_the_floor() -> None:
    import constrained_diffusion as cd

    class Codec:  # float32 identity "VAE"
        dtype = torch.float32

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return z

    pixel = cd.Inpainting(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
    encoded = cd.constraints.EncodedConstraint(pixel, Codec(), h=1e-12)
    with pytest.raises(ValueError, match=r"h=1e-12 is below the rounding floor"):
        encoded.validate((1, 4, 4))
    with pytest.raises(ValueError, match=r"h=1e-12 is below the rounding floor"):  # a codec that does not tell its dtype: at the first error
        cd.constraints.EncodedConstraint(pixel, type("C", (), {"encode": Codec.encode, "decode": Codec.decode})(), h=1e-12).error(
            torch.ones(1, 1, 4, 4))


# ---------------------------------------------------------------------------------------------
# Empty batches and observations whose residual overflows


@pytest.mark.parametrize("what", ["x_T", "generator", "constraint", "labels"])
def test_an_empty_batch_is_a_one_line_error_naming_it(gaussian32, what: str) -> None:
    import constrained_diffusion as cd

    model, constraint = _gaussian_inpainting(gaussian32)
    sampler = cd.ConstrainedSampler(model, cd.InexactNewton(), steps=2, inner_steps=1)
    with pytest.raises(ValueError, match=r"empty batch") as info:
        if what == "x_T":
            sampler.sample(x_T=torch.zeros(0, 1, 8, 8), progress=False)
        elif what == "generator":
            sampler.sample(constraint, generator=[], progress=False)
        elif what == "constraint":
            sampler.sample(cd.Inpainting(torch.zeros(0, 1, 8, 8), torch.ones(1, 1, 8, 8)), progress=False)
        else:
            cd.ClassGuidance(torch.nn.Identity(), [])
    assert what.replace("constraint", "y") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        sampler.sample(batch_size=0, progress=False)


@pytest.mark.parametrize("scale", [1e30, 1e20])
def test_an_observation_whose_residual_overflows_is_refused(scale: float) -> None:
    import constrained_diffusion as cd

    y = torch.full((2, 1, 8, 8), scale)
    with pytest.raises(ValueError, match=r"y: the residual \|\|y - A x0\|\| of sample 0 overflows torch.float32"):
        cd.Inpainting(y, torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"y: the residual .* overflows"):
        cd.SuperResolution(torch.full((1, 1, 4, 4), scale), factor=2)
    cd.Inpainting(y.double(), torch.ones(1, 1, 8, 8, dtype=torch.float64))  # float64 holds 1e60: its residual is finite
    cd.Inpainting(torch.full((2, 1, 8, 8), 1e15), torch.ones(1, 1, 8, 8))  # large but finite


# ---------------------------------------------------------------------------------------------
# `sample --arg` values that do not parse


@pytest.mark.parametrize("args,needle", [
    (["--constraint", "mnist-class", "--arg", "label=abc"],
     "--arg label: constraint 'mnist-class' expects int | Sequence[int] | Tensor, got the text 'abc'"),
    (["--constraint", "mnist-class", "--arg", "label=2.5"], "--arg label: constraint 'mnist-class' expects int | Sequence[int] | Tensor, got float 2.5"),
    (["--constraint", "mnist-class", "--arg", "lable=3"], "--arg lable: constraint 'mnist-class' takes label"),
    (["--constraint", "super-resolution", "--arg", "y=@digit", "--arg", "factor=two"], "--arg factor: constraint 'super-resolution' expects int"),
    (["--constraint", "super-resolution", "--arg", "y=@digit"], "--arg: constraint 'super-resolution' needs factor=..."),
    (["--constraint", "super-resolution", "--arg", "y=@digit", "--arg", "factor=2", "--arg", "kernel=cubic"],
     "--arg kernel: constraint 'super-resolution' expects Literal['bicubic', 'box'], got the text 'cubic'"),
])
def test_sample_arg_values_that_do_not_fit_name_the_argument_and_type(args: list[str], needle: str,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from constrained_diffusion.cli.main import main

    assert main(["sample", *args, "--model", "gaussian", "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------------------------------------
# Image folders are listed, not decoded, up front


def test_an_image_folder_is_listed_not_decoded_until_a_batch_needs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import PIL.Image

    from constrained_diffusion.data.images import load_available

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i:02d}.png")
    (folder / "05.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")  # corrupt: reported when reached
    opened: list[str] = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: (opened.append(Path(fp).name), real_open(fp, *a, **k))[1])
    lines: list[str] = []
    images = open_images(folder, (3, 8, 8), report=lines.append)
    assert len(images) == 12 and opened == [] and not lines  # listed: nothing decoded
    x, kept = load_available(images, images.ids[:3])  # a --limit 3 run decodes exactly 3
    assert opened == ["00.png", "01.png", "02.png"] and kept == ["00.png", "01.png", "02.png"] and x.shape == (3, 3, 8, 8)
    x, kept = load_available(images, images.ids[4:7])
    assert kept == ["04.png", "06.png"] and x.shape == (2, 3, 8, 8)
    assert [s.id for s in images.skipped] == ["05.png"] and len(lines) == 1 and "05.png" in lines[0]
    assert len(opened) == 6


# ---------------------------------------------------------------------------------------------
# analyze batch-dependence


def test_analyze_batch_dependence_measures_and_writes_the_docs_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from constrained_diffusion.cli.main import main

    page = tmp_path / "determinism.md"
    page.write_text("before\n<!-- BATCH-DEPENDENCE:START -->\nold\n<!-- BATCH-DEPENDENCE:END -->\nafter\n")
    assert main(["analyze", "batch-dependence", "--digits", "2", "--steps", "2", "--inner-steps", "1", "--batch", "2",
                 "--methods", "inexact-newton", "paired", "--write-docs", str(page)]) == 0
    out = capsys.readouterr().out
    text = page.read_text()
    assert "old" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "constrained-diffusion analyze batch-dependence --digits 2 --steps 2 --inner-steps 1 --batch 2" in text
    rows = {line.split("|")[1].strip(): line.split("|") for line in text.splitlines() if line.startswith("| ")}
    assert {"inexact-newton", "inexact-newton (paired forwards)"} <= set(rows)
    for name in ("inexact-newton", "inexact-newton (paired forwards)"):
        # measured maxima of |batch 1 - batch 2|: pixels in [-1, 1] differ by at most 2; a PSNR difference is finite
        assert 0.0 <= float(rows[name][3]) <= 2.0 and 0.0 <= float(rows[name][4]) < math.inf
    assert rows["inexact-newton"][6].strip() == rows["inexact-newton (paired forwards)"][6].strip()  # the same NFE
    assert "Inexact Newton's own sensitivity" in out and "Inexact Newton's own sensitivity" in text


def test_batch_dependence_is_zero_at_equal_batch() -> None:
    """At batch 1 against batch 1 nothing changes: the measurement itself adds no difference."""
    import constrained_diffusion as cd
    from constrained_diffusion.analysis.batch_dependence import batch_dependence

    rows, _ = batch_dependence(cd.MNISTDenoiser.pretrained("ddpm"), digits=2, steps=2, inner_steps=1, batch=1,
                               methods=("inexact-newton",), perturbation=0.0)
    assert rows[0].max_pixel == 0.0 and rows[0].max_psnr == 0.0
