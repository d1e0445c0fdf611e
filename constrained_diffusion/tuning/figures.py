"""Figures of a study: the optimisation history and the parameters' importances (PNG or SVG).

Both are Optuna's own plots (``optuna.visualization.matplotlib``), drawn off-screen with
matplotlib's Agg backend and written to a file; the format follows the suffix.
"""

from __future__ import annotations

import warnings
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
