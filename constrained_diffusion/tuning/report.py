"""What ``tune-study`` writes from its results: the table, the verdict and the "Choosing a method" block.

Every sentence of the verdict is computed from ``results`` (what `TuningStudy.score` returns and
writes as ``OUT/results.json``), so the text cannot contradict the table:

* **the leaders of a budget** — the method with the highest mean PSNR, and every method whose
  paired difference to it (same test digits, same observations and noise) has a 95%
  t-interval that reaches 0: the data cannot tell them apart;
* **against the reference** — the methods whose paired difference to the reference method
  (inexact Newton by default) has an interval entirely above 0, entirely below, or across 0;
* **cost** — seconds and peak memory per image, their ranges and ratios to the reference;
* **the Pareto set** — the (method, steps) runs that no other run beats in both PSNR and
  seconds per image (or PSNR and peak memory per image);
* **the budget** — complete, pruned and failed trials per study, and the methods left out of a
  task with the reason they gave.

Examples:
    >>> from constrained_diffusion.tuning.report import leaders
    >>> budget = {"a": {"psnr": 20.0, "per_image": {"1": 20.0, "2": 21.0, "3": 19.0}},
    ...           "b": {"psnr": 19.9, "per_image": {"1": 19.5, "2": 21.2, "3": 19.0}},
    ...           "c": {"psnr": 15.0, "per_image": {"1": 15.0, "2": 15.5, "3": 14.5}}}
    >>> leaders(budget)
    ('a', ['b'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from constrained_diffusion.tuning.study_config import BUDGETS, StudyConfig, mean_ci
from constrained_diffusion.utils.tables import format_table

STARTUP_TRIALS = 10
"""Random trials before the TPE sampler models the space (`constrained_diffusion.tuning.tuner.Tuner.open`)."""
BUDGET_NAMES = {"equal_steps": "equal steps", "equal_evals": "equal NFE + NBE", "equal_time": "equal time"}
"""How each budget is named in the tables and the verdict."""


def _pm(mean: float, half: float, signed: bool = False) -> str:
    m = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return m if half != half else f"{m} ± {half:.2f}"  # nan: one digit, no interval


def _evals(stats: Mapping[str, Any]) -> str:
    return f"{stats['nfe']:.0f} + {stats['nbe']:.0f}"


def fmt_overrides(overrides: Mapping[str, Any]) -> str:
    """``key=value, ...`` with 3 significant digits, pairs as ``(a, b)``; the step scale as ``λ``.

    Examples:
        >>> fmt_overrides({"step_scale": [1.234567, 0.1], "inner_steps": 3, "h": 0.0012345})
        'λ=(1.23, 0.1), inner_steps=3, h=0.00123'
    """
    parts = []
    for k, v in overrides.items():
        k = "λ" if k.removeprefix("correction.") in ("step_scale", "lr") else k  # lr: results written before 0.2
        if isinstance(v, (list, tuple)):
            parts.append(f"{k}=({', '.join(f'{x:.3g}' for x in v)})")
        elif isinstance(v, float):
            parts.append(f"{k}={v:.3g}")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def pair_table(pair: Mapping[str, Any], reference: str) -> str:
    """One (model, task): a row per method with its trials, its validation score and its three budgets."""
    rows = []
    for m, r in pair["methods"].items():
        es, ee, et = (r[b] for b in BUDGETS)
        cells = [m, f"{r['complete']}/{r['trials']}", f"{r['validation']:.2f}"]
        for b, stats in (("equal_steps", es), ("equal_evals", ee), ("equal_time", et)):
            if b != "equal_steps":
                cells.append(f"{stats['steps']}")
            cells += [_pm(stats["psnr"], stats["psnr_ci"]), "—" if m == reference else _pm(stats["diff"], stats["diff_ci"], True)]
            if b != "equal_time":
                cells.append(_evals(stats))
            if b == "equal_steps":
                cells += [f"{stats['seconds']:.3f}", f"{stats['peak_mb_per_image']:.1f}"]
        rows.append(cells)
    ref = f"− {reference}"
    header = ["method", "complete / finished trials", "val. PSNR",
              "PSNR (equal steps)", ref, "NFE + NBE", "s / image", "peak MB / image",
              "steps", "PSNR (equal NFE + NBE)", ref, "NFE + NBE",
              "steps", "PSNR (equal time)", ref]
    return format_table(header, rows)


def table(results: Mapping[str, Any]) -> str:
    """The study's markdown: one table per (model, task) (with the methods left out), then the best settings."""
    cfg = results["config"]
    ref = cfg["reference"]
    out = []
    for pair in results["pairs"]:
        text = f"**{pair['model']}, {pair['task']}**\n\n" + pair_table(pair, ref)
        if pair.get("skipped"):
            text += "\n\nLeft out (the method refused the task): " + "; ".join(f"{m} ({why})" for m, why in pair["skipped"].items())
        out.append(text)
    settings = []
    for pair in results["pairs"]:
        for m, r in pair["methods"].items():
            settings.append([pair["model"], pair["task"], m, fmt_overrides(r["overrides"]),
                             f"{r['complete']}/{r.get('pruned', 0)}/{r.get('failed', 0)}"])
    out.append("**Best settings** (trials complete / pruned / failed)\n\n"
               + format_table(["model", "task", "method", "setting", "trials"], settings))
    return "\n\n".join(out) + "\n"


# -- the verdict ------------------------------------------------------------------------------------
def leaders(budget: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The method with the highest mean PSNR at one budget, and those the data cannot tell from it.

    A method is tied with the best when the 95% t-interval of its paired difference to the best
    (over the digits both scored) reaches 0.

    Args:
        budget: method -> its stats at one budget (``psnr`` and ``per_image``: digit id -> PSNR).
    """
    best = max(budget, key=lambda m: budget[m]["psnr"])
    tied = []
    for m, stats in budget.items():
        if m == best:
            continue
        top = budget[best]["per_image"]
        diffs = [stats["per_image"][i] - top[i] for i in stats["per_image"] if i in top]
        if len(diffs) < 2:
            tied.append(m)
            continue
        mean, half = mean_ci(diffs)
        if mean + half >= 0:
            tied.append(m)
    return best, tied


def against(budget: Mapping[str, Mapping[str, Any]], reference: str) -> dict[str, list[str]]:
    """The methods whose paired difference to ``reference`` is surely above 0, surely below, or either (95% intervals)."""
    out: dict[str, list[str]] = {"above": [], "below": [], "tied": []}
    for m, s in budget.items():
        if m == reference:
            continue
        if s["diff_ci"] != s["diff_ci"]:
            out["tied"].append(m)
        elif s["diff"] - s["diff_ci"] > 0:
            out["above"].append(m)
        elif s["diff"] + s["diff_ci"] < 0:
            out["below"].append(m)
        else:
            out["tied"].append(m)
    return out


def pareto(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """The labels of the points ``(label, cost, quality)`` that no other point beats in both (lower cost, higher quality).

    Examples:
        >>> pareto([("a", 1.0, 20.0), ("b", 2.0, 25.0), ("c", 3.0, 24.0), ("d", 0.5, 10.0)])
        ['d', 'a', 'b']
    """
    front, best = [], float("-inf")
    for label, _, quality in sorted(points, key=lambda p: (p[1], -p[2])):
        if quality > best:
            front.append(label)
            best = quality
    return front


def runs(pair: Mapping[str, Any]) -> list[tuple[str, float, float, float]]:
    """Every (method, steps) run of a (model, task) once: ``(label, seconds, peak MB per image, PSNR)``."""
    seen: dict[str, tuple[str, float, float, float]] = {}
    for m, r in pair["methods"].items():
        for b in BUDGETS:
            s = r[b]
            label = f"{m} @ {s['steps']}"
            seen.setdefault(label, (label, s["seconds"], s["peak_mb_per_image"], s["psnr"]))
    return list(seen.values())


def _names(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def _range(values: Sequence[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}–{format(hi, fmt)}"


def pair_verdict(pair: Mapping[str, Any], reference: str, trials: int) -> str:
    """The verdict of one (model, task), every figure taken from ``pair``."""
    methods = pair["methods"]
    lines = [f"**{pair['model']}, {pair['task']}.**", ""]
    for b in ("equal_evals", "equal_steps", "equal_time"):
        budget = {m: r[b] for m, r in methods.items()}
        best, tied = leaders(budget)
        vs = against(budget, reference)
        ref = budget[reference]
        cost = (f"{ref['evals']:.0f} network evaluations per image, the reference's" if b == "equal_evals"
                else f"{ref['seconds']:.3f} s per image, the reference's" if b == "equal_time" else f"{ref['steps']} steps")
        name = BUDGET_NAMES[b]
        lines.append(f"- *{name[0].upper() + name[1:]}* ({cost}): best mean PSNR **{best}** "
                     f"({_pm(budget[best]['psnr'], budget[best]['psnr_ci'])} dB); tied with it: {_names(tied)}. "
                     f"Against {reference} ({_pm(ref['psnr'], ref['psnr_ci'])} dB): ahead {_names(vs['above'])}; "
                     f"behind {_names(vs['below'])}; not distinguishable {_names(vs['tied'])}.")
    es = {m: r["equal_steps"] for m, r in methods.items()}
    ref = es[reference]
    fast, slow = min(es, key=lambda m: es[m]["seconds"]), max(es, key=lambda m: es[m]["seconds"])
    light, heavy = min(es, key=lambda m: es[m]["peak_mb_per_image"]), max(es, key=lambda m: es[m]["peak_mb_per_image"])
    others = [m for m in es if m != reference]
    mem_ratio = [es[m]["peak_mb_per_image"] / ref["peak_mb_per_image"] for m in others if ref["peak_mb_per_image"] > 0]
    time_ratio = [es[m]["seconds"] / ref["seconds"] for m in others if ref["seconds"] > 0]
    lines.append(f"- *Cost at equal steps*: {_range([s['seconds'] for s in es.values()], '.3f')} s per image "
                 f"(fastest {fast}, slowest {slow}; the others at {_range(time_ratio, '.2f')}× {reference}'s), "
                 f"{_range([s['peak_mb_per_image'] for s in es.values()], '.1f')} MB peak memory per image "
                 f"(least {light}, most {heavy}; the others at {_range(mem_ratio, '.2f')}× {reference}'s), "
                 f"{_range([s['evals'] for s in es.values()], '.0f')} network evaluations per image.")
    points = runs(pair)
    lines.append(f"- *Pareto set* (no run better in both): PSNR against seconds: {_names(pareto([(p[0], p[1], p[3]) for p in points]))}; "
                 f"PSNR against peak memory: {_names(pareto([(p[0], p[2], p[3]) for p in points]))}.")
    complete = [r["complete"] for r in methods.values()]
    short = [f"{m} ({r['complete']})" for m, r in methods.items() if r["complete"] < trials]
    lines.append(f"- *Budget*: {len(methods)} methods, {_range(complete, 'd')} complete trials each"
                 + (f" (short of {trials}, stopped at the finished-trial cap: {', '.join(short)})" if short else "")
                 + f"; finished trials (complete + pruned + failed) {_range([r['trials'] for r in methods.values()], 'd')}."
                 + (f" Left out: {'; '.join(f'{m} ({why})' for m, why in pair['skipped'].items())}." if pair.get("skipped") else ""))
    return "\n".join(lines)


def summary_table(results: Mapping[str, Any]) -> str:
    """One row per (model, task): the best method at each budget and the methods tied with it."""
    rows = []
    for pair in results["pairs"]:
        cells = [pair["model"], pair["task"]]
        for b in ("equal_evals", "equal_steps", "equal_time"):
            best, tied = leaders({m: r[b] for m, r in pair["methods"].items()})
            cells.append(f"**{best}**" + (f" (tied: {', '.join(tied)})" if tied else ""))
        rows.append(cells)
    return format_table(["model", "task", "best at equal NFE + NBE", "best at equal steps", "best at equal time"], rows)


def verdict(results: Mapping[str, Any]) -> str:
    """The whole verdict: the summary table, then one paragraph per (model, task)."""
    cfg = results["config"]
    parts = [summary_table(results)]
    parts += [pair_verdict(pair, cfg["reference"], int(cfg["trials"])) for pair in results["pairs"]]
    return "\n\n".join(parts) + "\n"


def scale_note(results: Mapping[str, Any]) -> str:
    """Which settings of the run are below the full study's (`StudyConfig`'s defaults); empty when none."""
    cfg = results["config"]
    full = StudyConfig()
    small = []
    for key, what in (("trials", "complete trials per study"), ("limit", "validation digits per trial"),
                      ("test_limit", "test digits per method")):
        if int(cfg[key]) < getattr(full, key):
            small.append(f"{cfg[key]} {what} (full run: {getattr(full, key)})")
    models = [m for m in full.models if m not in cfg["models"]]
    tasks = [t for t in full.tasks if t not in cfg["tasks"]]
    methods = [m for m in full.methods if m not in cfg["methods"]]
    if models:
        small.append(f"models left out: {', '.join(models)}")
    if tasks:
        small.append(f"tasks left out: {', '.join(tasks)}")
    if methods:
        small.append(f"methods left out: {', '.join(methods)}")
    return "; ".join(small)


def choosing_block(results: Mapping[str, Any], command: str, full_command: str, figure: str | None) -> str:
    """The generated part of the "Choosing a method" page: scale, command, summary, figure, tables, verdict."""
    cfg = results["config"]
    note = scale_note(results)
    budget = (f"{cfg['trials']} complete trials per (model, task, method) on {cfg['limit']} class-stratified validation digits "
              f"(`{results.get('tuning_data', cfg['data'])}`), {cfg['steps']} denoising steps, scored on {cfg['test_limit']} "
              f"class-stratified test digits (`{results.get('scoring_data', cfg['test_data'])}`).")
    head = []
    if note:
        random = (f" With {cfg['trials']} complete trials, every setting was a random draw (the TPE sampler's first "
                  f"{STARTUP_TRIALS} trials are random), so each method's best setting is the best of {cfg['trials']} random ones."
                  if int(cfg["trials"]) <= STARTUP_TRIALS else "")
        head.append(f"!!! warning \"Small numbers\"\n    This is a **small run** ({note}), made on {results.get('machine', 'this machine')}."
                    f"{random} The intervals are wide and the winners may change in the full run. The full run (hours on a CPU; "
                    "`--device cpu` runs it without a GPU) is:\n\n"
                    f"    ```bash\n    {full_command}\n    ```")
    took = [f"{what} took {results[key] / 60:.1f} min" for what, key in (("Tuning", "tune_seconds"), ("scoring", "score_seconds"))
            if results.get(key) is not None]
    head.append(f"**Budget.** {budget} Machine: {results.get('machine', 'not recorded')}."
                + (f" {', '.join(took).capitalize()} of wall time in the run that wrote this." if took else ""))
    head.append(f"Made, and regenerated (resuming whatever is missing), by:\n\n```bash\n{command}\n```")
    body = ["### Verdict per task", verdict(results).strip()]
    if figure:
        body += ["### Pareto figure",
                 "PSNR against seconds per image (left) and against peak memory per image (right), one point per "
                 "(method, steps) run: the tuning's steps, the steps at the reference's NFE + NBE and the steps at its "
                 "time. The line joins the Pareto set.", f"![Pareto figure]({figure})"]
    body += ["### Tables", table(results).strip()]
    return "\n\n".join(head + body)
