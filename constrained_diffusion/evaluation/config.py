"""The options of an evaluation run: `EvaluationConfig` (the flags of ``evaluate``, the fields of ``--config`` YAML) and its `MethodSpec`.

Plain data, validated by pydantic: what a run is asked to do, nothing of how. The override
language of ``set`` (``KEY=VALUE``, dotted keys, ``LABEL:KEY``, ``task.KEY``) is read by
`constrained_diffusion.recipes.overrides`; the methods are resolved by
`constrained_diffusion.evaluation.methods`.

Examples:
    >>> cfg = EvaluationConfig(model="mnist-ddpm", data="mnist-test", task="box", method="inexact-newton", out="out")
    >>> [m.key for m in cfg.method], cfg.batch_size, cfg.metrics
    (['inexact-newton'], 4, ['psnr', 'ssim'])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class MethodSpec(BaseModel):
    """One method of a run: a recipe or solver ``name``, a ``label`` and its own overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="a recipe (cd.recipes.names()) or a solver (cd.solvers.names()) name")
    label: str | None = Field(None, description="how records, images and tables name it (default: the name)")
    set: dict[str, Any] = Field(default_factory=dict, description="SamplerConfig fields or recipe options; 'solver.h' nests")

    @property
    def key(self) -> str:
        """The label, or the name."""
        return self.label or self.name


class EvaluationConfig(BaseModel):
    """The options of an evaluation run (the command's flags; the fields of ``--config`` YAML)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a shipped model (mnist-ddpm, mnist-flow), a diffusers folder or a Hub id")
    data: str = Field(description="an image folder, an image file or a shipped set (mnist-held-out, mnist-validation, mnist-test)")
    task: str = Field(description="box, top-half, random-box, free-form, mnist-free-form, sr4, sr8, style, or a registered constraint")
    method: list[MethodSpec] = Field(min_length=1, description="the methods; they share observations and initial noise")
    out: Path = Field(description="the output folder (records.jsonl, images/, summary.md, grid.png, pareto.svg)")
    limit: int | None = Field(None, ge=1, description="evaluate the first N images (sorted by id)")
    batch_size: int = Field(4, ge=1, description="images per batch")
    steps: int | None = Field(None, ge=1, description="denoising steps of every method (default: each recipe's)")
    set: dict[str, Any] = Field(default_factory=dict, description="overrides of every method; 'task.KEY' sets a task option")
    metrics: list[str] = Field(default_factory=lambda: ["psnr", "ssim"], description="psnr ssim lpips label_accuracy fid kid")
    noise_std: float = Field(0.0, description="Gaussian measurement noise on the observation, [-1, 1] pixel scale")
    prompts: Path | None = Field(None, description="JSON or CSV: image id -> caption (text-conditioned models)")
    prompt: str | None = Field(None, description="one caption for every image of a text-conditioned model (default '')")
    style_image: Path | None = Field(None, description="the style task's reference image")
    seed: int = 0
    noise_seeding: Literal["image-id", "position"] = Field(
        "image-id", description="how each image's initial noise is seeded: by its id (image-id) or, for held-out digits, "
                                "by its position as compare does (position)")
    device: str = "cpu"
    dtype: str = "float32"
    precision: Literal["float32", "tf32-emulated", "no-tf32"] = Field(
        "float32", description="float32 arithmetic: the device's default, TF32 convolutions emulated, or TF32 off on CUDA")
    fid_features: str | None = Field(None, description="inception (default), mnist-classifier or module:Class")
    feature_weights: Path | None = Field(None, description="folder with feature-network weights (torch hub layout)")
    quiet: bool = False

    @field_validator("method", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        if isinstance(value, (str, Mapping)):
            value = [value]
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value
