"""Stable Diffusion 1.x / 2.x (epsilon and v-prediction) as a `Denoiser`, over diffusers.

The UNet predicts ``eps`` or ``v`` on latents ``x_t = alpha_t z0 + sigma_t eps`` with
``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)`` from the scheduler's
``alphas_cumprod``. With classifier-free guidance (scale ``w > 1``) one batched forward of the
unconditional and conditional inputs gives ``out = out_u + w (out_c - out_u)``, and
``x0_hat`` follows from ``out`` (see `to_x0`). The schedule is a `VPSchedule` built once from
the pipeline scheduler's configuration (`ddim_schedule`): the ``alphas_cumprod`` a
``DDIMScheduler`` computes from its betas, its ``timestep_spacing`` and ``steps_offset``, and a
last update to its ``final_alpha_cumprod`` (``set_alpha_to_one``). The pipeline's scheduler is
never stepped or re-timed. With ``eta = 0`` and no constraint the sampler therefore reproduces
the diffusers pipeline run with a ``DDIMScheduler`` from the same latents (for the ``"leading"``
spacing of Stable Diffusion's configurations, and whenever ``steps`` divides ``T``; otherwise
diffusers' DDIM steps to ``t - T // steps``, off its own grid, while the sampler steps to the
next grid time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.denoisers.compiled import CompileOptions, compiled_forward
from constrained_diffusion.denoisers.diffusers_base import DiffusersDenoiser
from constrained_diffusion.denoisers.guidance import classifier_free_guidance
from constrained_diffusion.denoisers.network import Prediction, to_x0
from constrained_diffusion.denoisers.schedules import Spacing, VPSchedule
from constrained_diffusion.denoisers.vae import VAECodec

_PREDICTIONS: dict[str, Prediction] = {"epsilon": "epsilon", "v_prediction": "v", "sample": "sample"}
SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace")


def ddim_schedule(config: Mapping[str, Any], timestep_spacing: Spacing | None = None) -> tuple[VPSchedule, Prediction]:
    """The `VPSchedule` and prediction type of a DDIM scheduler with this configuration.

    ``abar_t`` are the ``alphas_cumprod`` diffusers' ``DDIMScheduler`` computes from the betas
    (``beta_schedule``, ``trained_betas``, ``rescale_betas_zero_snr``; in float32, as diffusers
    does); the grid follows ``timestep_spacing`` and ``steps_offset``; the final point is
    ``abar = 1`` if ``set_alpha_to_one`` else ``abar_0``. The scheduler built here is a private
    throwaway: nothing is set on, or read later from, the pipeline's scheduler.

    Args:
        config: a diffusers scheduler configuration (``pipe.scheduler.config``; a PNDM or DDPM
            configuration works too: missing DDIM keys take DDIM's defaults).
        timestep_spacing: ``"leading"``, ``"trailing"`` or ``"linspace"`` to override the
            configuration's spacing (``None``: keep it). With ``"trailing"`` and 20 steps over
            ``T = 1000`` the grid is ``999, 949, ..., 49`` (the paper's reference notebooks).

    Raises:
        ValueError: an unsupported ``prediction_type`` or ``timestep_spacing``.
    """
    from diffusers import DDIMScheduler

    if timestep_spacing is not None and timestep_spacing not in SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {SPACINGS} or None, got {timestep_spacing!r}")
    overrides = {} if timestep_spacing is None else {"timestep_spacing": timestep_spacing}
    ddim = DDIMScheduler.from_config(config, **overrides)
    prediction = ddim.config.prediction_type
    if prediction not in _PREDICTIONS:
        raise ValueError(f"unsupported prediction_type {prediction!r}")
    schedule = VPSchedule.from_alphas_cumprod(ddim.alphas_cumprod, spacing=ddim.config.timestep_spacing,
                                              offset=ddim.config.steps_offset, final_alpha_one=ddim.config.set_alpha_to_one)
    return schedule, _PREDICTIONS[prediction]


class StableDiffusionDenoiser(DiffusersDenoiser):
    """A Stable Diffusion UNet, its VAE (the codec) and its noise schedule, with bound conditioning.

    Build with `from_pretrained` or `from_pipeline`, then bind a prompt with
    `condition`. Samples are latents ``(4, H/8, W/8)``; ``images`` are decoded pixels.

    Args:
        pipe: a diffusers ``StableDiffusionPipeline`` (or any object with ``unet``, ``vae``,
            ``scheduler`` and, for prompts, ``encode_prompt``).
        height: image height in pixels (default: the UNet's ``sample_size`` x the VAE factor).
        width: image width in pixels (same default).
        timestep_spacing: override of the scheduler configuration's ``timestep_spacing``
            (``None``: keep it); see `ddim_schedule`. The pipeline's scheduler is not touched.
        compile: call the UNet through ``torch.compile`` (static shapes; on CUDA the UNet is
            moved to channels-last); see `constrained_diffusion.denoisers.compiled`.
        compile_mode: ``torch.compile``'s ``mode`` (``"reduce-overhead"``: CUDA graphs), or
            ``None``.
        compile_backend: ``torch.compile``'s ``backend`` (default ``"inductor"``).
    """

    SUPPORTED = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline")

    def __init__(self, pipe: Any, height: int | None = None, width: int | None = None,
                 timestep_spacing: Spacing | None = None, compile: bool = False, compile_mode: str | None = None,
                 compile_backend: str = "inductor") -> None:
        options = CompileOptions(compile, compile_mode, compile_backend)
        for part in ("unet", "vae", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ValueError(f"the pipeline has no {part}")
        if getattr(pipe.unet.config, "in_channels", 4) != getattr(pipe.vae.config, "latent_channels", 4):
            raise ValueError("unsupported UNet: its input channels differ from the VAE's latent channels (an inpainting UNet?)")
        codec = VAECodec(pipe.vae)
        f = codec.factor
        height = height or pipe.unet.config.sample_size * f
        width = width or pipe.unet.config.sample_size * f
        for name, value in (("height", height), ("width", width)):
            if value % f:
                raise ValueError(f"{name}={value} is not divisible by the VAE factor {f}")
        schedule, self.prediction = ddim_schedule(pipe.scheduler.config, timestep_spacing)
        super().__init__((pipe.unet.config.in_channels, height // f, width // f), codec=codec, schedule=schedule)
        self.pipe = pipe
        self.unet = pipe.unet
        self.compile_options = options
        self._unet = compiled_forward(pipe.unet, options, channels_last=pipe.unet.device.type == "cuda")
        self.height, self.width = height, width
        self.prompt_embeds: Tensor | None = None
        self.negative_prompt_embeds: Tensor | None = None
        self.guidance_scale = 1.0

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_pipeline(cls, pipe: Any, height: int | None = None, width: int | None = None,
                      timestep_spacing: Spacing | None = None, compile: bool = False, compile_mode: str | None = None,
                      compile_backend: str = "inductor") -> StableDiffusionDenoiser:
        """Wrap an existing pipeline (modules shared, not copied); the options as in `__init__`.

        `from_pretrained` forwards ``timestep_spacing=`` and the ``compile*`` options here.
        """
        return cls(pipe, height, width, timestep_spacing, compile, compile_mode, compile_backend)

    def with_timestep_spacing(self, timestep_spacing: Spacing) -> StableDiffusionDenoiser:
        """A copy (same modules and bound prompt, fresh counters) whose grid uses ``timestep_spacing``.

        The schedule is rebuilt from the pipeline scheduler's configuration with the spacing
        replaced (`ddim_schedule`); this denoiser and the scheduler are unchanged.

        Raises:
            ValueError: an unknown ``timestep_spacing``.
        """
        copy = self._bound_copy()
        copy.schedule, _ = ddim_schedule(self.pipe.scheduler.config, timestep_spacing)
        return copy

    def condition(self, prompt: str | list[str] = "", negative_prompt: str | list[str] = "",
                  guidance_scale: float = 1.0, prompt_embeds: Tensor | None = None,
                  negative_prompt_embeds: Tensor | None = None) -> StableDiffusionDenoiser:
        """A copy of this denoiser with the prompt (or its embeddings) and guidance scale bound.

        Raises:
            ValueError: a prompt for a pipeline without a text encoder; a guidance scale < 0;
                guidance > 1 with ``prompt_embeds`` but no ``negative_prompt_embeds``.
        """
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        cfg = guidance_scale > 1.0
        if prompt_embeds is None:
            if getattr(self.pipe, "text_encoder", None) is None or getattr(self.pipe, "tokenizer", None) is None:
                raise ValueError("prompt: this pipeline has no text encoder/tokenizer; pass prompt_embeds instead")
            with torch.no_grad():
                prompt_embeds, negative_prompt_embeds = self.pipe.encode_prompt(
                    prompt, self.device, 1, cfg, negative_prompt=negative_prompt or None)
        elif cfg and negative_prompt_embeds is None:
            raise ValueError("negative_prompt_embeds: guidance_scale > 1 with prompt_embeds needs negative_prompt_embeds")
        bound = self._bound_copy()
        bound.prompt_embeds = prompt_embeds.to(self.device, self.dtype)
        bound.negative_prompt_embeds = negative_prompt_embeds.to(self.device, self.dtype) if cfg and negative_prompt_embeds is not None else None
        bound.guidance_scale = float(guidance_scale)
        return bound

    # --- the Denoiser role ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def _embeds(self, batch: int) -> tuple[Tensor, bool]:
        if self.prompt_embeds is None:
            raise ValueError("bind a prompt first: denoiser = denoiser.condition(prompt=...) (an empty prompt is fine)")
        cond = self.prompt_embeds
        if cond.shape[0] not in (1, batch):
            raise ValueError(f"prompt_embeds has batch {cond.shape[0]} but the samples have batch {batch}")
        cond = cond.expand(batch, *cond.shape[1:])
        if self.negative_prompt_embeds is None:
            return cond, False
        neg = self.negative_prompt_embeds.expand(batch, *self.negative_prompt_embeds.shape[1:])
        return torch.cat([neg, cond]), True

    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        embeds, guided = self._embeds(x_t.shape[0])
        network = self._unet if self.compile_options.compile else self.unet
        unet = lambda x: network(x.to(self.dtype), t.to(self.device, non_blocking=True), encoder_hidden_states=embeds,
                                    return_dict=False)[0]
        out = classifier_free_guidance(unet, x_t, self.guidance_scale if guided else None)
        alpha, sigma = (float(v) for v in self.alpha_sigma(t))
        return to_x0(out.to(x_t.dtype), x_t, alpha, sigma, self.prediction)

    def __repr__(self) -> str:
        return (f"StableDiffusionDenoiser(sample_shape={self.sample_shape}, prediction={self.prediction!r}, "
                f"guidance_scale={self.guidance_scale})")
