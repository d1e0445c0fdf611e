r"""How the finite-difference direction degrades in half precision, and the step that fixes it.

For a denoiser ``D`` cast to ``dtype`` the inexact-Newton direction
``d_h = (D(x + h' e) - D(x)) / h'`` (``h' = h / ||e||_inf``, `fd_jvp`) is compared with the
float32 forward-mode JVP ``J e`` of the same network (`forward_jvp`) by the per-sample cosine

    cos(d_h, J e) = <d_h, J e> / (||d_h|| ||J e||),

the worst over the batch and over three times of a 10-step grid. The networks are tiny random
diffusers pipelines (SD 1.x UNet, SD3 and Flux transformers) built from configs, no download.
``constrained-diffusion analyze fd-precision`` prints the table; the Concepts page shows it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.linalg.finite_difference import fd_jvp, resolve_h
from constrained_diffusion.solvers.exact_jvp import forward_jvp

KINDS = ("sd", "sd3", "flux")
"""The tiny pipelines: Stable Diffusion 1.x (UNet), SD3 and Flux (transformers)."""


def _vae():  # noqa: ANN202
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4)


def tiny_pipeline(kind: str):  # noqa: ANN201
    """A randomly initialised (seed 0) tiny diffusers pipeline of ``kind`` in ``KINDS``, without text encoders.

    Raises:
        ValueError: ``kind`` is not one of ``KINDS``.
    """
    import diffusers as df

    torch.manual_seed(0)
    if kind == "sd":
        unet = df.UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                       out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                       norm_num_groups=4, attention_head_dim=4)
        sched = df.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                 set_alpha_to_one=False, steps_offset=1)
        return df.StableDiffusionPipeline(vae=_vae(), text_encoder=None, tokenizer=None, unet=unet.eval(), scheduler=sched,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if kind == "sd3":
        net = df.SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
                                       num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
                                       pooled_projection_dim=64, out_channels=4)
        return df.StableDiffusion3Pipeline(transformer=net.eval(), scheduler=df.FlowMatchEulerDiscreteScheduler(shift=3.0),
                                           vae=_vae(), text_encoder=None, tokenizer=None, text_encoder_2=None,
                                           tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    if kind == "flux":
        net = df.FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                        axes_dims_rope=[4, 4, 8], guidance_embeds=True)
        sched = df.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=16, max_image_seq_len=256)
        return df.FluxPipeline(scheduler=sched, vae=_vae(), text_encoder=None, tokenizer=None, text_encoder_2=None,
                               tokenizer_2=None, transformer=net.eval())
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def tiny_denoiser(kind: str, dtype: torch.dtype = torch.float32, pipe=None) -> Denoiser:  # noqa: ANN001
    """The adapter of a tiny pipeline (`tiny_pipeline`, or a copy of ``pipe``) cast to ``dtype``, conditioned on
    fixed random prompt embeddings (seeded)."""
    from constrained_diffusion.denoisers import FluxDenoiser, SD3Denoiser, StableDiffusionDenoiser

    pipe = copy.deepcopy(pipe if pipe is not None else tiny_pipeline(kind)).to(dtype)
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 7, 32, generator=g).to(dtype)
    if kind == "sd":
        return StableDiffusionDenoiser.from_pipeline(pipe).condition(prompt_embeds=embeds)
    pooled = torch.randn(1, 64 if kind == "sd3" else 32, generator=g).to(dtype)
    cls = SD3Denoiser if kind == "sd3" else FluxDenoiser
    return cls.from_pipeline(pipe).condition(prompt_embeds=embeds, pooled_prompt_embeds=pooled)


def worst_cosine(a: Tensor, b: Tensor) -> float:
    """``min_i cos(a_i, b_i)`` over the batch, computed in float64; ``a, b``: ``(B, ...)``."""
    return torch.nn.functional.cosine_similarity(a.double().flatten(1), b.double().flatten(1)).min().item()


@dataclass(frozen=True)
class PrecisionRow:
    """One row of the table: a pipeline in one dtype.

    Attributes:
        kind: the pipeline (``KINDS``).
        dtype: its dtype.
        cosines: ``h -> worst cosine`` with the float32 JVP, for each step of the sweep.
        auto_h: the precision-aware step ``h=None`` resolves to for the first state.
        auto_cosine: the worst cosine with ``h=None``.
    """

    kind: str
    dtype: torch.dtype
    cosines: dict[float, float]
    auto_h: float
    auto_cosine: float


def _sweep(den: Denoiser, x: Tensor, e: Tensor, times: Sequence[Tensor], refs: Sequence[Tensor],
           hs: Sequence[float | None]) -> list[float]:
    """Worst cosine over ``times`` of `fd_jvp` with each ``h`` of ``hs`` against ``refs``."""
    out = []
    for h in hs:
        out.append(min(worst_cosine(fd_jvp(lambda z, t=t: den(z, t), x.to(den.dtype), e.to(den.dtype), h, dtype=den.dtype), ref)
                       for t, ref in zip(times, refs)))
    return out


def precision_rows(kinds: Sequence[str] = KINDS, dtypes: Sequence[torch.dtype] = (torch.float32, torch.float16, torch.bfloat16),
                   hs: Sequence[float] = (0.005, 0.02, 0.05, 0.1, 0.3), steps: int = 10, time_indices: Sequence[int] = (0, 4, 8),
                   batch: int = 2, seed: int = 0, log: Callable[[str], None] | None = None) -> list[PrecisionRow]:
    """The direction cosine against ``h`` for each pipeline in ``kinds`` and dtype in ``dtypes``.

    Args:
        kinds: pipelines of ``KINDS``.
        dtypes: the dtypes the pipeline is cast to.
        hs: the fixed steps of the sweep (each ``> 0``).
        steps: the grid (``denoiser.grid(steps)``) the times are taken from.
        time_indices: indices into the grid's times (each ``< steps``).
        batch: states per time; ``x ~ N(0, I)`` and ``e ~ N(0, I)`` of shape ``(batch, *sample_shape)``.
        seed: seed of ``x`` and ``e``.
        log: called with each finished row's text, if given.

    Returns:
        One `PrecisionRow` per ``(kind, dtype)``.

    Raises:
        ValueError: an ``h`` that is not ``> 0``, or a time index outside the grid (naming the parameter).
    """
    if any(not h > 0 for h in hs):
        raise ValueError(f"hs: each must be > 0, got {list(hs)}")
    if any(not 0 <= i < steps for i in time_indices):
        raise ValueError(f"time_indices: each must lie in [0, {steps}), got {list(time_indices)}")
    rows = []
    for kind in kinds:
        pipe = tiny_pipeline(kind)
        ref_model = tiny_denoiser(kind, torch.float32, pipe)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, *ref_model.sample_shape, generator=g)
        e = torch.randn(batch, *ref_model.sample_shape, generator=g)
        times = [ref_model.grid(steps).times[i] for i in time_indices]
        refs = [forward_jvp(ref_model, x, t, e)[1] for t in times]
        for dtype in dtypes:
            den = ref_model if dtype == torch.float32 else tiny_denoiser(kind, dtype, pipe)
            *fixed, auto = _sweep(den, x, e, times, refs, [*hs, None])
            auto_h = float(resolve_h(None, x[:1].to(dtype), dtype).max()) if dtype != torch.float32 else 0.005
            rows.append(PrecisionRow(kind, dtype, dict(zip(hs, fixed)), auto_h, auto))
            if log is not None:
                log(f"{kind} {dtype}: " + " ".join(f"{h}:{c:.4f}" for h, c in zip(hs, fixed)) + f" auto({auto_h:.3g}):{auto:.4f}")
    return rows
