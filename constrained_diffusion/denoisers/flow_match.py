"""Rectified-flow transformers over diffusers: what SD3 and Flux share, and the entry point.

The transformer predicts the velocity ``v = eps - z0`` of ``z_s = (1 - s) z0 + s eps``, so
``alpha = 1 - s``, ``sigma = s`` and ``z0_hat = z_s - s v_hat``. The schedule is a
`FlowMatchEulerSchedule` built once at construction from the pipeline scheduler's
configuration and the latent sequence length: the same ``s`` grid (static shift, or dynamic
shift with ``mu`` from the sequence length, and the terminal ``s = 0``) that the pipeline's
``FlowMatchEulerDiscreteScheduler`` produces for that number of steps, computed without
touching the pipeline's scheduler. The engine's DDIM update with ``eta = 0`` is then the
pipeline's Euler step, so without a constraint a sample equals the pipeline's output from the
same latents. Classifier-free guidance is one batched forward of the unconditional and
conditional inputs (`classifier_free_guidance`).

`FlowMatchDenoiser` is the shared base and the entry point: ``FlowMatchDenoiser(pipe)``,
``FlowMatchDenoiser.from_pipeline(pipe)`` and ``FlowMatchDenoiser.from_pretrained(path)``
return an `SD3Denoiser` (``StableDiffusion3Pipeline``) or a `FluxDenoiser` (``FluxPipeline``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from constrained_diffusion.denoisers.compiled import CompileOptions, compiled_forward
from constrained_diffusion.denoisers.diffusers_base import DiffusersDenoiser
from constrained_diffusion.denoisers.guidance import classifier_free_guidance
from constrained_diffusion.denoisers.schedules import FlowBase, FlowMatchEulerSchedule
from constrained_diffusion.denoisers.vae import VAECodec

DEFAULT_FAMILY = "StableDiffusion3"
"""The family of a pipeline whose class name starts with no registered family's prefix."""


def _family(pipe: Any) -> type[FlowMatchDenoiser]:
    """The adapter class for a pipeline: the subclass registered for the prefix of its class name
    (``Flux*``: `FluxDenoiser`), else the `DEFAULT_FAMILY`'s (`SD3Denoiser`)."""
    name = type(pipe).__name__
    families = FlowMatchDenoiser.families
    return next((cls for prefix, cls in families.items() if name.startswith(prefix)), families[DEFAULT_FAMILY])


class FlowMatchDenoiser(DiffusersDenoiser):
    """A rectified-flow transformer, its VAE (the codec) and its flow-matching schedule.

    Build with `from_pretrained` or `from_pipeline` (or call the class on a pipeline): the
    result is an `SD3Denoiser` or a `FluxDenoiser`. Bind the conditioning with `condition`.
    Samples are latents ``(C, H/f, W/f)``; subclasses give the model call (`_velocity`), the
    prompt encoding (`_encode`), the patch size, the default size, the latent channels and
    the base of the grid.

    Args:
        pipe: a diffusers ``StableDiffusion3Pipeline`` or ``FluxPipeline`` (``transformer``,
            ``vae``, ``scheduler``).
        height: image height in pixels (default: the pipeline's default size).
        width: image width in pixels (same default).
        compile: call the transformer through ``torch.compile`` (static shapes); see
            `constrained_diffusion.denoisers.compiled`.
        compile_mode: ``torch.compile``'s ``mode`` (``"reduce-overhead"``: CUDA graphs), or ``None``.
        compile_backend: ``torch.compile``'s ``backend`` (default ``"inductor"``).
    """

    SUPPORTED = ("StableDiffusion3Pipeline", "FluxPipeline")
    families: ClassVar[dict[str, type[FlowMatchDenoiser]]] = {}
    """Pipeline class-name prefix -> adapter; a subclass joins with ``class X(FlowMatchDenoiser, family="Prefix")``."""

    def __init_subclass__(cls, family: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if family is not None:
            FlowMatchDenoiser.families[family] = cls

    def __new__(cls, pipe: Any = None, *args: Any, **kwargs: Any) -> FlowMatchDenoiser:
        """``FlowMatchDenoiser(pipe, ...)`` builds the subclass for the pipeline's family."""
        return super().__new__(_family(pipe) if cls is FlowMatchDenoiser else cls)

    def __init__(self, pipe: Any, height: int | None = None, width: int | None = None, compile: bool = False,
                 compile_mode: str | None = None, compile_backend: str = "inductor") -> None:
        options = CompileOptions(compile, compile_mode, compile_backend)
        for part in ("transformer", "vae", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ValueError(f"the pipeline has no {part}")
        codec = VAECodec(pipe.vae)
        patch = self._patch(pipe)
        unit = codec.factor * patch
        default = self._default_sample_size(pipe) * codec.factor
        height, width = height or default, width or default
        for name, value in (("height", height), ("width", width)):
            if value % unit:
                raise ValueError(f"{name}={value} is not divisible by the VAE factor x patch size {unit}")
        h, w = height // codec.factor, width // codec.factor
        schedule = FlowMatchEulerSchedule.from_config(pipe.scheduler.config, (h // patch) * (w // patch),
                                                      base=self._grid_base(pipe.scheduler.config),
                                                      max_shift=self._default_max_shift)
        super().__init__((self._latent_channels(pipe), h, w), codec=codec, schedule=schedule)
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.compile_options = options
        self._transformer = compiled_forward(pipe.transformer, options)
        self.height, self.width, self.patch = height, width, patch
        self.prompt_embeds: Tensor | None = None
        self.pooled_prompt_embeds: Tensor | None = None
        self.negative_prompt_embeds: Tensor | None = None
        self.negative_pooled_prompt_embeds: Tensor | None = None
        self.guidance_scale = 1.0

    # --- what differs between SD3 and Flux ---------------------------------------------------
    _default_max_shift: float = 1.15  # the pipeline's fallback for a configuration without max_shift

    @staticmethod
    @abstractmethod
    def _patch(pipe: Any) -> int:
        """Side of the square latent patches that make one transformer token."""

    @staticmethod
    @abstractmethod
    def _default_sample_size(pipe: Any) -> int:
        """Default latent side (pixels / VAE factor) when no height or width is given."""

    @staticmethod
    @abstractmethod
    def _latent_channels(pipe: Any) -> int:
        """Channels ``C`` of the (unpacked) latents that constraints see."""

    @staticmethod
    @abstractmethod
    def _grid_base(config: Any) -> FlowBase:
        """``"scheduler"`` or ``"linear"``: the base grid the pipeline passes (see `FlowMatchEulerSchedule`)."""

    @abstractmethod
    def _velocity(self, x: Tensor, s: Tensor, text: Tensor, pooled: Tensor) -> Tensor:
        """The transformer's velocity for latents ``x`` ``(N, C, h, w)`` at time ``s``."""

    @abstractmethod
    def _encode(self, prompt: str | list[str], negative_prompt: str | list[str], cfg: bool) -> tuple[Any, Any, Any, Any]:
        """``(prompt_embeds, pooled, negative_prompt_embeds, negative_pooled)`` from the text encoders."""

    # --- conditioning ------------------------------------------------------------------------
    def condition(self, prompt: str | list[str] = "", negative_prompt: str | list[str] = "", guidance_scale: float = 1.0,
                  prompt_embeds: Tensor | None = None, pooled_prompt_embeds: Tensor | None = None,
                  negative_prompt_embeds: Tensor | None = None,
                  negative_pooled_prompt_embeds: Tensor | None = None) -> FlowMatchDenoiser:
        """A copy with the prompt (or its embeddings) and the guidance scale bound.

        Raises:
            ValueError: a prompt for a pipeline without text encoders; embeddings given without
                their pooled counterpart; guidance > 1 without negative embeddings.
        """
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        cfg = guidance_scale > 1.0
        if prompt_embeds is None:
            if getattr(self.pipe, "text_encoder", None) is None:
                raise ValueError("prompt: this pipeline has no text encoders; pass prompt_embeds and pooled_prompt_embeds")
            prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds, negative_pooled_prompt_embeds = self._encode(
                prompt, negative_prompt, cfg)
        if pooled_prompt_embeds is None:
            raise ValueError("pooled_prompt_embeds: needed with prompt_embeds")
        if cfg and (negative_prompt_embeds is None or negative_pooled_prompt_embeds is None):
            raise ValueError("negative_prompt_embeds: guidance_scale > 1 needs negative_prompt_embeds and negative_pooled_prompt_embeds")
        bound = self._bound_copy()
        to = lambda x: x.to(self.device, self.dtype) if x is not None else None
        bound.prompt_embeds, bound.pooled_prompt_embeds = to(prompt_embeds), to(pooled_prompt_embeds)
        bound.negative_prompt_embeds = to(negative_prompt_embeds) if cfg else None
        bound.negative_pooled_prompt_embeds = to(negative_pooled_prompt_embeds) if cfg else None
        bound.guidance_scale = float(guidance_scale)
        return bound

    def _conditioning(self, batch: int) -> tuple[Tensor, Tensor, bool]:
        """``(text, pooled, guided)`` for ``batch`` samples: ``[negative; positive]`` when guided."""
        if self.prompt_embeds is None or self.pooled_prompt_embeds is None:
            raise ValueError("bind the conditioning first: denoiser = denoiser.condition(prompt_embeds=..., pooled_prompt_embeds=...)")
        grow = lambda x: x.expand(batch, *x.shape[1:])
        text, pooled = grow(self.prompt_embeds), grow(self.pooled_prompt_embeds)
        if self.negative_prompt_embeds is None or self.negative_pooled_prompt_embeds is None:
            return text, pooled, False
        return (torch.cat([grow(self.negative_prompt_embeds), text]),
                torch.cat([grow(self.negative_pooled_prompt_embeds), pooled]), True)

    # --- the Denoiser role ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``z0_hat = z_s - s v_hat`` with ``v_hat`` the (guided) velocity at ``s = t``."""
        text, pooled, guided = self._conditioning(x_t.shape[0])
        velocity = lambda x: self._velocity(x, t, text, pooled)
        v = classifier_free_guidance(velocity, x_t, self.guidance_scale if guided else None)
        return x_t - t.to(x_t.device, x_t.dtype, non_blocking=True) * v.to(x_t.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sample_shape={self.sample_shape}, guidance_scale={self.guidance_scale})"
