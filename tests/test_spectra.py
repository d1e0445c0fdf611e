"""`analyze spectra` and `analyze fd-vs-backprop`: the Arnoldi estimates against exact spectra (analytic
models and the dense Jacobian of the shipped MNIST DDPM), the per-pixel products against the exact
Jacobian, and both commands end to end on tiny diffusers pipelines saved to disk (resume, errors)."""

from __future__ import annotations

import json
import math
import re
import shlex

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd
from constrained_diffusion.analysis.fd_backprop import FDBackprop, pixel_products, unit_probes
from constrained_diffusion.analysis.spectra import (
    Spectra,
    analysis_time,
    clean_sample,
    dense_spectra,
    jacobian_operators,
    load_denoiser,
    noised_state,
    ritz_values,
    spectra_table,
)
from constrained_diffusion.cli.main import build_parser, main
from constrained_diffusion.linalg.arnoldi import arnoldi
from tests.tiny_pipelines import tiny_flux, tiny_sd, tiny_sd3


def _largest(values: torch.Tensor) -> float:
    return float(values.abs().max())


# --- laws on analytic models -------------------------------------------------------------------
@given(n=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_the_first_n_steps_of_a_longer_run_are_an_n_step_run(n, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(16, 16, generator=g, dtype=torch.float64)
    v = torch.randn(1, 16, generator=g, dtype=torch.float64)
    long, short = arnoldi(lambda x: x @ A.T, v, 16), arnoldi(lambda x: x @ A.T, v, n)
    assert torch.allclose(ritz_values(long, n).abs(), ritz_values(short, n).abs(), atol=1e-8)


@given(t=st.integers(0, 999), jvp=st.sampled_from(["fd", "exact"]))
def test_arnoldi_recovers_the_exact_spectra_of_a_non_symmetric_linear_denoiser(skewed, t, jvp):
    """D = 64 steps span the whole space: the Ritz values are the eigenvalues of J, (J+J^T)/2, (J-J^T)/2."""
    x0 = skewed.sample_prior(1, torch.Generator().manual_seed(t))
    rows = Spectra(times=[t], iterations=[64], jvp=jvp).run(skewed, x0)
    J = skewed.jacobian(torch.tensor(t))
    exact = {"J": J, "sym": (J + J.T) / 2, "antisym": (J - J.T) / 2}
    for r in rows:
        assert r["abs_max"] == pytest.approx(_largest(torch.linalg.eigvals(exact[r["operator"]])), rel=1e-6, abs=1e-9)
    antisym = next(r for r in rows if r["operator"] == "antisym")
    assert abs(antisym["leading_real"]) < 1e-6 * antisym["abs_max"]  # a real antisymmetric matrix: +-i mu
    assert antisym["abs_max"] > 1e-3  # and this J is not symmetric


def test_the_symmetric_analytic_model_has_no_antisymmetric_part(gaussian):
    x0 = gaussian.sample_prior(1, torch.Generator().manual_seed(0))
    rows = {r["operator"]: r for r in Spectra(times=[700], iterations=[30], jvp="exact").run(gaussian, x0)}
    assert rows["antisym"]["abs_max"] < 1e-8
    assert rows["J"]["abs_max"] == pytest.approx(rows["sym"]["abs_max"], rel=1e-8)


def test_operators_are_the_products_of_the_exact_jacobian(skewed):
    t = torch.tensor(400)
    x_t = noised_state(skewed, skewed.sample_prior(1, torch.Generator().manual_seed(0)), t, 1)
    v = torch.randn(1, *skewed.sample_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, ops = jacobian_operators(skewed, x_t, t, jvp="exact")
    J = skewed.jacobian(t)
    for name, M in [("J", J), ("JT", J.T), ("sym", (J + J.T) / 2), ("antisym", (J - J.T) / 2)]:
        assert torch.allclose(ops[name](v).flatten(), M @ v.flatten(), atol=1e-10), name


def test_each_iteration_count_is_read_off_one_run_and_resumed(skewed, tmp_path):
    x0 = skewed.sample_prior(1, torch.Generator().manual_seed(0))
    path = tmp_path / "spectra.jsonl"
    first = Spectra(times=[900, 300], iterations=[5, 20], operators=["J"]).run(skewed, x0, path)
    assert [(r["t"], r["iterations"]) for r in first] == [(900, 5), (900, 20), (300, 5), (300, 20)]
    assert [r["products"] for r in first] == [5, 20, 5, 20]
    calls = skewed.nfe
    again = Spectra(times=[900, 300], iterations=[5, 20], operators=["J"]).run(skewed, x0, path)
    assert again == first and skewed.nfe == calls  # nothing recomputed
    more = Spectra(times=[900, 300], iterations=[5, 20, 30], operators=["J"]).run(skewed, x0, path)
    assert len(path.read_text().splitlines()) == 6 and [r["iterations"] for r in more] == [5, 20, 30] * 2


def test_bad_times_and_options_raise_before_any_network_call(skewed):
    x0 = skewed.sample_prior(1)
    skewed.reset_counters()
    for times, message in [([1000], r"\[0, 999\]"), ([10.5], "integer"), ([-1], r"\[0, 999\]")]:
        with pytest.raises(ValueError, match=message):
            Spectra(times=times).run(skewed, x0)
    flow = cd.models.load("mnist-flow")
    with pytest.raises(ValueError, match=r"\[0, 1000\]"):
        analysis_time(flow, 1200)
    assert float(analysis_time(flow, 250)) == 0.25
    with pytest.raises(Exception, match="iterations"):
        Spectra(iterations=[0])
    with pytest.raises(ValueError, match="pixel"):
        FDBackprop(pixel=(8, 0)).run(skewed, x0)
    assert skewed.nfe == 0


# --- per-pixel products ------------------------------------------------------------------------
def test_pixel_products_are_the_column_and_the_row_of_the_jacobian(skewed):
    t = torch.tensor(600)
    x_t = noised_state(skewed, skewed.sample_prior(1, torch.Generator().manual_seed(0)), t, 3)
    products, seconds = pixel_products(skewed, x_t, t, (2, 5))
    J, p = skewed.jacobian(t), 2 * 8 + 5
    assert torch.allclose(products["exact"].flatten(), J[:, p], atol=1e-10)
    assert torch.allclose(products["fd"].flatten(), J[:, p], atol=1e-7)
    assert torch.allclose(products["backprop"].flatten(), J[p, :], atol=1e-10)
    assert set(seconds) == {"fd", "exact", "backprop"}
    row = FDBackprop(times=[600], pixel=(2, 5)).run(skewed, skewed.sample_prior(1, torch.Generator().manual_seed(0)))[0]
    assert row["cos_fd_exact"] == pytest.approx(1.0, abs=1e-9)
    expected = float(torch.nn.functional.cosine_similarity(J[:, p], J[p, :], dim=0))
    assert row["cos_fd_backprop"] == pytest.approx(expected, abs=1e-6) and expected < 0.999
    assert len(row["maps"]["fd"]) == 8 and len(row["maps"]["fd"][0]) == 8


def test_unit_probes_hit_one_entry_per_channel():
    probes = unit_probes((3, 4, 5), (3, 4))
    assert probes.shape == (3, 3, 4, 5) and torch.equal(probes.sum(dim=(1, 2, 3)), torch.ones(3))
    assert all(probes[c, c, 3, 4] == 1 for c in range(3))


# --- the check on the shipped MNIST DDPM -------------------------------------------------------
@pytest.mark.slow
def test_arnoldi_estimates_match_the_dense_spectra_of_the_mnist_ddpm():
    """30 finite-difference Arnoldi steps against the eigenvalues of the dense 1024 x 1024 Jacobian, at t = 500."""
    model = cd.models.load("mnist-ddpm")
    x0, _ = clean_sample(model, digit=3)
    rows = Spectra(times=[500], iterations=[30], dense=True).run(model, x0)
    arnoldi_, dense = ({r["operator"]: r["abs_max"] for r in rows if r["method"] == m} for m in ("arnoldi", "dense"))
    for op in ("J", "sym", "antisym"):
        assert arnoldi_[op] == pytest.approx(dense[op], rel=0.02), op
    assert dense["antisym"] < dense["sym"]  # the trained network is closer to symmetric than not
    assert dense["antisym"] > 0.02 * dense["J"]  # ... but measurably non-symmetric


def test_dense_spectra_of_a_linear_model_are_its_eigenvalues(skewed):
    t = torch.tensor(100)
    values = dense_spectra(skewed, torch.zeros(1, *skewed.sample_shape, dtype=torch.float64), t)
    J = skewed.jacobian(t)
    assert _largest(values["J"]) == pytest.approx(_largest(torch.linalg.eigvals(J)), rel=1e-10)
    assert torch.allclose(values["antisym"].real, torch.zeros(64, dtype=torch.float64), atol=1e-10)


# --- the commands on tiny pipelines saved to disk ----------------------------------------------
@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spectra-sd")
    tiny_sd(tmp).save_pretrained(tmp / "sd")
    return tmp / "sd"


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_spectra_on_a_stable_diffusion_folder_runs_resumes_and_writes_docs(sd_folder, tmp_path, capsys):
    results, figure, page = tmp_path / "s.jsonl", tmp_path / "s.png", tmp_path / "page.md"
    page.write_text("<!-- SPECTRA-TABLE:START -->\nold\n<!-- SPECTRA-TABLE:END -->\n")
    argv = ["analyze", "spectra", "--model", str(sd_folder), "--device", "cpu", "--times", "900",
            "--iterations", "3", "6", "--sample-steps", "2", "--dense", "--results", str(results), "--figure", str(figure),
            "--write-docs", str(page)]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 3 * 2 + 3  # operators x iterations + dense per operator
    assert {r["state"] for r in records} == {"model sample (2 DDIM steps, seed 0)"}
    dense = {(r["t"], r["operator"]): r["abs_max"] for r in records if r["method"] == "dense"}
    for r in records:  # Ritz values of a normal operator lie in the convex hull of its eigenvalues
        if r["operator"] != "J":
            assert r["abs_max"] <= 1.01 * dense[(r["t"], r["operator"])] + 1e-6
    assert figure.stat().st_size > 1000
    text = page.read_text()
    command = text.split("```\n")[1].strip()
    assert command.startswith(f"constrained-diffusion analyze spectra --model {sd_folder} --device cpu --dtype float32")
    assert "| (J+J^T)/2 | Arnoldi, n = 6" in text and "s per product" in text
    before = results.read_text()
    code, out, _ = _run(argv, capsys)
    assert code == 0 and results.read_text() == before and out.count("reused from") == 1


def test_fd_vs_backprop_on_a_stable_diffusion_folder_runs_and_resumes(sd_folder, tmp_path, capsys):
    results, figure = tmp_path / "f.jsonl", tmp_path / "f.png"
    argv = ["analyze", "fd-vs-backprop", "--model", str(sd_folder), "--device", "cpu", "--times", "900", "500",
            "--pixel", "3", "4", "--sample-steps", "2", "--results", str(results), "--figure", str(figure)]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["t"], r["row"], r["col"]) for r in records] == [(900, 3, 4), (500, 3, 4)]
    for r in records:
        assert r["cos_fd_exact"] > 0.999  # float32, h = 0.005: the difference is the JVP
        assert -1 <= r["cos_fd_backprop"] <= 1 and len(r["maps"]["backprop"]) == 16
    assert figure.stat().st_size > 1000 and "cos(Je, JTe)" in out
    before = results.read_text()
    code, out, _ = _run(argv, capsys)
    assert code == 0 and results.read_text() == before and out.count("reused from") == 2


@pytest.mark.parametrize("build", [tiny_sd3, tiny_flux], ids=["sd3", "flux"])
def test_spectra_on_flow_transformers_without_text_encoders(build, tmp_path, capsys):
    build().save_pretrained(tmp_path / "pipe")
    model, key = load_denoiser(str(tmp_path / "pipe"))
    assert "files:" in key and float(analysis_time(model, 700)) == pytest.approx(0.7)
    results = tmp_path / "r.jsonl"
    code, _, err = _run(["analyze", "spectra", "--model", str(tmp_path / "pipe"), "--device", "cpu", "--times", "700",
                         "--iterations", "4", "--sample-steps", "2", "--results", str(results)], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 3 and all(0 < r["abs_max"] < math.inf for r in records)


@pytest.mark.parametrize("argv, message", [
    (["--model", "no-such-model"], "unknown model"),
    (["--model", "mnist-ddpm", "--times", "1000"], r"\[0, 999\]"),
    (["--model", "mnist-flow", "--times", "1500"], r"\[0, 1000\]"),
    (["--model", "mnist-classifier"], "not a diffusion or flow model"),
    (["--model", "mnist-ddpm", "--digit", "1", "--image", "x.png"], "at most one"),
    (["--model", "mnist-ddpm", "--image", "missing.png"], "no file"),
])
@pytest.mark.parametrize("command", ["spectra", "fd-vs-backprop"])
def test_bad_input_is_one_line_before_any_work(command, argv, message, tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    code, _, err = _run(["analyze", command, *argv, "--device", "cpu", "--results", str(results)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not results.exists()


def test_a_probe_outside_the_grid_and_a_bad_flag_are_refused(capsys):
    code, _, err = _run(["analyze", "fd-vs-backprop", "--model", "mnist-ddpm", "--device", "cpu", "--pixel", "40", "0"], capsys)
    assert code == 2 and "pixel" in err
    with pytest.raises(SystemExit):
        main(["analyze", "spectra", "--model", "mnist-ddpm", "--iterations", "0"])
    assert "expected an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("line", [
    "constrained-diffusion analyze spectra --model mnist-ddpm --device cpu --dtype float32 --digit 0 --dense",
    "constrained-diffusion analyze spectra --model sd15-random --device cuda --dtype float16 --times 900 500 "
    "--iterations 30 --h 0.1 --block SPECTRA-SD15",
    "constrained-diffusion analyze fd-vs-backprop --model mnist-ddpm --device cpu --dtype float32 --pixel 16 16 "
    "--no-exact --figure f.png",
])
def test_documented_commands_parse_back_to_themselves(line, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert args.documented(args) == line


def test_the_table_shows_every_estimate_and_the_papers_values():
    records = [{"t": t, "operator": op, "method": "arnoldi", "iterations": n, "abs_max": 1.0 + n / 100}
               for t in (900, 300) for op in ("J", "sym", "antisym") for n in (10, 30)]
    table = spectra_table(records, paper=True)
    assert "| J         | paper, SD 1.5   | 16.85" in table and table.count("Arnoldi, n = 30") == 3
    assert "1.300" in table and "| t = 900 | t = 300 |" in table
