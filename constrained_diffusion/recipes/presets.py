"""The published methods as recipes, with the hyper-parameters their papers use.

Where a paper leaves a choice open (or tunes it per task) the value here is marked "our
choice" in the docs' baselines page; every field can be overridden with
``cd.recipes.get(name, steps=..., step_scale=...)`` or ``--recipe NAME --steps ...``.
"""

from __future__ import annotations

from constrained_diffusion.recipes.recipe import Recipe
from constrained_diffusion.sampling.config import SamplerConfig
from constrained_diffusion.sampling.corrections.inner_loop import PAPER_STEP_SCHEDULE
from constrained_diffusion.space import Float, Int, SearchSpace

_STEP = Float(0.01, 2.0, log=True)
"""A step scale lambda of the paper's loop, which moves by lambda d / ||d||_inf: 0.01 to 2 pixel units per inner step."""
INNER_LOOP_SPACE = SearchSpace({"step_scale.0": _STEP, "step_scale.1": _STEP, "inner_steps": Int(1, 5)})
"""The paper's loop: the two ends of the linear lambda schedule and K (the inner steps per denoising step)."""
_WEIGHT = Float(0.01, 100.0, log=True)
"""A guidance weight on a gradient (DPS's zeta, MPGD's c): four decades around the published 1."""

INEXACT_NEWTON = Recipe(
    name="inexact-newton",
    config=SamplerConfig(steps=20, inner_steps=5, step_scale=PAPER_STEP_SCHEDULE, eta=0.0,
                         solver={"name": "inexact-newton", "h": 0.005}, step_rule="dynamic", target="x_t"),
    reference="Graikos, Jojic & Samaras, Fast constrained sampling in pre-trained diffusion models, NeurIPS 2025",
    summary="x_t <- x_t + lambda_k J e / ||J e||_inf, J e by a finite difference (h = 0.005), "
            "K = 5 inner steps with lambda from 0.5 to 0.1, 20 DDIM steps",
    latent="encoded",
    search_space=INNER_LOOP_SPACE,
)

DPS = Recipe(
    name="dps",
    config=SamplerConfig(steps=1000, inner_steps=1, step_scale=1.0, eta=1.0, solver={"name": "gradient-descent"},
                         step_rule="residual", target="x_prev"),
    reference="Chung, Kim, Mccann, Klasky & Ye, Diffusion Posterior Sampling for General Noisy Inverse Problems, ICLR 2023",
    summary="x_{t-1} = DDPM(x_t) - zeta grad_{x_t} ||y - A(x0(x_t))||, zeta = 1, 1000 ancestral steps; "
            "latent models: through the decoder (LDPS)",
    latent="decoded",
    search_space=SearchSpace({"step_scale": _WEIGHT}),
)

PSLD = Recipe(
    name="psld",
    config=SamplerConfig(steps=1000, inner_steps=1, step_scale=1.0, eta=1.0, solver={"name": "gradient-descent"},
                         step_rule="constant", target="x_prev"),
    reference="Rout et al., Solving Linear Inverse Problems Provably via Posterior Sampling with Latent Diffusion Models, NeurIPS 2023",
    summary="LDPS plus the gluing term: z_{t-1} = DDPM(z_t) - grad_{z_t} [omega ||y - A D(z0)|| "
            "+ gamma ||E(A^T y + (I - A^T A) D(z0)) - z0||], omega = 1, gamma = 0.1",
    latent="psld",
    options={"omega": 1.0, "gamma": 0.1},
    search_space=SearchSpace({"omega": _WEIGHT, "gamma": Float(0.001, 1.0, log=True)}),
)

MPGD = Recipe(
    name="mpgd",
    config=SamplerConfig(steps=100, inner_steps=1, step_scale=1.0, eta=0.0,
                         step_rule="constant", target="x0", window=(0.0, 1.0)),
    reference="He et al., Manifold Preserving Guided Diffusion, ICLR 2024",
    summary="x0 <- x0 - c grad_{x0} L(x0) (no denoiser Jacobian, no backward through the network), "
            "then DDIM with the edited x0 and the unedited noise estimate; c = 1 on 0.5 ||y - A x0||^2, 100 DDIM steps",
    latent="decoded",
    search_space=SearchSpace({"step_scale": _WEIGHT}),
)

FREEDOM = Recipe(
    name="freedom",
    config=SamplerConfig(steps=100, inner_steps=1, step_scale=0.2, eta=0.0, solver={"name": "gradient-descent"},
                         step_rule="norm-ratio", target="x_prev", time_travel=3, time_travel_window=(0.3, 0.7)),
    search_space=SearchSpace({"step_scale": Float(0.01, 2.0, log=True), "time_travel": Int(0, 5)}),
    reference="Yu, Wang, Zhao, Ghanem & Zhang, FreeDoM: Training-Free Energy-Guided Conditional Diffusion Model, ICCV 2023",
    summary="x_{t-1} = DDIM(x_t) - rho_t grad_{x_t} E(x0(x_t)), rho_t = 0.2 ||x_{t-1} - x_t|| / ||grad||; "
            "time travel (re-noise and repeat, 3 extra times) over the middle 40% of 100 steps",
    latent="decoded",
)

_PAPER = "Graikos, Jojic & Samaras, NeurIPS 2025; reference notebooks cvlab-stonybrook/fast-constrained-sampling"
_NOTEBOOK_LOOP = dict(steps=20, eta=1.0, noise="one-step-posterior", output="last-x0",
                      solver={"name": "inexact-newton", "h": 0.005}, step_rule="dynamic", target="x_t")
"""What the reference notebooks share: 20 steps on the trailing grid, the one-step posterior
noise, the last x0_hat as output, the finite-difference J e with h relative to max|e|, d / max|d|."""

PAPER_INPAINTING = Recipe(
    name="paper-inpainting",
    config=SamplerConfig(inner_steps=5, step_scale=PAPER_STEP_SCHEDULE, **_NOTEBOOK_LOOP),  # type: ignore[arg-type]
    reference=f"{_PAPER}, stable-diffusion/inpaint.ipynb",
    summary="the paper's latent inpainting: e = m (E(y m) - z0), m the 8x8-pooled mask (known iff all pixels are), "
            "K = 5, lambda 0.5 -> 0.1, h = 0.005; 20 steps on the trailing grid (999 ... 49), "
            "one-step posterior noise, output the last x0",
    latent="latent-mask",
    timestep_spacing="trailing",
    search_space=SearchSpace({"step_scale.0": _STEP, "step_scale.1": _STEP, "inner_steps": Int(1, 10)}),
)

PAPER_SR8 = Recipe(
    name="paper-sr8",
    config=SamplerConfig(inner_steps=10, step_scale=0.1, **_NOTEBOOK_LOOP),  # type: ignore[arg-type]
    reference=f"{_PAPER}, stable-diffusion/superres.ipynb",
    summary="the paper's x8 super-resolution: e = -grad_z ||y - A D(z0)|| through the decoder only, "
            "K = 10, constant lambda = 0.1, h = 0.005; 20 steps on the trailing grid, one-step posterior noise, "
            "output the last x0",
    latent="decoded",
    timestep_spacing="trailing",
    search_space=SearchSpace({"step_scale": _STEP, "inner_steps": Int(1, 20)}),
)

PAPER_STYLE = Recipe(
    name="paper-style",
    config=SamplerConfig(inner_steps=5, step_scale=PAPER_STEP_SCHEDULE, **_NOTEBOOK_LOOP),  # type: ignore[arg-type]
    reference=f"{_PAPER}, stable-diffusion/style.ipynb",
    summary="the paper's style guidance: e = -grad_z ||G(ref) - G(D(z0))||_F through the decoder and CLIP "
            "(G = F^T F of CLIP ViT-B/16 block-3 patch tokens: cd_clip_style.CLIPStyle.paper), K = 5, lambda 0.5 -> 0.1, "
            "h = 0.005, classifier-free guidance (1 + w) eps_c - w eps_u with w = 2 (guidance_scale 3); "
            "20 steps on the trailing grid, one-step posterior noise, output the last x0",
    latent="decoded",
    timestep_spacing="trailing",
    guidance_scale=3.0,
    search_space=SearchSpace({"step_scale.0": _STEP, "step_scale.1": _STEP, "inner_steps": Int(1, 10), "guidance_scale": Float(1.0, 10.0)}),
)

# --- the methods of the field on the same engine (one correction each: constrained_diffusion/sampling/corrections/) ---

_UNIT = Float(0.0, 1.0)
"""A weight or a mixing fraction in [0, 1]."""

DDRM = Recipe(
    name="ddrm",
    config=SamplerConfig(steps=20, eta=0.85, correction={"name": "ddrm", "eta_b": 1.0}),
    reference="Kawar, Elad, Ermon & Song, Denoising Diffusion Restoration Models, NeurIPS 2022",
    summary="spectral DDIM in the SVD of A: observed components pulled to y_bar (eta_b = 1), the rest DDIM with eta = 0.85; "
            "20 steps, 1 NFE per step, no backprop",
    latent="linear",
    search_space=SearchSpace({"eta": _UNIT, "correction.eta_b": _UNIT}),
)

DDNM = Recipe(
    name="ddnm",
    config=SamplerConfig(steps=20, eta=0.85, correction={"name": "ddnm"}),
    reference="Wang, Yu & Zhang, Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model, ICLR 2023",
    summary="x0 <- A^+ y + (I - A^+ A) x0 at every step, then DDIM (eta = 0.85); 20 steps, 1 NFE per step, no backprop",
    latent="linear",
    search_space=SearchSpace({"eta": _UNIT, "correction.weight": _UNIT}),
)

PIGDM = Recipe(
    name="pigdm",
    config=SamplerConfig(steps=50, eta=1.0, solver={"name": "gradient-descent"}, correction={"name": "pigdm", "step_scale": 1.0}),
    reference="Song, Vahdat, Mardani & Kautz, Pseudoinverse-Guided Diffusion Models for Inverse Problems, ICLR 2023",
    summary="x_{t-1} = DDIM(x_t) + step_scale alpha_t J^T A^+ (y - A x0), J^T e through the solver (gradient descent; "
            "inexact Newton swaps in J e); 50 steps, eta = 1",
    latent="linear",
    search_space=SearchSpace({"correction.step_scale": _WEIGHT, "eta": _UNIT}),
)

DIFFPIR = Recipe(
    name="diffpir",
    config=SamplerConfig(steps=20, correction={"name": "diffpir", "lam": 7.0, "zeta": 0.3}),
    reference="Zhu et al., Denoising Diffusion Models for Plug-and-Play Image Restoration, CVPR Workshops 2023",
    summary="x0' = argmin ||y - A x||^2 + rho_t ||x - x0||^2 (closed form in the SVD), rho_t = lam sigma_y^2 alpha^2 / sigma^2, "
            "then x_prev = alpha' x0' + sigma' (sqrt(1 - zeta) eps' + sqrt(zeta) z); lam = 7, zeta = 0.3, 20 steps",
    latent="linear",
    search_space=SearchSpace({"correction.lam": Float(0.1, 100.0, log=True), "correction.zeta": _UNIT}),
)

MMPS = Recipe(
    name="mmps",
    config=SamplerConfig(steps=20, solver={"name": "gradient-descent"}, correction={"name": "mmps", "iterations": 3}),
    reference="Rozet, Andry, Lanusse & Louppe, Learning Diffusion Priors from Observations by Expectation Maximization, NeurIPS 2024",
    summary="x0' = x0 + (sigma^2 / alpha) J^T A^T (sigma_y^2 + (sigma^2 / alpha) A J A^T)^-1 (y - A x0), the inverse by 3 GMRES "
            "iterations on finite-difference JVPs, J^T e through the solver; 20 DDIM steps",
    latent="linear",
    search_space=SearchSpace({"correction.iterations": Int(1, 8), "correction.noise_std": Float(0.001, 0.5, log=True)}),
)

DAPS = Recipe(
    name="daps",
    config=SamplerConfig(steps=50, correction={"name": "daps", "langevin_steps": 20, "step_scale": 0.5}),
    reference="Zhang et al., Improving Diffusion Inverse Problem Solving with Decoupled Noise Annealing, CVPR 2025",
    summary="20 Langevin steps on x0 ~ N(x0_hat, r_t^2) p(y | x0) per step, then x_prev = alpha' x0 + sigma' z (fresh noise); "
            "50 annealing steps, 1 NFE each, no backprop through the network",
    latent="decoded",
    search_space=SearchSpace({"correction.step_scale": Float(0.01, 1.0, log=True), "correction.r_scale": Float(0.1, 10.0, log=True),
                              "correction.noise_std": Float(0.001, 0.5, log=True)}),
)

RED_DIFF = Recipe(
    name="red-diff",
    config=SamplerConfig(steps=50, correction={"name": "red-diff", "step_scale": 0.5, "lam": 0.25}),
    reference="Mardani, Song, Kautz & Vahdat, A Variational Perspective on Solving Inverse Problems with Diffusion Models, ICLR 2024",
    summary="mu <- mu + step_scale (A^T (y - A mu) - lam (sigma/alpha) (eps_hat(alpha mu + sigma eps) - eps)), plain gradient steps "
            "(the paper: Adam); 50 steps, 1 NFE each, no backprop through the network",
    latent="decoded",
    search_space=SearchSpace({"correction.step_scale": Float(0.01, 2.0, log=True), "correction.lam": Float(0.001, 10.0, log=True)}),
)

REPAINT = Recipe(
    name="repaint",
    config=SamplerConfig(steps=50, eta=1.0, correction={"name": "time-travel", "inner": {"name": "repaint"}, "repeats": 4}),
    reference="Lugmayr et al., RePaint: Inpainting using Denoising Diffusion Probabilistic Models, CVPR 2022",
    summary="known region from q(x_{t-1} | y), unknown from the model, U = 5 resamplings (re-noise one step and repeat); "
            "50 steps, eta = 1: 5 NFE per step",
    latent="linear",
    search_space=SearchSpace({"correction.repeats": Int(0, 9)}),
)

FLOWCHEF = Recipe(
    name="flowchef",
    config=SamplerConfig(steps=20, correction={"name": "flowchef", "inner_steps": 1, "step_scale": 0.5}),
    reference="Patel, Wen, Metaxas & Yang, Steering Rectified Flow Models in the Vector Field for Controlled Image Generation, 2024",
    summary="x_t <- x_t + lambda e(x0_hat), x0_hat <- x0_hat + lambda e (the identity Jacobian of a straight flow), then the "
            "Euler step with the unchanged velocity; lambda = 0.5, 1 inner step, 20 steps, 1 NFE per step, no backprop",
    latent="decoded",
    search_space=SearchSpace({"correction.step_scale": Float(0.01, 2.0, log=True), "correction.inner_steps": Int(1, 5)}),
)

METHODS: tuple[Recipe, ...] = (DDRM, DDNM, PIGDM, DIFFPIR, MMPS, DAPS, RED_DIFF, REPAINT, FLOWCHEF)
"""The methods of the field on this engine (issue 24), beside the paper's and the baselines it compares with."""

PRESETS: tuple[Recipe, ...] = (INEXACT_NEWTON, DPS, PSLD, MPGD, FREEDOM, PAPER_INPAINTING, PAPER_SR8, PAPER_STYLE, *METHODS)
