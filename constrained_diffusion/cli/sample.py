"""``constrained-diffusion sample``: any registered constraint, any recipe or solver, by name.

The constraint is a built-in task of ``evaluate`` on a shipped test digit (``--task top-half|box|mnist-free-form|sr4|...``;
``box`` is the centred box, ``top-half`` what ``--task box`` was before 0.2) or
any registered constraint — built-ins and installed plugins (``--list`` shows them) — built
with ``--constraint NAME --arg key=value ...``. Values are JSON where they parse (numbers,
lists, ``true``) and strings otherwise; ``@digit`` stands for the chosen test digit
``(1, 1, 32, 32)`` in ``[-1, 1]`` (with ``--model gaussian``: an image drawn from the analytic
prior). The models are 1-channel 32x32: constraints for RGB images (``clip-style``) are
listed but need a model of your own in Python. The method (``--method``) is a recipe (``dps``) or, where no recipe has the
name, a solver with the paper's loop (``--solver`` and ``--recipe`` are the old spellings); ``--steps``,
``--inner-steps`` and ``--step-scale`` (``--lr`` before 0.2) override either, as do ``--set KEY=VALUE`` items (the override
language of ``evaluate``: ``solver.h=0.01``, ``correction.name=NAME`` for a registered correction).
Prints residual, NFE, NBE, seconds (and the digit the shipped classifier reads) per sample
and writes a PNG of the samples.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from constrained_diffusion.cli.args import format_table, non_negative_int, positive_int, renamed_flag, summary
from constrained_diffusion.cli.task_option import TASK_HELP, mnist_task
from constrained_diffusion.cli.vocabulary import add_alias, model_name, out_file
from constrained_diffusion.constraints import Constraint
from constrained_diffusion.constraints import registry as constraint_registry
from constrained_diffusion.denoisers import Denoiser
from constrained_diffusion.recipes import Recipe
from constrained_diffusion.recipes import get as get_recipe
from constrained_diffusion.recipes import names as recipe_names
from constrained_diffusion.recipes.overrides import apply_overrides, paper_loop, split_set
from constrained_diffusion.recipes.overrides import parse_value as parse_json_or_text
from constrained_diffusion.sampling import SampleResult
from constrained_diffusion.sampling.step_size import describe_step
from constrained_diffusion.solvers import registry as solver_registry
from constrained_diffusion.utils.images import make_grid, save_png, to_uint8


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sample`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("sample", help="sample under a named constraint with a named recipe or solver", description=summary(__doc__))
    p.add_argument("--list", action="store_true", help="list constraints, recipes and solvers, then exit")
    p.add_argument("--model", type=model_name(["mnist-ddpm", "mnist-flow", "gaussian"]), default="mnist-ddpm",
                   help="mnist-ddpm: the shipped DDPM (default; 'mnist' is accepted); mnist-flow: the shipped flow model; "
                        "gaussian: the analytic 1x32x32 model")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--task", type=mnist_task("--task"), metavar="TASK", help=f"{TASK_HELP}, on the test digit")
    what.add_argument("--constraint", help="a registered constraint name (see --list)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="keyword argument of --constraint (repeatable)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--method", dest="recipe", help=f"a recipe: {', '.join(recipe_names())} (default inexact-newton); "
                                                     f"or a solver with the paper's loop: {', '.join(solver_registry.names())}")
    how.add_argument("--solver", help=argparse.SUPPRESS)  # the old spelling of a solver's --method
    p.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default: the recipe's)")
    p.add_argument("--inner-steps", type=non_negative_int, default=None, help="constraint iterations per step")
    p.add_argument("--step-scale", type=float, nargs="+", default=None, metavar="LAMBDA",
                   help="the step scale lambda: one value, or start and end of a linear schedule")
    p.add_argument("--lr", dest="step_scale", type=float, nargs="+", action=renamed_flag("--step-scale"), help=argparse.SUPPRESS)
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a SamplerConfig field or recipe option, as evaluate's --set: solver.h=0.01, "
                        "correction.name=NAME (a registered correction), correction.KEY=VALUE; the flags above win")
    p.add_argument("--digit", type=non_negative_int, default=0, help="index of the shipped test digit (0-9, default 0)")
    p.add_argument("--batch-size", dest="batch", type=positive_int, default=1, help="samples to draw, in one batch (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    p.add_argument("--out", type=Path, default=Path("."),
                   help="folder to write sample.png in (default: the current folder); a path ending in .png is the image file itself")
    p.add_argument("--quiet", action="store_true", help="hide the progress bar")
    add_alias(p, "--recipe", dest="recipe")
    add_alias(p, "--batch", dest="batch")
    p.set_defaults(run=run)


def parse_value(text: str, digit: torch.Tensor) -> Any:
    """A ``--arg`` value: ``@digit``, else JSON where it parses, else the string itself."""
    return digit if text == "@digit" else parse_json_or_text(text)


def parse_args_list(items: list[str], digit: torch.Tensor) -> dict[str, Any]:
    """``["k=v", ...]`` -> keyword arguments (one-line error on a malformed item)."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--arg must be KEY=VALUE with KEY a Python identifier, got {item!r}")
        kwargs[key] = parse_value(value, digit)
    return kwargs


def _listing() -> str:
    return "\n".join([
        "constraints: " + ", ".join(constraint_registry.names()),
        "recipes:     " + ", ".join(recipe_names()),
        "solvers:     " + ", ".join(solver_registry.names()),
    ])


def _model(name: str) -> Denoiser:
    """``--model``: ``mnist`` (the shipped DDPM), ``mnist-flow`` or ``gaussian``, by `constrained_diffusion.models.load`."""
    from constrained_diffusion.models import load

    return load(name)  # type: ignore[return-value]


def _constraint(args: argparse.Namespace, digit: torch.Tensor) -> tuple[Constraint, str]:
    """The pixel-space constraint of ``--task`` or ``--constraint``/``--arg``, and how to name it."""
    if args.task is not None:
        from constrained_diffusion.evaluation.image_tasks import make_problem

        ids = [str(args.digit + i) for i in range(digit.shape[0])]  # the digit's position seeds the strokes of mnist-free-form
        return make_problem(args.task, digit, ids).constraint, f"task {args.task}"
    return constraint_registry.load(args.constraint, **parse_args_list(args.arg, digit)), f"constraint {args.constraint}"


def _type_name(hint: Any) -> str:
    """``int | collections.abc.Sequence[int] | torch.Tensor`` -> ``int | Sequence[int] | Tensor``."""
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    for prefix in ("typing.", "collections.abc.", "torch.", "pathlib.", "os."):
        text = text.replace(prefix, "")
    return text


def check_constraint_args(name: str, kwargs: dict[str, Any]) -> None:
    """Check ``--arg`` keyword arguments against the signature of constraint ``name``'s factory, before building it.

    Raises:
        ValueError: a key the factory does not take, a required one missing, or a value that does
            not fit the parameter's annotation (naming the argument and the expected type).
    """
    import inspect
    import typing

    from pydantic import ConfigDict, TypeAdapter
    from pydantic import ValidationError as PydanticError

    factory = constraint_registry.get_factory(name)
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - a plugin's annotation that cannot be resolved here: check names only
        hints = {}
    kinds = {p.kind for p in params.values()}
    named = {k: p for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        unknown = [k for k in kwargs if k not in named]
        if unknown:
            raise ValueError(f"--arg {unknown[0]}: constraint {name!r} takes {', '.join(named) or 'no arguments'}")
    missing = [k for k, p in named.items() if p.default is p.empty and k not in kwargs]
    if missing:
        raise ValueError(f"--arg: constraint {name!r} needs {', '.join(f'{k}=...' for k in missing)}")
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is None or hint is Any:
            continue
        try:
            TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True)).validate_python(value)
        except PydanticError:
            got = f"the text {value!r}" if isinstance(value, str) else f"{type(value).__name__} {value!r}"
            raise ValueError(f"--arg {key}: constraint {name!r} expects {_type_name(hint)}, got {got} "
                             "(values are JSON: 3, 0.5, [1, 2], \"text\"; @digit is the test digit)") from None
        except Exception:  # noqa: BLE001 - an annotation pydantic cannot build a validator for: left to the factory
            continue


FLAGS = "--set/--steps/--inner-steps/--step-scale"
"""How `sample`'s overrides are named in its error messages."""


def _recipe(args: argparse.Namespace) -> tuple[Recipe, str]:
    """The recipe of ``--recipe`` (or ``--solver`` with the paper's loop) with the overrides, and how to name it."""
    common, per, task = split_set(args.set)
    if per or task:
        bad = next(iter(per)) + ":..." if per else "task." + next(iter(task))
        raise ValueError(f"--set {bad}: sample runs one method on its --task; give KEY=VALUE")
    overrides: dict[str, Any] = dict(common)
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.inner_steps is not None:
        overrides["inner_steps"] = args.inner_steps
    if args.step_scale is not None:
        overrides["step_scale"] = args.step_scale[0] if len(args.step_scale) == 1 else tuple(args.step_scale)
    if args.solver is not None:
        return apply_overrides(paper_loop(args.solver), overrides, args.solver, FLAGS), f"solver {args.solver}"
    name = args.recipe or "inexact-newton"
    if name not in recipe_names() and name in solver_registry.names():
        return apply_overrides(paper_loop(name), overrides, name, FLAGS), f"solver {name}"
    return apply_overrides(get_recipe(name), overrides, name, FLAGS), f"recipe {name}"


def _loop(recipe: Recipe) -> str:
    """The sampler's loop in words: steps, and the correction's options (λ and the step rule for the built-in loop)."""
    cfg = recipe.config
    if cfg.correction is not None:
        return f"steps={cfg.steps}, correction {cfg.correction.name}"
    return f"steps={cfg.steps}, inner steps={cfg.inner_steps}, {describe_step(cfg.step_scale, cfg.step_rule)}, target {cfg.target}"


def _check(args: argparse.Namespace) -> None:
    if args.task is None and args.constraint is None:
        raise ValueError("give --task or --constraint (see --list)")
    if args.arg and args.constraint is None:
        raise ValueError("--arg needs --constraint")
    if args.constraint is not None:  # before loading the model: @digit's value only matters by its type here
        check_constraint_args(args.constraint, parse_args_list(args.arg, torch.zeros(1, 1, 32, 32)))
    if args.step_scale is not None and len(args.step_scale) not in (1, 2):
        raise ValueError(f"--step-scale takes one value or two (start end), got {len(args.step_scale)}")


def _result_table(args: argparse.Namespace, result: SampleResult) -> str:
    """Residual, NFE, NBE and seconds per sample, and on MNIST the digit the shipped classifier reads."""
    header = ["sample", "residual", "NFE", "NBE", "seconds"]
    read = None
    if args.model.startswith("mnist"):
        from constrained_diffusion.evaluation.digits import read_digits

        read = read_digits(result.images).tolist()
        header.append("digit read")
    assert result.final_residual is not None
    rows = []
    for i in range(args.batch):
        row = [str(i), f"{max(0.0, float(result.final_residual[i])):.4f}", str(result.nfe), str(result.nbe), f"{result.seconds:.2f}"]
        rows.append(row + ([str(read[i])] if read is not None else []))
    return format_table(header, rows)


def run(args: argparse.Namespace) -> int:
    """Run ``sample`` with the parsed ``args``; returns the exit status."""
    if args.list:
        print(_listing())
        return 0
    _check(args)
    from constrained_diffusion.data.mnist import demo_digits

    digits, labels = demo_digits()
    if args.digit >= digits.shape[0]:
        raise ValueError(f"--digit must be < {digits.shape[0]}, got {args.digit}")
    digit, label = digits[args.digit:args.digit + 1], int(labels[args.digit])
    model = _model(args.model)
    if args.model == "gaussian":  # the analytic model's own image stands in for the digit
        digit = model.sample_prior(1, torch.Generator().manual_seed(args.digit))  # type: ignore[attr-defined]
    pixel, what = _constraint(args, digit)
    recipe, method = _recipe(args)
    gens = [torch.Generator().manual_seed(args.seed + i) for i in range(args.batch)]
    constraint = recipe.constraint(pixel, model)
    result = recipe.sampler(model).sample(constraint, generator=gens, progress=not args.quiet)
    print(f"{what} on {args.model} (test digit {args.digit}: a {label}), {method}: {_loop(recipe)}")
    print(_result_table(args, result))
    images = result.images.clamp(-1, 1)
    if images.shape[1] not in (1, 3):
        images = images[:, :1]
    big = images.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)
    path = save_png(out_file(args.out, "sample.png"), to_uint8(make_grid(big, nrow=min(args.batch, 8), pad_value=1.0)))
    print(f"wrote {path}")
    return 0
