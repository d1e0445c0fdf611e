"""Each solver's cost against the forward-pass floor, on the package's UNet with random weights.

The model is `UNet` (seeded random weights: the arithmetic of a forward pass does not depend
on them) under the DDPM schedule. For each solver an inpainting problem is sampled and timed;

    overhead = measured seconds / (NFE x seconds of one plain forward)

is the cost over the forward-pass floor. The time of one forward is measured in place: an
unconstrained run of the same sampler (``inner_steps = 0``, one forward per step) divided by
its NFE, interleaved with the solver runs so that both see the same machine state; each figure
is the median over the rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from constrained_diffusion.constraints import Inpainting
from constrained_diffusion.denoisers import NetworkDenoiser, VPSchedule
from constrained_diffusion.models.unet import UNet
from constrained_diffusion.sampling import ConstrainedSampler, randn

DEFAULT_SOLVERS: tuple[str, ...] = ("exact-jvp", "gradient-descent", "inexact-newton")
"""The directions the paper compares (the table in docs/benchmarks.md); others by name."""


@dataclass
class SolverCosts:
    """What `measure_solver_costs` measured.

    Attributes:
        parameters: the UNet's parameter count.
        batch: samples per run.
        shape: one sample's shape ``(C, H, W)``.
        forward_seconds: median seconds of one plain forward.
        floor_runs: how many plain runs that median is over.
        floor_forwards: forwards per plain run.
        nfe: network forwards per run (per sample: the batch shares them), per solver.
        nbe: network backwards per run, per solver.
        seconds: median seconds per run, per solver.
    """

    parameters: int
    batch: int
    shape: tuple[int, int, int]
    forward_seconds: float
    floor_runs: int
    floor_forwards: int
    nfe: dict[str, int] = field(default_factory=dict)
    nbe: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def overhead(self, solver: str) -> float:
        """Measured seconds over ``NFE x`` one forward's seconds."""
        return self.seconds[solver] / (self.nfe[solver] * self.forward_seconds)


def forward_seconds(model: NetworkDenoiser, x_T: torch.Tensor, forwards: int) -> float:
    """Seconds per forward of a plain sampling run with ``forwards`` steps (one forward each)."""
    result = ConstrainedSampler(model, steps=forwards, inner_steps=0).sample(None, x_T=x_T, progress=False)
    return result.seconds / result.nfe


def measure_solver_costs(solvers: Sequence[str] = DEFAULT_SOLVERS, steps: int = 10, inner_steps: int = 5,
                         batch_size: int = 1, channels: int = 64, size: int = 32, repeats: int = 5) -> SolverCosts:
    """Time each solver on box inpainting (left half known) against the plain-forward floor.

    Args:
        solvers: registered solver names, measured in this order.
        steps: denoising steps of each solver run.
        inner_steps: constraint iterations per step.
        batch_size: samples per run.
        channels: the UNet's base channels (64: 6.5M parameters).
        size: the image side.
        repeats: timed rounds; every figure is a median over them.

    Returns:
        The counts and median timings (`SolverCosts`).
    """
    torch.manual_seed(0)
    net = UNet(base_channels=channels, sample_size=size).eval().requires_grad_(False)
    shape = (1, size, size)
    model = NetworkDenoiser(net, VPSchedule.linear(), shape, prediction="epsilon")
    y = torch.rand(batch_size, *shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., : size // 2] = 1
    constraint = Inpainting(y, mask)
    x_T = randn(batch_size, shape, torch.Generator().manual_seed(2), model.device, model.dtype)
    samplers = {n: ConstrainedSampler(model, n, steps=steps, inner_steps=inner_steps) for n in solvers}
    for n in solvers:  # warm-up (first-call allocations, forward-AD set-up)
        ConstrainedSampler(model, n, steps=1, inner_steps=1).sample(constraint, x_T=x_T, progress=False)
    floor_forwards = max(10, steps)
    forward_seconds(model, x_T, 3)
    costs = SolverCosts(sum(p.numel() for p in net.parameters()), batch_size, shape, 0.0, 0, floor_forwards)
    seconds: dict[str, list[float]] = {n: [] for n in solvers}
    floors: list[float] = []
    for _ in range(repeats):
        floors.append(forward_seconds(model, x_T, floor_forwards))
        for n in solvers:
            result = samplers[n].sample(constraint, x_T=x_T, progress=False)
            seconds[n].append(result.seconds)
            costs.nfe[n], costs.nbe[n] = result.nfe, result.nbe
    floors.append(forward_seconds(model, x_T, floor_forwards))
    costs.forward_seconds, costs.floor_runs = statistics.median(floors), len(floors)
    costs.seconds = {n: statistics.median(s) for n, s in seconds.items()}
    return costs
