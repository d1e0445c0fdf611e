r"""Leading eigenvalues of ``J``, ``(J + J^T)/2`` and ``(J - J^T)/2`` for any denoiser, matrix-free.

``J = d x0_hat / d x_t`` at a state ``x_t = alpha_t x0 + sigma_t eps`` drawn from the forward
process of a clean sample ``x0`` (a test digit, an image, or a sample of the model itself;
`clean_sample`), the noise ``eps`` seeded with ``seed + round(t)``. Three operators on flat
vectors of length ``D = prod(sample_shape)``:

* ``"J"``: ``v -> J v``, a forward difference (`linalg.fd_jvp`, one forward per product, the
  precision-aware step unless ``h`` is given) or, with ``jvp="exact"``, forward-mode AD;
* ``"sym"``: ``v -> (J v + J^T v) / 2``;
* ``"antisym"``: ``v -> (J v - J^T v) / 2``, whose eigenvalues are purely imaginary, ``±i mu``.

``J^T v`` is a vector-Jacobian product: one forward with a graph per state, then one backward
per product through the retained graph. Arnoldi (`linalg.arnoldi`) runs ``max(iterations)``
steps once per operator from the start vector ``x0_hat(x_t)`` (the reference notebook's
choice) or a seeded random vector; the first ``n`` steps of that run are exactly an ``n``-step
run, so every requested ``n`` is read off the same Hessenberg matrix (Ritz values of its
leading ``n x n`` block). A record holds the largest Ritz magnitude ``|lambda|_max``, the
leading Ritz value, the five largest magnitudes and the seconds to reach ``n`` products.

Times: the analysis takes the integer times of a 1000-step VP model (default 900, 700, 500,
300). A VP model uses them as they are (``t`` in ``[0, T - 1]``); a rectified flow
``x_s = (1 - s) x0 + s eps`` uses ``s = t / 1000``, the time its network receives in diffusers
(``timestep = 1000 s``) — the same network input, not the same noise level (`analysis_time`).

``constrained-diffusion analyze spectra`` runs it on any model, writes one JSON line per
``(model, t, operator, iterations)`` and resumes from them, draws the figure and the docs
table; `dense_spectra` gives the exact values for small models (the check of the estimates).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, field_validator
from torch import Tensor

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.denoisers.schedules import FlowSchedule, VPSchedule
from constrained_diffusion.linalg.arnoldi import ArnoldiResult, arnoldi
from constrained_diffusion.linalg.finite_difference import fd_jvp
from constrained_diffusion.solvers.exact_jvp import forward_jvp, math_attention
from constrained_diffusion.utils.jsonl_store import JsonlStore

Operator = Literal["J", "sym", "antisym"]
OPERATORS: tuple[Operator, ...] = ("J", "sym", "antisym")
"""The operators: ``J``, its symmetric part ``(J + J^T)/2`` and its antisymmetric part ``(J - J^T)/2``."""
LABELS: dict[str, str] = {"J": "J", "sym": "(J+J^T)/2", "antisym": "(J-J^T)/2"}
"""How tables and figures name the operators."""
PAPER_SD15: dict[str, dict[int, float]] = {
    "J": {900: 16.85, 700: 8.45, 500: 7.88, 300: 4.98},
    "sym": {900: 16.44, 700: 8.65, 500: 9.00, 300: 6.52},
    "antisym": {900: 2.67, 700: 3.35, 500: 2.51, 300: 1.22},
}
"""The paper's largest ``|lambda|`` on Stable Diffusion 1.5 (Arnoldi, 30 iterations), per operator and ``t``."""
FLOW_TIME_SCALE = 1000.0
"""A flow model reads the analysis time ``t`` as ``s = t / FLOW_TIME_SCALE``."""
KEY_FIELDS = ("model", "state", "dtype", "t", "operator", "iterations", "method", "jvp", "h", "start", "seed")
"""What identifies a record: the model, the clean sample, every setting, the time, the operator and ``n``."""

MatVec = Callable[[Tensor], Tensor]


# --- times and states -----------------------------------------------------------------------
def analysis_time(denoiser: Denoiser, t: float) -> Tensor:
    """The denoiser's time for the analysis time ``t`` (an integer time of a 1000-step VP model).

    A `VPSchedule` takes ``t`` itself (an integer in ``[0, T - 1]``); a `FlowSchedule` takes
    ``s = t / 1000`` in ``[0, 1]``.

    Raises:
        ValueError: ``t`` outside that range or not an integer for a VP model (naming ``times``),
            or a schedule of another kind.

    Examples:
        >>> import constrained_diffusion as cd
        >>> float(analysis_time(cd.models.load("mnist-flow"), 700))
        0.7
        >>> int(analysis_time(cd.models.load("mnist-ddpm"), 700))
        700
    """
    schedule = denoiser.schedule
    if isinstance(schedule, VPSchedule):
        T = schedule.num_train_timesteps
        if not (float(t).is_integer() and 0 <= t <= T - 1):
            raise ValueError(f"times: each must be an integer in [0, {T - 1}] for this {T}-step VP model, got {t:g}")
        return torch.tensor(int(t))
    if isinstance(schedule, FlowSchedule):
        if not 0 <= t <= FLOW_TIME_SCALE:
            raise ValueError(f"times: each must lie in [0, {FLOW_TIME_SCALE:g}] for a flow model (s = t / 1000), got {t:g}")
        return torch.tensor(t / FLOW_TIME_SCALE, dtype=torch.float64)
    raise ValueError(f"times: cannot map analysis times onto a {type(schedule).__name__}; expected a VP or flow schedule")


def noised_state(denoiser: Denoiser, x0: Tensor, t: Tensor, seed: int) -> Tensor:
    """``x_t = alpha_t x0 + sigma_t eps`` with ``eps ~ N(0, I)`` from CPU seed ``seed``, in the model's dtype.

    Args:
        denoiser: the model (its schedule gives ``alpha_t, sigma_t``).
        x0: clean sample ``(1, *sample_shape)``.
        t: the model time (`analysis_time`).
        seed: seed of ``eps``.
    """
    alpha, sigma = (float(v) for v in denoiser.alpha_sigma(t))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    return (alpha * x0.float().cpu() + sigma * eps).to(denoiser.device, denoiser.dtype)


def clean_sample(denoiser: Denoiser, image: str | Path | None = None, digit: int | None = None,
                 sample_steps: int = 20, seed: int = 0) -> tuple[Tensor, str]:
    """The clean sample ``x0`` ``(1, *sample_shape)`` whose forward process the analysis looks at, and its name.

    In order of precedence: an image file (resized to the model's image size, in ``[-1, 1]``,
    grey for one channel; encoded by the codec for a latent model); MNIST test digit ``digit``
    (pixel models of shape ``(1, 32, 32)``); otherwise a sample of the model itself,
    ``sample_steps`` unconstrained DDIM steps from the noise of ``seed``.

    Raises:
        ValueError: ``digit`` for a model that is not 1x32x32, or out of range.
        FileNotFoundError: ``image`` does not exist.
    """
    if image is not None:
        return _image_sample(denoiser, Path(image)), f"image {Path(image).name} sha256:{_file_digest(Path(image))}"
    if digit is not None:
        from constrained_diffusion.data import mnist

        if denoiser.space != "pixel" or denoiser.sample_shape != (1, 32, 32):
            raise ValueError(f"digit: test digits are 1x32x32 images; this model's samples are {denoiser.sample_shape}")
        images, _ = mnist("held-out")
        if not 0 <= digit < images.shape[0]:
            raise ValueError(f"digit must lie in [0, {images.shape[0] - 1}], got {digit}")
        return images[digit:digit + 1].clone(), f"test digit {digit}"
    from constrained_diffusion.sampling import ConstrainedSampler

    result = ConstrainedSampler(denoiser, steps=sample_steps).sample(
        None, generator=torch.Generator().manual_seed(seed), batch_size=1, progress=False)
    return result.sample.detach().float().cpu(), f"model sample ({sample_steps} DDIM steps, seed {seed})"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _image_sample(denoiser: Denoiser, path: Path) -> Tensor:
    """An image file as ``x0``: pixels in ``[-1, 1]`` at the model's size, encoded for a latent model."""
    import numpy as np
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"image: no file at {path}")
    if denoiser.codec is None:
        channels, height, width = denoiser.sample_shape[0], *denoiser.sample_shape[-2:]
    else:
        channels = 3
        height, width = (int(getattr(denoiser, "height", 0)), int(getattr(denoiser, "width", 0)))
        if not height or not width:
            raise ValueError(f"image: cannot tell the pixel size of {type(denoiser).__name__}")
    if channels not in (1, 3):
        raise ValueError(f"image: the model takes {channels}-channel images; only grey and RGB files are supported")
    picture = Image.open(path).convert("L" if channels == 1 else "RGB").resize((width, height), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32).copy()).reshape(height, width, -1)
    x = (pixels.permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0)
    if denoiser.codec is None:
        return x
    with torch.no_grad():
        return denoiser.codec.encode(x.to(denoiser.device)).float().cpu()


SD15_RANDOM = "sd15-random"
"""The model name of the Stable Diffusion 1.5 UNet architecture with random weights (64x64 latents, as ``bench-sd``)."""


def load_denoiser(name: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                  prompt: str = "") -> tuple[Denoiser, str]:
    """Any model the analyses take, conditioned, and the name its records are keyed by.

    ``name`` is what `constrained_diffusion.models.load` takes (a shipped model, a weight file,
    a diffusers folder, a Hub id) or ``"sd15-random"``. A diffusers model is bound to
    ``prompt`` (empty by default); a pipeline without text encoders gets zero prompt
    embeddings ``(1, 77, width)`` of its network's widths (the empty-prompt stand-in).

    Returns:
        ``(denoiser, key)``: ``key`` adds to ``name`` a fingerprint of the weights (a shipped
        model's or a file's SHA-256 prefix; a folder's file names and sizes) and the dtype.

    Raises:
        ValueError: an unknown model, or a model that is not a denoiser (naming ``model``).
        FileNotFoundError: a missing file or folder.
    """
    from constrained_diffusion.models import load
    from constrained_diffusion.models.loading import parse_dtype

    torch_dtype = parse_dtype(dtype)
    if name == SD15_RANDOM:
        from constrained_diffusion.benchmarks.sd_unet import SD15_UNET, conditioned_unet_denoiser

        model: Any = conditioned_unet_denoiser(SD15_UNET, 64, str(device or "cpu"), torch_dtype or torch.float32)
        return model, f"{name} (seed 0) {model.dtype}"
    from constrained_diffusion.models.loading import ALIASES

    model = load(name, device, torch_dtype)
    if not isinstance(model, Denoiser):
        raise ValueError(f"model: {name} is a {type(model).__name__}, not a diffusion or flow model")
    return _conditioned(model, prompt), f"{ALIASES.get(name, name)} {_fingerprint(name)} {model.dtype}"


def _conditioned(model: Denoiser, prompt: str) -> Denoiser:
    """A diffusers adapter bound to ``prompt`` (zero embeddings without text encoders); other models as they are."""
    pipe = getattr(model, "pipe", None)
    condition = getattr(model, "condition", None)
    if pipe is None or condition is None:
        return model
    if getattr(pipe, "text_encoder", None) is not None and getattr(pipe, "tokenizer", None) is not None:
        return condition(prompt=prompt)
    if prompt:
        raise ValueError("prompt: this pipeline has no text encoder; analyse it without --prompt (zero embeddings)")
    net = getattr(pipe, "unet", None) or pipe.transformer
    config = net.config
    width = getattr(config, "cross_attention_dim", None) or config.joint_attention_dim
    embeds = torch.zeros(1, 77, int(width), device=model.device, dtype=model.dtype)
    pooled_dim = getattr(config, "pooled_projection_dim", None)
    if pooled_dim is None:
        return condition(prompt_embeds=embeds)
    return condition(prompt_embeds=embeds, pooled_prompt_embeds=torch.zeros(1, int(pooled_dim), device=model.device,
                                                                            dtype=model.dtype))


def _fingerprint(name: str) -> str:
    """SHA-256 prefix of a shipped model's or a weight file's bytes; for a folder, of its file names and sizes."""
    from constrained_diffusion.models import weights_digest, weights_path

    path = weights_path(name)
    if path is not None:
        return weights_digest(path)
    folder = Path(name)
    if folder.is_dir():
        listing = sorted(f"{p.relative_to(folder)}:{p.stat().st_size}" for p in folder.rglob("*") if p.is_file())
        return "files:" + hashlib.sha256("\n".join(listing).encode()).hexdigest()[:16]
    return "hub"


# --- the operators --------------------------------------------------------------------------
def jacobian_operators(denoiser: Denoiser, x_t: Tensor, t: Tensor, h: float | None = None,
                       jvp: Literal["fd", "exact"] = "fd") -> tuple[Tensor, dict[str, MatVec]]:
    """``x0_hat(x_t)`` and the three operators on ``(1, *sample_shape)`` float vectors.

    ``J v`` by `fd_jvp` (reusing ``x0_hat(x_t)``: one forward per product) or by `forward_jvp`
    (``jvp="exact"``); ``J^T v`` by backpropagation through one retained graph. Products are
    returned in float32 (float64 for a float64 model).

    Args:
        denoiser: the model.
        x_t: the state ``(1, *sample_shape)`` in the model's dtype.
        t: the model time.
        h: max-norm of the finite-difference step; ``None``: precision-aware (`linalg.resolve_h`).
        jvp: ``"fd"`` or ``"exact"``.

    Returns:
        ``(x0_hat, {"J": ..., "JT": ..., "sym": ..., "antisym": ...})``.
    """
    work = torch.float64 if denoiser.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        fx = denoiser(x_t, t)
    graph: dict[str, Tensor] = {}

    def jv(v: Tensor) -> Tensor:
        if jvp == "exact":
            return forward_jvp(denoiser, x_t, t, v.to(work))[1].to(work)
        return fd_jvp(lambda z: denoiser(z, t), x_t, v.to(work), h, fx=fx, dtype=denoiser.dtype).to(work)

    def jtv(v: Tensor) -> Tensor:
        if not graph:
            with torch.enable_grad(), math_attention():
                graph["leaf"] = x_t.detach().clone().requires_grad_(True)
                graph["out"] = denoiser(graph["leaf"], t)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(graph["out"], graph["leaf"], v.to(graph["out"].dtype), retain_graph=True)
        denoiser.count_backward()
        return g.to(work)

    ops: dict[str, MatVec] = {"J": jv, "JT": jtv, "sym": lambda v: 0.5 * (jv(v) + jtv(v)),
                              "antisym": lambda v: 0.5 * (jv(v) - jtv(v))}
    return fx, ops


def ritz_values(result: ArnoldiResult, n: int) -> Tensor:
    """Ritz values after the first ``n`` steps of the (single-sample) run ``result``, by decreasing magnitude."""
    m = min(n, int(result.size[0]))
    ritz = torch.linalg.eigvals(result.hessenberg[0, :m, :m])
    return ritz[torch.argsort(ritz.abs(), descending=True)]


def dense_spectra(denoiser: Denoiser, x_t: Tensor, t: Tensor) -> dict[str, Tensor]:
    """Exact eigenvalues of the three operators from the dense Jacobian (`analysis.jacobian`).

    Returns:
        ``{"J", "sym", "antisym"}`` -> complex ``(D,)`` eigenvalues sorted by decreasing magnitude.
    """
    from constrained_diffusion.analysis.jacobian import jacobian

    J = jacobian(denoiser, x_t, t)
    out = {}
    for name, M in (("J", J), ("sym", 0.5 * (J + J.T)), ("antisym", 0.5 * (J - J.T))):
        values = torch.linalg.eigvals(M)
        out[name] = values[torch.argsort(values.abs(), descending=True)]
    return out


# --- the analysis ---------------------------------------------------------------------------
class SpectraConfig(BaseModel):
    """Options of `Spectra`."""

    times: list[float] = Field([900, 700, 500, 300], min_length=1,
                               description="analysis times (integer times of a 1000-step VP model; flows: s = t/1000)")
    iterations: list[int] = Field([10, 30], min_length=1, description="Arnoldi steps n, each >= 1, read off one run")
    operators: list[Operator] = Field(list(OPERATORS), min_length=1, description="which of J, sym, antisym")
    h: float | None = Field(None, gt=0, description="finite-difference max-norm step; None: precision-aware")
    jvp: Literal["fd", "exact"] = Field("fd", description="J v by finite difference (the reference) or forward-mode AD")
    start: Literal["x0-hat", "random"] = Field("x0-hat", description="Arnoldi start: x0_hat(x_t) (the reference) or N(0, I)")
    seed: int = Field(0, description="noise of time t from seed + round(t); random start from seed")
    dense: bool = Field(False, description="also the exact eigenvalues from the dense Jacobian (small models)")

    @field_validator("iterations")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value):
            raise ValueError(f"each must be >= 1, got {value}")
        return value


class Spectra(Configurable):
    """The largest eigenvalues of ``J``, ``(J+J^T)/2`` and ``(J-J^T)/2`` per time (see the module docstring).

    Cost per time and operator: ``max(iterations)`` products, each one forward (``J``), one
    backward (``J^T``) or both (the two parts), plus one forward with a graph per time.

    Examples:
        >>> import constrained_diffusion as cd
        >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
        >>> x0 = model.sample_prior(1, torch.Generator().manual_seed(0))
        >>> spectra = Spectra(times=[500], iterations=[64], operators=["J", "antisym"], jvp="exact", dense=True)
        >>> values = {(r["operator"], r["method"]): round(r["abs_max"], 5) for r in spectra.run(model, x0)}
        >>> values[("J", "arnoldi")], values[("J", "dense")], values[("antisym", "arnoldi")]  # J is symmetric here
        (1.97928, 1.97928, 0.0)
    """

    Config = SpectraConfig

    def check(self, denoiser: Denoiser) -> list[Tensor]:
        """The model times of ``times``; raises (naming ``times``) before any network call."""
        return [analysis_time(denoiser, t) for t in self.config.times]

    def run(self, denoiser: Denoiser, x0: Tensor, results: str | Path | None = None, model_name: str = "model",
            state_name: str = "x0", log: Callable[[str], object] | None = None) -> list[dict[str, Any]]:
        """One record per ``(t, operator, n)`` (and per ``(t, operator)`` for the dense values).

        Args:
            denoiser: the model.
            x0: the clean sample ``(1, *sample_shape)`` (`clean_sample`).
            results: optional JSONL file: records already there are returned, not recomputed;
                new ones are appended as each operator finishes.
            model_name: identifies the model in ``results``.
            state_name: identifies ``x0`` in ``results``.
            log: called with one line per finished operator.

        Returns:
            Records with the `KEY_FIELDS` and ``abs_max``, ``leading_real``, ``leading_imag``,
            ``top`` (five largest magnitudes), ``seconds``, ``products``, ``peak_mb``
            (`peak_memory_mb`: CUDA memory, or the process's peak resident set on a CPU),
            ``alpha``, ``sigma``.
        """
        model_times = self.check(denoiser)
        if tuple(x0.shape[1:]) != denoiser.sample_shape or x0.shape[0] != 1:
            raise ValueError(f"x0 must have shape (1, *{denoiser.sample_shape}), got {tuple(x0.shape)}")
        store = JsonlStore(results, KEY_FIELDS) if results is not None else None
        base = {"model": model_name, "state": state_name, "dtype": str(denoiser.dtype).removeprefix("torch."),
                "jvp": self.config.jvp, "h": self.config.h, "start": self.config.start, "seed": self.config.seed}
        records: list[dict[str, Any]] = []
        for t, tt in zip(self.config.times, model_times):
            wanted = [{**base, "t": float(t), "operator": op, "iterations": n, "method": "arnoldi"}
                      for op in self.config.operators for n in sorted(set(self.config.iterations))]
            if self.config.dense:
                wanted += [{**base, "t": float(t), "operator": op, "iterations": None, "method": "dense"}
                           for op in self.config.operators]
            done = {i: store.get(store.key(w)) for i, w in enumerate(wanted)} if store is not None else {}
            if all(done.get(i) is not None for i in range(len(wanted))):
                records += [done[i] for i in range(len(wanted))]
                if log is not None:
                    log(f"t={t:g}: reused from {results}")
                continue
            fresh = self._compute(denoiser, x0, t, tt, [w for i, w in enumerate(wanted) if done.get(i) is None], log)
            for record in fresh:
                if store is not None:
                    store.append(record)
            by_key = {_key(r): r for r in fresh}
            records += [done.get(i) or by_key[_key(w)] for i, w in enumerate(wanted)]
        return records

    def _compute(self, denoiser: Denoiser, x0: Tensor, t: float, tt: Tensor, wanted: list[dict[str, Any]],
                 log: Callable[[str], object] | None) -> list[dict[str, Any]]:
        """The ``wanted`` records of one time: one Arnoldi run per operator, the dense spectra once if asked."""
        x_t = noised_state(denoiser, x0, tt, self.config.seed + round(t))
        alpha, sigma = (float(v) for v in denoiser.alpha_sigma(tt))
        fx, ops = jacobian_operators(denoiser, x_t, tt, self.config.h, self.config.jvp)
        state = {"alpha": alpha, "sigma": sigma}
        out = []
        for op in dict.fromkeys(w["operator"] for w in wanted if w["method"] == "arnoldi"):
            ns = sorted(w["iterations"] for w in wanted if w["method"] == "arnoldi" and w["operator"] == op)
            start = fx.float() if self.config.start == "x0-hat" else torch.randn(
                fx.shape, generator=torch.Generator().manual_seed(self.config.seed))
            result, stamps, peak = _timed_arnoldi(ops[op], start.to(fx.device, torch.float32), max(ns), denoiser.device)
            for w in wanted:
                if w["method"] == "arnoldi" and w["operator"] == op:
                    n = w["iterations"]
                    out.append({**w, **state, **_summary(ritz_values(result, n)), "seconds": stamps[min(n, len(stamps)) - 1],
                                "products": min(n, len(stamps)), "peak_mb": peak})
            if log is not None:
                log(f"t={t:g} {LABELS[op]}: |lambda|max " + ", ".join(f"n={r['iterations']}: {r['abs_max']:.4g}"
                                                                   for r in out if r["operator"] == op))
        dense = [w for w in wanted if w["method"] == "dense"]
        if dense:
            begin = time.perf_counter()
            spectra = dense_spectra(denoiser, x_t, tt)
            seconds = time.perf_counter() - begin
            peak = peak_memory_mb(denoiser.device)
            out += [{**w, **state, **_summary(spectra[w["operator"]]), "seconds": seconds, "products": x_t.numel(),
                     "peak_mb": peak} for w in dense]
            if log is not None:
                log(f"t={t:g} dense: " + ", ".join(f"{LABELS[w['operator']]} {float(spectra[w['operator']][0].abs()):.4g}"
                                                   for w in dense))
        return out


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(record.get(f) for f in KEY_FIELDS)


def _summary(values: Tensor) -> dict[str, Any]:
    """``abs_max``, the leading value and the five largest magnitudes of eigenvalues sorted by magnitude."""
    lead = complex(values[0])
    return {"abs_max": abs(lead), "leading_real": lead.real, "leading_imag": lead.imag,
            "top": [float(v) for v in values[:5].abs()]}


def _timed_arnoldi(matvec: MatVec, start: Tensor, n: int, device: torch.device) -> tuple[ArnoldiResult, list[float], float]:
    """`linalg.arnoldi` with the seconds after each product and `peak_memory_mb`."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    stamps: list[float] = []
    begin = time.perf_counter()

    def timed(v: Tensor) -> Tensor:
        w = matvec(v)
        if cuda:
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter() - begin)
        return w

    result = arnoldi(timed, start, n)
    return result, stamps, peak_memory_mb(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MB: CUDA memory allocated since the last reset on a GPU, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


# --- tables and figures ---------------------------------------------------------------------
def spectra_table(records: Iterable[dict[str, Any]], paper: bool = False) -> str:
    """A markdown table: one row per (operator, method, n), one column per time, cells ``|lambda|_max``.

    With ``paper``, a row per operator with the paper's Stable Diffusion 1.5 values is added.
    """
    from constrained_diffusion.utils.tables import format_table

    records = list(records)
    times = sorted({r["t"] for r in records}, reverse=True)
    cell = {(r["operator"], r["method"], r["iterations"], r["t"]): r["abs_max"] for r in records}
    rows = sorted({(r["operator"], r["method"], r["iterations"]) for r in records},
                  key=lambda k: (OPERATORS.index(k[0]), k[1] == "dense", k[2] or 0))
    body = []
    for op, method, n in rows:
        how = "dense" if method == "dense" else f"Arnoldi, n = {n}"
        body.append([LABELS[op], how, *(f"{cell[(op, method, n, t)]:.3f}" if (op, method, n, t) in cell else "-" for t in times)])
        if paper and method == "arnoldi" and n == max(k[2] for k in rows if k[0] == op and k[1] == "arnoldi"):
            body.append([LABELS[op], "paper, SD 1.5", *(f"{PAPER_SD15[op][int(t)]:.2f}" if int(t) in PAPER_SD15[op] else "-"
                                                       for t in times)])
    return format_table(["operator", "estimate", *(f"t = {t:g}" for t in times)], body)


def spectra_figure(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Largest ``|lambda|`` against ``t``: one colour per operator, solid for the largest ``n`` (dashed others), crosses for dense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    ns = sorted({r["iterations"] for r in records if r["method"] == "arnoldi"})
    for colour, op in zip(("C0", "C1", "C2"), OPERATORS):
        for n in ns:
            style = "-" if n == ns[-1] else "--"
            pts = sorted((r["t"], r["abs_max"]) for r in records if r["operator"] == op and r["iterations"] == n)
            if pts:
                ax.plot(*zip(*pts), style, color=colour, marker="o", ms=3, label=f"{LABELS[op]}, n = {n}")
        pts = sorted((r["t"], r["abs_max"]) for r in records if r["operator"] == op and r["method"] == "dense")
        if pts:
            ax.plot(*zip(*pts), "x", color=colour, ms=8, mew=2, label=f"{LABELS[op]}, dense")
    ax.set_xlabel("t")
    ax.set_ylabel("largest |eigenvalue|")
    ax.invert_xaxis()
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    from constrained_diffusion.utils.safe_io import save_figure

    path = save_figure(path, fig)  # atomically
    plt.close(fig)
    return path
