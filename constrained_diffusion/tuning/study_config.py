"""The options of the fair comparison (`StudyConfig`), its budgets and methods.

Plain data, shared by the study's run (`constrained_diffusion.tuning.study`),
its tables (`constrained_diffusion.tuning.report`) and its figures
(`constrained_diffusion.tuning.figures`), so that the report and the figures never import
the run that writes them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from constrained_diffusion.utils.statistics import T95, mean_ci, t95  # noqa: F401  (their home before 0.2's split)

BUDGETS = ("equal_steps", "equal_evals", "equal_time")
"""The three ways every method is scored: at the tuning's steps, at the reference's NFE + NBE, at its seconds."""
BASE_METHODS = ("inexact-newton", "gradient-descent", "exact-jvp", "identity", "mpgd", "dps", "secant-newton")
"""The methods of the first study (the paper's method, its solver swaps, MPGD, DPS)."""


def default_methods() -> list[str]:
    """`BASE_METHODS` and every method of `constrained_diffusion.recipes.METHODS` (DDRM, DDNM, ...).

    Examples:
        >>> methods = default_methods()
        >>> methods[0], "ddrm" in methods, "flowchef" in methods
        ('inexact-newton', True, True)
    """
    from constrained_diffusion.recipes import METHODS

    return [*BASE_METHODS, *(r.name for r in METHODS if r.name not in BASE_METHODS)]


class StudyConfig(BaseModel):
    """The options of ``constrained-diffusion tune-study``."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["mnist-ddpm", "mnist-flow"], min_length=1)
    tasks: list[str] = Field(default_factory=lambda: ["box", "free-form", "sr4"], min_length=1)
    methods: list[str] = Field(default_factory=default_methods, min_length=1)
    reference: str = Field("inexact-newton", description="the method the paired differences are taken against")
    versus: str = Field("gradient-descent", description="the method the shipped tuned settings compare the reference with")
    trials: int = Field(30, ge=1, description="complete trials per study (pruned and failed trials do not count)")
    max_finished_factor: int = Field(4, ge=1, description="a study stops after this many x trials finished trials, complete or not")
    limit: int = Field(10, ge=1, description="validation images per trial (class-stratified)")
    batch_size: int = Field(5, ge=1, description="images per batch in tuning (the pruner looks after each)")
    steps: int = Field(10, ge=1, description="denoising steps of every method in tuning and at equal steps")
    data: str = "mnist-validation"
    test_data: str = "mnist-test"
    test_limit: int = Field(50, ge=2, description="test images scored per method (class-stratified)")
    test_batch_size: int = Field(10, ge=1, description="test images per batch (equal time uses the median seconds over batches)")
    stratify: bool = Field(True, description="class-stratified subsets of the shipped MNIST sets (False: the first N by id, class order)")
    max_steps: int = Field(200, ge=1, description="most denoising steps a method gets at equal evaluations or equal time")
    metric: str = "psnr"
    storage: str = "sqlite:///runs/tuning/study.db"
    out: Path = Path("runs/tuning")
    phase: str = Field("all", pattern="^(all|tune|score|report)$",
                       description="tune, score, all (tune then score), or report (the files again from OUT/results.json, no sampling)")
    seed: int = 0
    device: str = "cpu"
    quiet: bool = False
