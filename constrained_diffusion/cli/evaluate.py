"""``constrained-diffusion evaluate``: any model, any image set, a task and several methods -> records, summary, grid.

One JSON record per (image, method) in ``DIR/records.jsonl`` (appended batch by batch; a rerun
skips what is recorded), the outputs in ``DIR/images/<method>/``, and ``summary.md``,
``grid.png`` and ``pareto.svg``. ``--config FILE`` (YAML) gives the same fields; flags on the
command line override it. Under ``torchrun`` / ``accelerate launch`` the images are sharded
across the processes and rank 0 merges. See the docs page "Evaluating methods".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from constrained_diffusion.cli.args import device_name, documented_command, positive_int, summary, write_block
from constrained_diffusion.cli.vocabulary import add_alias
from constrained_diffusion.utils.paths import safe_name, under

FIELDS = ("model", "data", "task", "method", "limit", "batch_size", "steps", "set", "metrics", "noise_std", "prompts", "prompt",
          "style_image", "seed", "noise_seeding", "device", "dtype", "precision", "fid_features", "feature_weights", "out", "quiet")
"""The flags that are also `EvaluationConfig` fields (``--config`` YAML keys, with ``_`` for ``-``)."""

OPTIONS = ("--config", "--model", "--data", "--task", "--methods", "--limit", "--batch-size", "--steps", "--set", "--metrics",
           "--noise-std", "--prompts", "--prompt", "--style-image", "--seed", "--noise-seeding", "--device", "--dtype", "--precision",
           "--fid-features",
           "--feature-weights", "--out", "--block")
"""What the command written with a ``--write-docs`` summary repeats."""


def _noise_std(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("evaluate", help="evaluate methods on an image set: records.jsonl, summary.md, grid.png",
                       description=summary(__doc__))
    p.add_argument("--model", help="mnist-ddpm, mnist-flow, a diffusers folder or a Hub id")
    p.add_argument("--data", help="an image folder (recursive; PNG/JPEG/WebP), an image file, or mnist-held-out, mnist-validation, mnist-test")
    p.add_argument("--task", help="box, top-half, random-box, free-form, sr4, sr8, style, or a registered constraint")
    p.add_argument("--methods", dest="method", action="extend", nargs="+", default=None, metavar="METHOD",
                   help="recipe or solver names (repeatable; the methods share observations and noise; "
                        "the --config YAML field is 'method')")
    p.add_argument("--limit", type=positive_int, default=None, help="the first N images (sorted by id)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per batch (default 4)")
    p.add_argument("--steps", type=positive_int, default=None, help="denoising steps of every method (default: each recipe's)")
    p.add_argument("--set", action="extend", nargs="+", default=None, metavar="KEY=VALUE",
                   help="override of every method; LABEL:KEY=VALUE of one; task.KEY=VALUE a task option (repeatable)")
    p.add_argument("--metrics", nargs="+", default=None, help="psnr ssim lpips label_accuracy fid kid (default psnr ssim)")
    p.add_argument("--noise-std", type=_noise_std, default=None, help="measurement noise sigma on the [-1, 1] scale (default 0)")
    p.add_argument("--prompts", type=Path, default=None, help="JSON or CSV: image id -> caption")
    p.add_argument("--prompt", default=None, help="one caption for every image (default: the empty prompt)")
    p.add_argument("--style-image", type=Path, default=None, help="reference image of the style task")
    p.add_argument("--seed", type=int, default=None, help="run seed (default 0); image noise is seeded by seed and image id")
    p.add_argument("--device", type=device_name, default=None, help="cpu or cuda (under a launcher: cuda:LOCAL_RANK)")
    p.add_argument("--dtype", default=None, help="float32 (default), float16, bfloat16")
    p.add_argument("--precision", choices=["float32", "tf32-emulated", "no-tf32"], default=None,
                   help="float32 arithmetic: the device's default (float32), TF32 convolutions emulated, or TF32 off on CUDA")
    p.add_argument("--noise-seeding", choices=["image-id", "position"], default=None,
                   help="initial noise seeded by image id (default) or, for held-out digits, by position as compare does")
    p.add_argument("--fid-features", default=None, help="inception (default), mnist-classifier or module:Class")
    p.add_argument("--feature-weights", type=Path, default=None, help="folder of feature-network weights (torch hub layout)")
    p.add_argument("--config", type=Path, default=None, help="YAML file with these fields; flags override it")
    p.add_argument("--out", type=Path, default=None, help="output folder")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bar and no summary print")
    p.add_argument("--write-docs", type=Path, default=None, help="put the summary table in the --block block of this markdown file")
    p.add_argument("--block", default=None, help="name of the marker block --write-docs replaces")
    add_alias(p, "--method", dest="method")
    p.set_defaults(run=run, documented=command_line)


def command_line(args: argparse.Namespace) -> str:
    """The command written with a summary (it regenerates the block)."""
    return documented_command("evaluate", argparse.Namespace(**{**vars(args), "methods": args.method}), OPTIONS)


def read_config(path: Path) -> list[dict[str, Any]]:
    """The runs of a ``--config`` YAML file: one mapping per YAML document (``---`` separates runs).

    Keys are `FIELDS` (``-`` or ``_``), plus ``name`` (the run's subfolder of ``out`` when the file
    holds several runs) and ``description`` (ignored).

    Raises:
        ValueError: a missing file, invalid YAML, a document that is not a mapping, an unknown key,
            two runs with the same name.
    """
    import yaml

    if not path.is_file():
        raise ValueError(f"--config: {path} does not exist")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"--config: {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    runs = []
    for doc in docs or [{}]:
        if not isinstance(doc, dict):
            raise ValueError(f"--config: {path}: each YAML document must be a mapping of fields")
        data = {str(k).replace("-", "_"): v for k, v in doc.items()}
        data.pop("description", None)
        unknown = [k for k in data if k not in FIELDS and k != "name"]
        if unknown:
            raise ValueError(f"--config: {path}: unknown field {unknown[0]!r}; expected some of {', '.join(FIELDS)}")
        runs.append(data)
    names = [str(r.get("name", r.get("task", ""))) for r in runs]
    if len(runs) > 1 and len({safe_name(n) for n in names}) < len(names):
        raise ValueError(f"--config: {path}: its runs need distinct names, as folder names (got {names})")
    for run, name in zip(runs, names):
        run["name"] = name
    return runs


def options(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`EvaluationConfig` fields of each run, from ``--config`` and the flags.

    A flag given wins over the file; ``--set`` items add to the file's. With several runs in the
    file, run ``name`` writes to ``OUT/name``.
    """
    from constrained_diffusion.cli.args import default_device
    from constrained_diffusion.recipes.overrides import split_set

    runs = read_config(args.config) if args.config is not None else [{}]
    result = []
    for data in runs:
        name = data.pop("name", None)
        for field in FIELDS:
            value = getattr(args, field)
            if value is None:
                continue
            if field == "set":
                base = data.get("set") or {}
                items = [f"{k}={_dump(v)}" for k, v in base.items()] if isinstance(base, dict) else list(base)
                data["set"] = items + value
            else:
                data[field] = value
        if isinstance(data.get("set"), dict):
            data["set"] = [f"{k}={_dump(v)}" for k, v in data["set"].items()]
        for required in ("model", "data", "task", "method", "out"):
            if data.get(required) in (None, [], ""):
                raise ValueError(f"--{required.replace('_', '-')} is required (on the command line or in --config)")
        if len(runs) > 1:  # a run's name is a safe folder name under --out, whatever the file says
            data["out"] = under(data["out"], safe_name(str(name)), option="--config name")
        data.setdefault("device", default_device())
        if "set" in data:
            common, per, task = split_set(data["set"])
            data["set"] = {**common, **{f"{label}:{k}": v for label, kv in per.items() for k, v in kv.items()},
                           **{f"task.{k}": v for k, v in task.items()}}
        result.append(data)
    return result


def _dump(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.evaluation.harness import Evaluation

    runs = [Evaluation(**o) for o in options(args)]  # every run is validated before the first samples
    for run_ in runs:
        run_.check()
    if args.write_docs is not None and args.block is None:
        raise ValueError("--write-docs needs --block NAME")
    summaries = [run_.run() for run_ in runs]
    if args.write_docs is not None:
        import torch

        from constrained_diffusion.cli.args import describe_device

        tables = [(Path(r.config.out) / "summary.md").read_text().split("\n\n", 2)[-1].strip() for r in runs]
        machine = f"torch {torch.__version__}, {describe_device(runs[0].config.device)}"
        body = "\n\n".join(f"{Path(r.config.out).name}: {s['images']} images, {s['records']} records.\n\n{t}"
                            for r, s, t in zip(runs, summaries, tables))
        write_block(args.write_docs, args.block, f"```\n{command_line(args)}\n```\n\n{machine}.\n\n{body}")
    return 0

