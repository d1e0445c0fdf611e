"""Figures of a study: the optimisation history and the parameters' importances (PNG or SVG).

Both are Optuna's own plots (``optuna.visualization.matplotlib``), drawn off-screen with
matplotlib's Agg backend and written to a file; the format follows the suffix.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from constrained_diffusion.utils.safe_io import save_figure


def _save(ax: Any, path: Path, title: str, size: tuple[float, float] | None = None) -> Path:
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    if title:
        fig.suptitle(title, fontsize=9)
    if size is not None:
        fig.set_size_inches(*size)
    fig.tight_layout()
    path = save_figure(path, fig, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _plots() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization import matplotlib as plots
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError("study figures need matplotlib and Optuna: pip install 'constrained_diffusion[tune]'") from None
    return plots


def history_figure(study: Any, path: str | Path, title: str = "") -> Path:
    """The objective of every complete trial and the best so far, against the trial number."""
    plots = _plots()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = plots.plot_optimization_history(study)
    return _save(ax, Path(path), title, (6.4, 4.0))


def importance_figure(study: Any, path: str | Path, title: str = "") -> Path | None:
    """fANOVA importances of the parameters (Optuna's default evaluator, seeded); ``None`` with under two complete trials or one parameter."""
    import optuna

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2 or len({k for t in complete for k in t.params}) < 2:
        return None
    plots = _plots()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = plots.plot_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return _save(ax, Path(path), title, (6.4, 4.0))


def history_panel(studies: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """One axes: each method's best-so-far objective (line) and its complete trials (dots) against the trial number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for k, (label, study) in enumerate(studies.items()):
        trials = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
        if not trials:
            continue
        sign = 1 if study.direction.name == "MAXIMIZE" else -1
        xs = [t.number for t in trials]
        ys = [t.value for t in trials]
        best, run = [], None
        for y in ys:
            run = y if run is None or sign * y > sign * run else run
            best.append(run)
        color = f"C{k % 10}"
        ax.scatter(xs, ys, s=6, color=color, alpha=0.35)
        ax.step(xs, best, where="post", color=color, label=label, linewidth=1.4)
    ax.set_xlabel("trial")
    ax.set_ylabel(next(iter(studies.values())).user_attrs.get("context", {}).get("metric", "objective") if studies else "objective")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(ax, Path(path), title)


def importance_panel(studies: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """One row of horizontal bars per method: the fANOVA importance of each of its parameters (seeded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    rows: list[tuple[str, str, float]] = []
    for label, study in studies.items():
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        params = {k for t in complete for k in t.params}
        if len(complete) < 2 or not params:
            continue
        if len(params) == 1:
            rows.append((label, next(iter(params)), 1.0))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        rows += [(label, k, float(v)) for k, v in imp.items()]
    fig, ax = plt.subplots(figsize=(6.4, max(2.5, 0.22 * len(rows) + 1)))
    labels = [f"{m}: {p}" for m, p, _ in rows]
    methods = list(dict.fromkeys(m for m, _, _ in rows))
    ax.barh(range(len(rows)), [v for _, _, v in rows], color=[f"C{methods.index(m) % 10}" for m, _, _ in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("importance (fANOVA, share of the objective's variance)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    return _save(ax, Path(path), title)


def pareto_figure(results: Mapping[str, Any], path: str | Path) -> Path:
    """PSNR against seconds per image and against peak memory per image, one row of two panels per (model, task).

    Each point is one (method, steps) run of the study (its tuning's steps, its steps at the
    reference's NFE + NBE, its steps at the reference's time; drawn once, with the first budget's
    marker, when two budgets gave the same steps, as the verdict counts it); a method keeps its
    colour, the budget its marker, and a grey line joins the Pareto set (`constrained_diffusion.tuning.report.pareto`).

    Args:
        results: what `constrained_diffusion.tuning.study.TuningStudy.score` returns.
        path: the PNG (or SVG) to write, through `constrained_diffusion.utils.safe_io.save_figure`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from constrained_diffusion.tuning.report import BUDGET_NAMES, pareto
    from constrained_diffusion.tuning.study_config import BUDGETS

    pairs = results["pairs"]
    methods = list(dict.fromkeys(m for pair in pairs for m in pair["methods"]))
    colours = {m: plt.get_cmap("tab20")(i % 20) for i, m in enumerate(methods)}
    markers = {"equal_steps": "o", "equal_evals": "s", "equal_time": "^"}
    fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 3.6 * len(pairs)), squeeze=False)
    for row, pair in zip(axes, pairs):
        for ax, cost, label in ((row[0], "seconds", "seconds per image"), (row[1], "peak_mb_per_image", "peak MB per image")):
            points: dict[str, tuple[str, float, float]] = {}  # a run at the same steps under two budgets is one run, drawn once
            for m, r in pair["methods"].items():
                for b in BUDGETS:
                    s = r[b]
                    run = f"{m}@{s['steps']}"
                    if run not in points:
                        ax.scatter(s[cost], s["psnr"], color=colours[m], marker=markers[b], s=28, zorder=3)
                        points[run] = (run, float(s[cost]), float(s["psnr"]))
            front = set(pareto(list(points.values())))
            line = sorted((p for p in points.values() if p[0] in front), key=lambda p: p[1])
            ax.plot([p[1] for p in line], [p[2] for p in line], color="0.6", lw=1, zorder=2)
            for p in line:
                ax.annotate(p[0], (p[1], p[2]), fontsize=6, xytext=(3, 3), textcoords="offset points")
            if cost == "seconds":
                ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("PSNR (dB)")
            ax.set_title(f"{pair['model']}, {pair['task']}", fontsize=9)
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[m], marker="o", ls="", label=m) for m in methods]
    handles += [plt.Line2D([], [], color="k", marker=markers[b], ls="", label=BUDGET_NAMES[b]) for b in BUDGETS]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 1.0 / (3.6 * len(pairs)), 1, 1))  # about an inch at the bottom for the legend
    out = save_figure(path, fig, dpi=90)
    plt.close(fig)
    return out
