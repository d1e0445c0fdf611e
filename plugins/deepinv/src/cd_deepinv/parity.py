r"""Parity of this library's methods with deepinv's samplers, on the same network and seeds.

deepinv 0.5 implements DDRM, DiffPIR and DPS (``deepinv.sampling``). Each is run here on the
shipped MNIST DDPM (``cd.MNISTDenoiser.pretrained("ddpm")``), wrapped for deepinv by
`CDGaussianDenoiser`, against this library's correction on the same network, the same box
inpainting of real test digits (``mnist-test``, class-stratified), and the same noise: torch's
global random state seeded once, the initial state built as deepinv builds it, and the engine
drawing its per-step noise from the same stream (``generator=None``) in the same order.

* **DDRM, exact** — deepinv's DDRM draws its noise with standard deviation ``sigma_t / sqrt(2)``
  but tells the denoiser ``sigma_t`` (``torch.randn_like(x) / np.sqrt(2.0)`` in
  ``deepinv/sampling/diffusion.py``), and starts from ``y`` (``x_bar ~ N(y_bar, sigma_0^2)`` on the
  observed components). Driven with the levels ``sqrt(2) sigma_t / 2`` (the ``[0, 1]`` units of
  the engine's grid, times ``sqrt(2)``) and a denoiser told ``s / sqrt(2)``, its noise and its
  denoiser's level are the paper's, and it coincides with `constrained_diffusion`'s ``ddrm``
  correction started from the same ``x_T``: the final images agree to float tolerance (deepinv
  returns the last ``D(x)``; the library's last ``x0`` also carries ``y`` on the observed pixels,
  so deepinv's output is compared with ``y`` pasted in).
* **DDRM, as shipped** — deepinv's DDRM with the grid's own levels: its injected noise is
  ``1/sqrt(2)`` of the level its denoiser assumes; the PSNR gap is reported.
* **DiffPIR, exact** — deepinv's DiffPIR walks ``t_i = 999 - floor(sqrt(linspace(0, 1000^2, N)))``,
  clamps ``x0`` to ``[-1, 1]``, solves ``argmin ||A u - y||^2 + 2 rho_t ||u - x0||^2`` in
  ``[0, 1]`` units with ``rho_t = lambda sigma_y^2 alpha_t^2 / sigma_t^2`` (``sigma_y`` in
  ``[0, 1]`` units), starts from ``2 A^T y - 1`` plus noise and returns the state at ``t = 0``
  (one last network call unused). The library's ``diffpir`` with ``lam = lambda / 2`` (its
  ``rho_t`` has ``sigma_y`` in ``[-1, 1]`` units and no factor 2), a schedule on the same times
  ending at ``t = 0`` and a clamped ``x0`` gives the same images to float tolerance.
* **DPS, as shipped** — deepinv 0.5's DPS is a ``PosteriorDiffusion``: the continuous VP SDE
  (``beta_min = 0.1``, ``beta_max = 20``) on ``linspace(1, 0, N)`` with a DDPM solver, the
  network reached through the nearest discrete time, ``x0`` clipped to ``[-1, 1]``, guidance
  ``weight * grad ||y - A x0||`` added to the SDE drift (scaled by the step). The library's
  ``dps`` recipe (discrete DDPM grid, step ``zeta / ||y - A x0||`` on ``x_{t-1}``, no clip) is the
  paper's update; only the PSNR gap is reported.

Run ``python -m cd_deepinv.parity --write-docs docs/recipes.md`` (in the deepinv environment)
to measure and write the block ``Parity with deepinv`` of the recipes page.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import deepinv
import torch
from torch import Tensor, nn

import constrained_diffusion as cd
from cd_deepinv.denoiser import CDGaussianDenoiser
from cd_deepinv.physics import PhysicsConstraint
from constrained_diffusion.constraints.masks import box_mask
from constrained_diffusion.data.images import stratified_set
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.denoisers.schedules import VPSchedule
from constrained_diffusion.metrics.images import psnr
from constrained_diffusion.utils.tables import replace_block

__all__ = ["FixedTimesSchedule", "ParityRow", "ddrm", "diffpir", "dps", "main", "render", "run"]

BLOCK = "PARITY-DEEPINV"
"""The docs block ``<!-- PARITY-DEEPINV:START -->`` ... ``<!-- PARITY-DEEPINV:END -->`` that ``--write-docs`` rewrites."""


class FixedTimesSchedule(VPSchedule):
    """A `VPSchedule` whose grid is a given list of descending times (a peer's own time grid).

    Args:
        alphas_cumprod: ``abar_t`` of the training times.
        times: the descending sampling times; ``timesteps(steps)`` requires ``steps == len(times)``.
        final_alpha_one: the last update moves to a clean sample (``True``) or to ``t = 0`` (``False``).
    """

    def __init__(self, alphas_cumprod: Tensor, times: Sequence[int], final_alpha_one: bool) -> None:
        self._setup(alphas_cumprod.to(torch.float64), "trailing", 0, final_alpha_one)
        self._times = torch.tensor([int(t) for t in times], dtype=torch.long)
        if self._times.ndim != 1 or not bool((self._times[:-1] > self._times[1:]).all()):
            raise ValueError(f"times must be strictly descending, got {list(times)}")

    def timesteps(self, steps: int) -> Tensor:
        if steps != self._times.numel():
            raise ValueError(f"this schedule walks {self._times.numel()} fixed times, got steps={steps}")
        return self._times.clone()


class _Clamped(Denoiser):
    """``clamp(D(x_t, t), -1, 1)`` on a given schedule (deepinv's DiffPIR clamps ``x0``)."""

    def __init__(self, inner: Denoiser, schedule: VPSchedule) -> None:
        super().__init__(inner.sample_shape, schedule=schedule)
        self.inner = inner

    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.inner.predict_x0(x_t, t).clamp(-1, 1)


class _LevelScaled(nn.Module):
    """``D(u, s * factor)``: tells a deepinv denoiser a rescaled noise level."""

    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return self.inner(x, torch.as_tensor(sigma, dtype=torch.float64) * self.factor)


@dataclass
class ParityRow:
    """One comparison: the method, how it was run, the largest difference of the images and both PSNRs (dB, mean)."""

    method: str
    setting: str
    steps: int
    max_abs_diff: float
    psnr_ours: float
    psnr_theirs: float
    seconds: float


def _problem(n: int) -> tuple[Tensor, Tensor, deepinv.physics.Inpainting, Tensor]:
    """``n`` stratified test digits in ``[-1, 1]``, the box mask, deepinv's inpainting physics and ``y`` in ``[0, 1]`` units."""
    truth, _ = stratified_set("mnist-test", n)
    mask = box_mask((32, 32), 8, 8, 16, 16)
    physics = deepinv.physics.Inpainting(img_size=(1, 32, 32), mask=mask[0], noise_model=deepinv.physics.GaussianNoise(sigma=0.0))
    y = physics.A((truth + 1) / 2)
    return truth, mask, physics, y


def _model() -> cd.MNISTDenoiser:
    return cd.MNISTDenoiser.pretrained("ddpm")


def _psnr(x: Tensor, truth: Tensor) -> float:
    return float(psnr(x.clamp(-1, 1), truth).mean())


def ddrm(n: int = 4, steps: int = 20, eta: float = 0.85, seed: int = 0, exact: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Box inpainting by deepinv's DDRM and the library's ``ddrm``; returns ``(ours, theirs, truth)`` in ``[-1, 1]``.

    ``exact=True`` drives deepinv with levels ``sqrt(2)`` larger and a denoiser told ``s / sqrt(2)``
    (see the module docstring); ``exact=False`` runs it as shipped on the grid's levels.
    """
    truth, mask, physics, y = _problem(n)
    model = _model()
    grid = model.grid(steps)
    levels = (grid.sigma[:steps] / grid.alpha[:steps]).numpy() / 2  # the grid in deepinv's [0, 1] units
    factor = math.sqrt(2.0) if exact else 1.0
    wrapped = _LevelScaled(CDGaussianDenoiser(model), 1 / factor)
    torch.manual_seed(seed)
    theirs = deepinv.sampling.DDRM(wrapped, sigmas=levels * factor, eta=eta, etab=1.0, eps=0.0)(y, physics)
    theirs = torch.where(mask > 0, 2 * y - 1, 2 * theirs - 1)  # y pasted in, as the library's last x0 carries it
    # the library: DDRM's start from y (deepinv's draw), then the engine with the global random state
    torch.manual_seed(seed)
    z = torch.randn_like(y)
    a0, s0 = grid.point(0)
    x_T = torch.where(mask > 0, a0 * (2 * y - 1), -a0 * torch.ones_like(y)) + s0 * z
    constraint = PhysicsConstraint(physics, y, physics_range="[0,1]")
    sampler = cd.recipes.get("ddrm", steps=steps, eta=eta).sampler(model)
    ours = sampler.sample(constraint, x_T=x_T, generator=None, progress=False).sample
    return ours, theirs, truth


def diffpir(n: int = 4, steps: int = 20, lam: float = 7.0, zeta: float = 0.3, sigma_y: float = 0.05,
            seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Box inpainting by deepinv's DiffPIR (``max_iter = steps + 1``) and the library's ``diffpir`` on its times.

    Returns ``(ours, theirs, truth)`` in ``[-1, 1]``; ``sigma_y`` is deepinv's ``[0, 1]``-unit noise level.
    """
    truth, mask, _, _ = _problem(n)
    physics = deepinv.physics.Inpainting(img_size=(1, 32, 32), mask=mask[0], noise_model=deepinv.physics.GaussianNoise(sigma=sigma_y))
    y = physics.A((truth + 1) / 2)
    model = _model()
    theirs_sampler = deepinv.sampling.DiffPIR(CDGaussianDenoiser(model), deepinv.optim.data_fidelity.L2(), sigma=sigma_y,
                                              max_iter=steps + 1, zeta=zeta, lambda_=lam)
    torch.manual_seed(seed)
    theirs = 2 * theirs_sampler(y, physics) - 1
    times = [999 - int(s) for s in theirs_sampler.seq[:-1]]
    schedule = FixedTimesSchedule(model.schedule.alphas_cumprod, times, final_alpha_one=False)
    ours_model = _Clamped(model, schedule)
    grid = ours_model.grid(steps)
    a0, s0 = grid.point(0)
    torch.manual_seed(seed)
    start = 2 * physics.A_adjoint(y) - 1
    x_T = a0 * (start + math.sqrt((s0 / a0) ** 2 - 4 * sigma_y**2) * torch.randn_like(start))
    constraint = PhysicsConstraint(physics, y, physics_range="[0,1]")
    sampler = cd.recipes.get("diffpir", steps=steps, correction={"name": "diffpir", "lam": lam / 2, "zeta": zeta}).sampler(ours_model)
    ours = sampler.sample(constraint, x_T=x_T, generator=None, progress=False).sample
    return ours, theirs, truth


def dps(n: int = 4, steps: int = 100, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Box inpainting by deepinv's DPS as shipped (``weight = 1``) and the library's ``dps`` recipe (``zeta = 1``)."""
    truth, mask, physics, y = _problem(n)
    model = _model()
    sampler = deepinv.sampling.DPS(CDGaussianDenoiser(model), num_steps=steps, weight=1.0, dtype=torch.float32)
    torch.manual_seed(seed)
    theirs = 2 * sampler(y, physics, seed=seed).detach() - 1
    constraint = PhysicsConstraint(physics, y, physics_range="[0,1]")
    ours = cd.recipes.get("dps", steps=steps).sampler(model).sample(
        constraint, generator=torch.Generator().manual_seed(seed), progress=False).sample
    return ours, theirs, truth


def run(n: int = 4, steps: int = 20, dps_steps: int = 100, seed: int = 0) -> list[ParityRow]:
    """All comparisons (see the module docstring), in order; each timed on this machine."""
    rows = []
    for method, setting, fn in (
        ("ddrm", "exact: deepinv levels x sqrt(2), denoiser told s/sqrt(2), start from y", lambda: ddrm(n, steps, seed=seed, exact=True)),
        ("ddrm", "as shipped: deepinv's noise sigma/sqrt(2) at level sigma", lambda: ddrm(n, steps, seed=seed, exact=False)),
        ("diffpir", "exact: deepinv's times, x0 clamped, lam_ours = lambda/2, zeta 0.3, sigma_y 0.05", lambda: diffpir(n, steps, seed=seed)),
        ("dps", "as shipped: deepinv VP-SDE + DDPM solver, weight 1; ours zeta 1", lambda: dps(n, dps_steps, seed=seed)),
    ):
        start = time.perf_counter()
        with torch.no_grad() if method != "dps" else torch.enable_grad():
            ours, theirs, truth = fn()
        rows.append(ParityRow(method, setting, dps_steps if method == "dps" else steps, float((ours - theirs).abs().max()),
                              _psnr(ours, truth), _psnr(theirs, truth), time.perf_counter() - start))
    return rows


def render(rows: Sequence[ParityRow], command: str, n: int) -> str:
    """The markdown written into the docs' ``BLOCK`` block."""
    lines = [f"Box inpainting (16x16 hole) of {n} class-stratified `mnist-test` digits, shipped MNIST DDPM wrapped for "
             f"deepinv {deepinv.__version__} by `cd_deepinv.CDGaussianDenoiser`, one seed, torch {torch.__version__.split('+')[0]}, "
             f"{platform.machine()} CPU, 1 thread. Command: `{command}`.", "",
             "| method | how deepinv is run | steps | max abs diff | PSNR ours (dB) | PSNR deepinv (dB) | s (both) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.setting} | {r.steps} | {r.max_abs_diff:.2g} | {r.psnr_ours:.2f} | {r.psnr_theirs:.2f} | {r.seconds:.1f} |")
    return "\n".join(lines)


def write_docs(path: str | Path, block: str) -> None:
    """Replace the ``BLOCK`` block of the markdown page ``path`` (`constrained_diffusion.utils.tables.replace_block`, atomic).

    Raises:
        ValueError: the page has no such block.
    """
    replace_block(Path(path), BLOCK, block)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cd_deepinv.parity [--digits N] [--steps S] [--dps-steps S] [--seed K] [--write-docs PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m cd_deepinv.parity", description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dps-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", default=None, help="a markdown file whose parity block is replaced")
    args = parser.parse_args(argv)
    if args.digits < 1 or args.steps < 2 or args.dps_steps < 2:
        parser.error("--digits must be >= 1, --steps and --dps-steps >= 2")
    torch.set_num_threads(1)
    rows = run(args.digits, args.steps, args.dps_steps, args.seed)
    command = "python -m cd_deepinv.parity " + " ".join(sys.argv[1:] if argv is None else argv)
    block = render(rows, command.strip(), args.digits)
    print(block)
    if args.write_docs:
        write_docs(args.write_docs, block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
