r"""Parity of this library's methods with azula's, on the same network and seeds.

azula 0.11 ships DPS, ΠGDM, MMPS, RePaint, DiffPIR, TMPD, TDS, JFPS and CFG. Each comparison
here runs the shipped MNIST DDPM through `CDAzulaDenoiser` in azula and through
``AzulaDenoiser(CDAzulaDenoiser(model))`` in this library, so both walk azula's clock (the times
``linspace(1, 0, S + 1)``, training time ``round(999 t)``, the last update to ``t = 0``), from the
same ``x_T`` (azula's ``sampler.init``) and torch's global random state, on box inpainting of
class-stratified ``mnist-test`` digits:

* **DDIM** (``eta = 0``) and **DPS** at batch 1 coincide: the images agree to float tolerance.
  azula's DPS takes the norm ``||y - A x0||`` over the whole batch, so at batch ``B`` its guidance
  on each sample is that sample's residual over the batch's total (the step shrinks about as
  ``1/sqrt(B)``); the library's is per sample. The batch row reports that gap.
* **ΠGDM**: azula adds ``alpha_s alpha_t J^T A^+ (y - A x0)`` (``alpha_s`` of the next time) to a DDIM
  step with ``eta = 1``; the library ``step_scale alpha_t`` times the same direction (Song et al.'s
  ``r_t^2 = 1`` scaling), so at ``step_scale = 1`` the library's guidance is ``1/alpha_s`` larger.
* **MMPS**: azula corrects ``x0`` by ``gamma J^T A^T (Sigma_y + A gamma J A^T)^-1 (y - A x0)``, ``gamma =
  sigma^2 / alpha``, one GMRES iteration on exact JVPs (autograd), with ``Sigma_y`` given; the
  library's the same update with three GMRES iterations on finite-difference JVPs.
* **RePaint**: azula repeats ``iterations`` times (DDIM step, paste the known region noised to the
  next time, re-noise one step back), returning the last step's sample; the library's RePaint is a
  correction inside `TimeTravel` (4 repeats, jump 1) with a different draw order.

Run ``python -m cd_azula.parity --write-docs docs/recipes.md`` to write the block ``Parity with
azula`` of the recipes page.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import azula
import torch
from azula.guidance.dps import DPSSampler
from azula.guidance.mmps import MMPSDenoiser
from azula.guidance.pgdm import PGDMSampler
from azula.guidance.repaint import RePaintSampler
from azula.sample import DDIMSampler
from torch import Tensor

import constrained_diffusion as cd
from cd_azula.denoiser import AzulaDenoiser, CDAzulaDenoiser
from constrained_diffusion.constraints.masks import box_mask
from constrained_diffusion.data.images import stratified_set
from constrained_diffusion.metrics.images import psnr
from constrained_diffusion.utils.tables import replace_block

__all__ = ["ParityRow", "ddim", "dps", "main", "render", "run", "shipped"]

BLOCK = "PARITY-AZULA"
"""The docs block ``<!-- PARITY-AZULA:START -->`` ... ``<!-- PARITY-AZULA:END -->`` that ``--write-docs`` rewrites."""


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


def _setup(n: int) -> tuple[Tensor, Tensor, CDAzulaDenoiser, AzulaDenoiser]:
    truth, _ = stratified_set("mnist-test", n)
    mask = box_mask((32, 32), 8, 8, 16, 16)
    theirs = CDAzulaDenoiser(cd.MNISTDenoiser.pretrained("ddpm"))
    return truth, mask, theirs, AzulaDenoiser(theirs, (1, 32, 32))


def _psnr(x: Tensor, truth: Tensor) -> float:
    return float(psnr(x.clamp(-1, 1), truth).mean())


def ddim(n: int = 2, steps: int = 20, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Unconstrained DDIM (``eta = 0``) by azula and the library; returns ``(ours, theirs)``."""
    _, _, den, model = _setup(n)
    sampler = DDIMSampler(den, eta=0.0, steps=steps, silent=True)
    torch.manual_seed(seed)
    x_T = sampler.init((n, 1, 32, 32))
    theirs = sampler(x_T)
    ours = cd.ConstrainedSampler(model, steps=steps, inner_steps=0, eta=0.0).sample(x_T=x_T, progress=False).sample
    return ours, theirs


def dps(n: int = 1, steps: int = 20, zeta: float = 1.0, seed: int = 0, per_digit: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Box inpainting by azula's DPS and the library's ``dps`` recipe; returns ``(ours, theirs, truth)``.

    ``per_digit=True`` runs each digit as its own batch of 1 (where the two coincide); ``False``
    runs the ``n`` digits as one batch (azula's norm then spans the batch).
    """
    truth, mask, den, model = _setup(n)
    batches = [slice(i, i + 1) for i in range(n)] if per_digit else [slice(0, n)]
    ours, theirs = [], []
    for b in batches:
        y = mask * truth[b]
        sampler = DPSSampler(den, y=y, A=lambda x: mask * x, zeta=zeta, steps=steps, silent=True)
        torch.manual_seed(seed)
        x_T = sampler.init(tuple(y.shape))
        theirs.append(sampler(x_T).detach())
        torch.manual_seed(seed)
        sampler.init(tuple(y.shape))  # the same initial draw, so the library's per-step noise is azula's
        recipe = cd.recipes.get("dps", steps=steps, step_scale=zeta)
        ours.append(recipe.sampler(model).sample(cd.Inpainting(truth[b], mask), x_T=x_T, generator=None, progress=False).sample)
    return torch.cat(ours), torch.cat(theirs), truth


def shipped(method: str, n: int = 4, steps: int = 20, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """ΠGDM, MMPS or RePaint as each library ships it, same network, digits, steps and ``x_T``."""
    truth, mask, den, model = _setup(n)
    y = mask * truth
    A: Callable[[Tensor], Tensor] = lambda x: mask * x  # noqa: E731
    if method == "pigdm":
        sampler = PGDMSampler(den, y=y, A=A, A_inv=A, eta=1.0, steps=steps, silent=True)
    elif method == "mmps":
        sampler = DDIMSampler(MMPSDenoiser(den, y=y, A=A, cov_y=lambda v: 1e-4 * v, iterations=1), eta=0.0, steps=steps, silent=True)
    elif method == "repaint":
        sampler = RePaintSampler(den, y=y, mask=mask.bool().expand_as(y), iterations=5, eta=1.0, steps=steps, silent=True)
    else:
        raise ValueError(f"method must be 'pigdm', 'mmps' or 'repaint', got {method!r}")
    torch.manual_seed(seed)
    x_T = sampler.init(tuple(y.shape))
    with torch.enable_grad():
        theirs = sampler(x_T).detach()
    torch.manual_seed(seed)
    sampler.init(tuple(y.shape))
    ours = cd.recipes.get(method, steps=steps).sampler(model).sample(cd.Inpainting(truth, mask), x_T=x_T, generator=None,
                                                                      progress=False).sample
    return ours, theirs, truth


def run(n: int = 8, steps: int = 20, seed: int = 0) -> list[ParityRow]:
    """All comparisons (see the module docstring), each timed on this machine."""
    rows = []
    start = time.perf_counter()
    ours, theirs = ddim(n, steps, seed)
    truth = stratified_set("mnist-test", n)[0]
    rows.append(ParityRow("ddim (unconstrained, eta 0)", "same x_T, azula's clock", steps, float((ours - theirs).abs().max()),
                          float("nan"), float("nan"), time.perf_counter() - start))
    for per_digit, setting in ((True, "batch 1 per digit, zeta 1"), (False, f"one batch of {n}: azula's norm spans the batch")):
        start = time.perf_counter()
        ours, theirs, truth = dps(n, steps, seed=seed, per_digit=per_digit)
        rows.append(ParityRow("dps", setting, steps, float((ours - theirs).abs().max()), _psnr(ours, truth), _psnr(theirs, truth),
                              time.perf_counter() - start))
    for method, setting in (("pigdm", "as shipped: azula alpha_s alpha_t J^T A^+ r, ours step_scale alpha_t"),
                            ("mmps", "as shipped: azula 1 GMRES iteration, exact JVP, Sigma_y = 1e-4; ours 3, finite differences"),
                            ("repaint", "as shipped: azula 5 iterations per step; ours time travel, 4 repeats")):
        start = time.perf_counter()
        ours, theirs, truth = shipped(method, n, steps, seed)
        rows.append(ParityRow(method, setting, steps, float((ours - theirs).abs().max()), _psnr(ours, truth), _psnr(theirs, truth),
                              time.perf_counter() - start))
    return rows


def render(rows: Sequence[ParityRow], command: str, n: int) -> str:
    """The markdown written into the docs' ``BLOCK`` block."""
    lines = [f"Box inpainting (16x16 hole) of {n} class-stratified `mnist-test` digits, shipped MNIST DDPM wrapped for "
             f"azula {azula.__version__} by `cd_azula.CDAzulaDenoiser` (ours on `AzulaDenoiser` of it: the same clock), one seed, "
             f"torch {torch.__version__.split('+')[0]}, {platform.machine()} CPU, 1 thread. Command: `{command}`.", "",
             "| method | how | steps | max abs diff | PSNR ours (dB) | PSNR azula (dB) | s (both) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = "–" if r.psnr_ours != r.psnr_ours else f"{r.psnr_ours:.2f}"
        theirs = "–" if r.psnr_theirs != r.psnr_theirs else f"{r.psnr_theirs:.2f}"
        lines.append(f"| {r.method} | {r.setting} | {r.steps} | {r.max_abs_diff:.2g} | {ours} | {theirs} | {r.seconds:.1f} |")
    return "\n".join(lines)


def write_docs(path: str | Path, block: str) -> None:
    """Replace the ``BLOCK`` block of the markdown page ``path`` (`constrained_diffusion.utils.tables.replace_block`, atomic).

    Raises:
        ValueError: the page has no such block.
    """
    replace_block(Path(path), BLOCK, block)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cd_azula.parity [--digits N] [--steps S] [--seed K] [--write-docs PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m cd_azula.parity", description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", default=None, help="a markdown file whose azula parity block is replaced")
    args = parser.parse_args(argv)
    if args.digits < 1 or args.steps < 2:
        parser.error("--digits must be >= 1 and --steps >= 2")
    torch.set_num_threads(1)
    rows = run(args.digits, args.steps, args.seed)
    command = "python -m cd_azula.parity " + " ".join(sys.argv[1:] if argv is None else argv)
    block = render(rows, command.strip(), args.digits)
    print(block)
    if args.write_docs:
        write_docs(args.write_docs, block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
