"""Cost measurements behind ``constrained-diffusion bench`` and ``bench-sd`` (benchmarks, not tests)."""

from constrained_diffusion.benchmarks.sd_unet import SD15_UNET, SDStepCosts, conditioned_unet_denoiser, measure_sd_step_costs
from constrained_diffusion.benchmarks.solver_cost import DEFAULT_SOLVERS, SolverCosts, forward_seconds, measure_solver_costs

__all__ = [
    "DEFAULT_SOLVERS", "SD15_UNET", "SDStepCosts", "SolverCosts", "conditioned_unet_denoiser", "forward_seconds",
    "measure_sd_step_costs", "measure_solver_costs",
]
