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
import warnings
from collections.abc import Sequence

from constrained_diffusion.cli.commands import Parser as _Parser
from constrained_diffusion.cli.commands import add_commands
from constrained_diffusion.errors import OutputError, output_error


def _one_line(exc: Exception) -> str:
    from pydantic import ValidationError

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
    """The ``constrained-diffusion`` parser with every sub-command.

    A sub-command's options are added when it is parsed or its help printed (`cli.commands.LazyParser`), so
    building the parser and ``--help`` import neither torch nor the library; `cli.commands.subparsers` loads them all.
    """
    from constrained_diffusion import __version__

    parser = _Parser(prog="constrained-diffusion", description="Training-free constrained sampling from diffusion models.")
    parser.add_argument("--version", action="version", version=f"constrained-diffusion {__version__}", help="print the version and exit")
    add_commands(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    # an option or flag renamed in 0.2 (lr -> step_scale, ...; utils.renamed) is shown, not hidden like other DeprecationWarnings
    warnings.filterwarnings("default", message=r".*is deprecated: it is called", category=DeprecationWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    from pydantic import ValidationError

    from constrained_diffusion.errors import OutOfMemoryError, UsageError, is_out_of_memory
    from constrained_diffusion.training.checkpoint import RunInUseError

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
