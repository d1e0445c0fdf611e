"""Rectified-flow transformers (Stable Diffusion 3, Flux) as a `Denoiser`, over diffusers.

The transformer predicts the velocity ``v = eps - z0`` of ``z_s = (1 - s) z0 + s eps``, so
``alpha = 1 - s``, ``sigma = s`` and ``z0_hat = z_s - s v_hat``. The time grid is exactly the
``s`` grid the diffusers pipeline uses for that number of steps and image size: a copy of the
pipeline's ``FlowMatchEulerDiscreteScheduler`` with its shift (static, or dynamic with
``mu`` computed from the latent sequence length as the pipeline does), and the last update
moves to its terminal ``s``. The engine's DDIM update with ``eta = 0`` is then the pipeline's
Euler step, so without a constraint a sample equals the pipeline's output from the same
latents. Classifier-free guidance is one batched forward of the unconditional and conditional
inputs. SD3 receives the time ``1000 s``; Flux receives ``s``, packed latents (2x2 patches with
position ids, unpacked inside the adapter so that constraints always see ``(B, C, H, W)``) and,
when guidance-distilled, its guidance embedding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.denoisers.diffusers_base import DiffusersDenoiser
from constrained_diffusion.denoisers.vae import VAECodec


def _calculate_shift(seq_len: int, base_len: int, max_len: int, base_shift: float, max_shift: float) -> float:
    """``mu`` linear in the image's latent sequence length (SD3 / Flux resolution-dependent shift)."""
    m = (max_shift - base_shift) / (max_len - base_len)
    return seq_len * m + base_shift - m * base_len


class FlowMatchDenoiser(DiffusersDenoiser):
    """A Stable Diffusion 3 transformer, its VAE (the codec) and its flow-matching schedule.

    Build with `from_pretrained` or `from_pipeline`, then bind the conditioning with
    `condition`. Samples are latents ``(C, H/f, W/f)``.

    Args:
        pipe: a diffusers ``StableDiffusion3Pipeline`` (``transformer``, ``vae``, ``scheduler``).
        height: image height in pixels (default: the transformer's ``sample_size`` x the VAE factor).
        width: image width in pixels (same default).
    """

    SUPPORTED = ("StableDiffusion3Pipeline", "FluxPipeline")

    def __init__(self, pipe: Any, height: int | None = None, width: int | None = None) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

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
        channels = self._latent_channels(pipe)
        super().__init__((channels, height // codec.factor, width // codec.factor), space="latent", codec=codec)
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        self.height, self.width, self.patch = height, width, patch
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self._terminal = 0.0
        self.prompt_embeds: Tensor | None = None
        self.pooled_prompt_embeds: Tensor | None = None
        self.negative_prompt_embeds: Tensor | None = None
        self.negative_pooled_prompt_embeds: Tensor | None = None
        self.guidance_scale = 1.0

    @classmethod
    def from_pipeline(cls, pipe: Any, height: int | None = None, width: int | None = None) -> "FlowMatchDenoiser":
        """Wrap an existing pipeline (its modules are shared, not copied); a Flux pipeline gives a `FluxDenoiser`."""
        if cls is FlowMatchDenoiser and type(pipe).__name__.startswith("Flux"):
            return FluxDenoiser(pipe, height, width)
        return super().from_pipeline(pipe, height, width)

    # --- what differs between SD3 and Flux ---------------------------------------------------
    @staticmethod
    def _patch(pipe: Any) -> int:
        return int(getattr(pipe.transformer.config, "patch_size", 1))

    @staticmethod
    def _default_sample_size(pipe: Any) -> int:
        return int(pipe.transformer.config.sample_size)

    @staticmethod
    def _latent_channels(pipe: Any) -> int:
        return int(pipe.transformer.config.in_channels)

    def _velocity(self, x: Tensor, s: Tensor, text: Tensor, pooled: Tensor) -> Tensor:
        """The transformer's velocity for latents ``x`` ``(B, C, h, w)`` at time ``s``."""
        timestep = (s.float() * self.num_train_timesteps).to(self.device).expand(x.shape[0])
        return self.transformer(hidden_states=x.to(self.dtype), timestep=timestep, encoder_hidden_states=text,
                                pooled_projections=pooled, return_dict=False)[0]

    def _grid(self, steps: int) -> dict[str, Any]:
        """Keyword arguments of ``scheduler.set_timesteps`` that reproduce the pipeline's grid."""
        config = self.scheduler.config
        if not config.get("use_dynamic_shifting", False):
            return {}
        h, w = self.sample_shape[-2:]
        return {"mu": _calculate_shift((h // self.patch) * (w // self.patch), config.get("base_image_seq_len", 256),
                                       config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                       config.get("max_shift", 1.16))}

    def condition(self, prompt: str | list[str] = "", negative_prompt: str | list[str] = "", guidance_scale: float = 1.0,
                  prompt_embeds: Tensor | None = None, pooled_prompt_embeds: Tensor | None = None,
                  negative_prompt_embeds: Tensor | None = None,
                  negative_pooled_prompt_embeds: Tensor | None = None) -> "FlowMatchDenoiser":
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
        to = lambda x: x.to(self.device, self.dtype) if x is not None else None  # noqa: E731
        bound.prompt_embeds, bound.pooled_prompt_embeds = to(prompt_embeds), to(pooled_prompt_embeds)
        bound.negative_prompt_embeds = to(negative_prompt_embeds) if cfg else None
        bound.negative_pooled_prompt_embeds = to(negative_pooled_prompt_embeds) if cfg else None
        bound.guidance_scale = float(guidance_scale)
        return bound

    @torch.no_grad()
    def _encode(self, prompt: str | list[str], negative_prompt: str | list[str], cfg: bool) -> tuple[Any, Any, Any, Any]:
        pos, neg, pooled, neg_pooled = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=cfg, negative_prompt=negative_prompt or None)
        return pos, pooled, neg, neg_pooled

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def _conditioning(self, batch: int) -> tuple[Tensor, Tensor, bool]:
        if self.prompt_embeds is None or self.pooled_prompt_embeds is None:
            raise ValueError("bind the conditioning first: denoiser = denoiser.condition(prompt_embeds=..., pooled_prompt_embeds=...)")
        grow = lambda x: x.expand(batch, *x.shape[1:])  # noqa: E731
        text, pooled = grow(self.prompt_embeds), grow(self.pooled_prompt_embeds)
        if self.negative_prompt_embeds is None or self.negative_pooled_prompt_embeds is None:
            return text, pooled, False
        return (torch.cat([grow(self.negative_prompt_embeds), text]),
                torch.cat([grow(self.negative_pooled_prompt_embeds), pooled]), True)

    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        text, pooled, guided = self._conditioning(x_t.shape[0])
        v = self._velocity(torch.cat([x_t, x_t]) if guided else x_t, t, text, pooled)
        if guided:
            uncond, cond = v.chunk(2)
            v = uncond + self.guidance_scale * (cond - uncond)
        return x_t - t.to(x_t) * v.to(x_t.dtype)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        s = torch.as_tensor(t, dtype=torch.float64)
        return 1.0 - s, s

    def timesteps(self, steps: int) -> Tensor:
        """The pipeline's ``s`` grid for ``steps`` and this image size (also fixes the terminal ``s``)."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        grid = self._grid(steps)
        if "sigmas" in grid:
            self.scheduler.set_timesteps(sigmas=grid.pop("sigmas"), device="cpu", **grid)
        else:
            self.scheduler.set_timesteps(steps, device="cpu", **grid)
        sigmas = self.scheduler.sigmas.double()
        self._terminal = float(sigmas[-1])
        return sigmas[:-1].clone()

    def final_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        s = torch.tensor(self._terminal, dtype=torch.float64)
        return 1.0 - s, s

    def __repr__(self) -> str:
        return f"FlowMatchDenoiser(sample_shape={self.sample_shape}, guidance_scale={self.guidance_scale})"


class FluxDenoiser(FlowMatchDenoiser):
    """Flux (``FluxPipeline``): packed latents, time ``s``, guidance embedding, linear ``s`` grid.

    Constraints see unpacked latents ``(B, C, h, w)`` with ``C = in_channels / 4``; packing into
    ``(B, h w / 4, 4 C)`` with image and text position ids happens inside the model call. A
    guidance-distilled transformer (``guidance_embeds``) receives ``guidance_scale`` as its
    guidance embedding and no unconditional pass; otherwise ``guidance_scale > 1`` with negative
    embeddings is true classifier-free guidance. The grid is the pipeline's:
    ``linspace(1, 1/steps, steps)`` shifted with ``mu`` from the packed sequence length.
    """

    @staticmethod
    def _patch(pipe: Any) -> int:
        return 2  # 2x2 packing

    @staticmethod
    def _default_sample_size(pipe: Any) -> int:
        return int(getattr(pipe, "default_sample_size", 128))

    @staticmethod
    def _latent_channels(pipe: Any) -> int:
        return int(pipe.transformer.config.in_channels) // 4

    @property
    def distilled(self) -> bool:
        """Whether the transformer takes a guidance embedding (FLUX.1-dev) instead of true CFG."""
        return bool(getattr(self.transformer.config, "guidance_embeds", False))

    def condition(self, prompt: str | list[str] = "", negative_prompt: str | list[str] = "", guidance_scale: float = 1.0,
                  prompt_embeds: Tensor | None = None, pooled_prompt_embeds: Tensor | None = None,
                  negative_prompt_embeds: Tensor | None = None,
                  negative_pooled_prompt_embeds: Tensor | None = None) -> "FluxDenoiser":
        """As `FlowMatchDenoiser.condition`; for a distilled transformer ``guidance_scale`` is its embedding."""
        if self.distilled:
            if guidance_scale < 0:
                raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
            bound = super().condition(prompt, "", 1.0, prompt_embeds, pooled_prompt_embeds)
            bound.guidance_scale = float(guidance_scale)
            return bound  # type: ignore[return-value]
        return super().condition(prompt, negative_prompt, guidance_scale, prompt_embeds, pooled_prompt_embeds,  # type: ignore[return-value]
                                 negative_prompt_embeds, negative_pooled_prompt_embeds)

    @torch.no_grad()
    def _encode(self, prompt: str | list[str], negative_prompt: str | list[str], cfg: bool) -> tuple[Any, Any, Any, Any]:
        pos, pooled, _ = self.pipe.encode_prompt(prompt=prompt, prompt_2=None, device=self.device, num_images_per_prompt=1)
        neg = neg_pooled = None
        if cfg and not self.distilled:
            neg, neg_pooled, _ = self.pipe.encode_prompt(prompt=negative_prompt or "", prompt_2=None, device=self.device,
                                                         num_images_per_prompt=1)
        return pos, pooled, neg, neg_pooled

    def _conditioning(self, batch: int) -> tuple[Tensor, Tensor, bool]:
        if self.distilled:
            text, pooled, _ = super()._conditioning(batch)
            return text, pooled, False
        return super()._conditioning(batch)

    def _velocity(self, x: Tensor, s: Tensor, text: Tensor, pooled: Tensor) -> Tensor:
        B, C, h, w = x.shape
        packed = x.reshape(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (h // 2) * (w // 2), C * 4)
        img_ids = torch.zeros(h // 2, w // 2, 3)
        img_ids[..., 1] += torch.arange(h // 2)[:, None]
        img_ids[..., 2] += torch.arange(w // 2)[None, :]
        img_ids = img_ids.reshape(-1, 3).to(self.device, self.dtype)
        txt_ids = torch.zeros(text.shape[1], 3, device=self.device, dtype=self.dtype)
        timestep = (s.float() * self.num_train_timesteps).to(self.device, self.dtype).expand(B) / 1000
        guidance = torch.full((B,), self.guidance_scale, device=self.device, dtype=torch.float32) if self.distilled else None
        v = self.transformer(hidden_states=packed.to(self.dtype), timestep=timestep, guidance=guidance,
                             pooled_projections=pooled, encoder_hidden_states=text, txt_ids=txt_ids, img_ids=img_ids,
                             return_dict=False)[0]
        return v.reshape(B, h // 2, w // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, C, h, w)

    def _grid(self, steps: int) -> dict[str, Any]:
        import numpy as np

        config = self.scheduler.config
        h, w = self.sample_shape[-2:]
        mu = _calculate_shift((h // 2) * (w // 2), config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                              config.get("base_shift", 0.5), config.get("max_shift", 1.15))
        if config.get("use_flow_sigmas", False):
            return {"mu": mu}
        return {"sigmas": np.linspace(1.0, 1 / steps, steps), "mu": mu}

    def __repr__(self) -> str:
        return f"FluxDenoiser(sample_shape={self.sample_shape}, guidance_scale={self.guidance_scale}, distilled={self.distilled})"
