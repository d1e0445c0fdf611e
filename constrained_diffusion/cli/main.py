"""Entry point of ``constrained-diffusion``: parses arguments and dispatches to a sub-command.

Every error the user can fix ends with exit status 2 and one line on stderr, never a
traceback: a bad flag or value (`constrained_diffusion.errors.UsageError`, any ``ValueError``,
pydantic's ``ValidationError``), a run directory in use (``RunInUseError``), a path that cannot
be read or written (``OSError``: the line names the path and what is wrong), a batch that does
not fit in memory (the line names the batch and suggests a smaller ``--batch-size``). Anything
else, a ``TypeError`` from a bug say, keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from typing import NoReturn

from pydantic import ValidationError

from constrained_diffusion.cli import adaptive, analyze, bench, bench_sd, compare, demo, evaluate, model_card, sample, train, tune, tune_study
from constrained_diffusion.errors import OutOfMemoryError, OutputError, UsageError, is_out_of_memory, output_error
from constrained_diffusion.training.checkpoint import RunInUseError


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "value"
            parts.append(f"{loc}: {err['msg']}")
        return "; ".join(parts)
    if isinstance(exc, OSError) and not isinstance(exc, OutputError) and exc.filename is not None:
        # "[Errno 20] Not a directory: 'x'" -> "cannot write x: a path above it is a file, not a folder"
        if exc.errno in _WRITE_ERRNOS:
            return str(output_error(exc, exc.filename))
        reason = exc.strerror or type(exc).__name__
        return f"{exc.filename}: {reason[:1].lower()}{reason[1:]}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


_WRITE_ERRNOS = {errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def build_parser() -> argparse.ArgumentParser:
    """The ``constrained-diffusion`` parser with every sub-command."""
    from constrained_diffusion import __version__

    parser = _Parser(prog="constrained-diffusion", description="Training-free constrained sampling from diffusion models.")
    parser.add_argument("--version", action="version", version=f"constrained-diffusion {__version__}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo.add_parser(sub)
    sample.add_parser(sub)
    bench.add_parser(sub)
    bench_sd.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    tune.add_parser(sub)
    tune_study.add_parser(sub)
    compare.add_parser(sub)
    analyze.add_parser(sub)
    adaptive.add_parser(sub)
    model_card.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (UsageError, ValueError, ValidationError, OSError, FloatingPointError, RunInUseError, OutOfMemoryError) as exc:
        print(f"constrained-diffusion {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        flag = next((f for f, attr in (("--batch-size", "batch_size"), ("--batch", "batch")) if hasattr(args, attr)), None)
        hint = f"; try a smaller {flag}" if flag else "; try smaller inputs or another device"
        print(f"constrained-diffusion {args.command}: error: out of memory ({type(exc).__name__}){hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
