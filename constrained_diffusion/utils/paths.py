"""Output paths built from user strings stay under the folder the user named.

Model paths and Hub ids, run names, method labels and study names end up in file names.
`safe_name` reduces such a string to one harmless path component (no separator, no ``..``,
no leading ``/``, ASCII only, not empty, not too long), and `under` joins parts to an output
root and refuses, naming the option, a result that would still leave it.

Examples:
    >>> safe_name("../../etc/passwd"), safe_name("/abs/path/m.safetensors"), safe_name(".."), safe_name("")
    ('.._.._etc_passwd', '_abs_path_m.safetensors', '__', '_')
    >>> safe_name("runwayml/stable-diffusion-v1-5"), safe_name("dps (tuned)"), safe_name("débruité")
    ('runwayml_stable-diffusion-v1-5', 'dps__tuned_', 'd_bruit_')
    >>> under("out", "images", safe_name(".."), "0.png").as_posix()
    'out/images/__/0.png'
    >>> under("out", "../x", option="name")
    Traceback (most recent call last):
    ...
    constrained_diffusion.errors.UsageError: name: '../x' would write outside out (to x)
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from constrained_diffusion.errors import UsageError

MAX_NAME = 120
"""The longest name `safe_name` returns (file systems allow 255 bytes; room is left for suffixes)."""


def safe_name(text: str) -> str:
    """``text`` as one safe file or folder name.

    Every character other than ASCII letters, digits and ``. _ = + -`` becomes ``_`` (so path
    separators, ``:``, spaces and non-ASCII letters do); a name of dots only (``.``, ``..``)
    becomes underscores; an empty name is ``_``; a name longer than `MAX_NAME` is cut and ends
    with 8 hex digits of the SHA-256 of ``text``, so long names stay distinct.
    """
    name = re.sub(r"[^A-Za-z0-9._=+-]", "_", str(text))
    if not name.strip("."):
        name = name.replace(".", "_") or "_"
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9] + "-" + hashlib.sha256(str(text).encode()).hexdigest()[:8]
    return name


def under(root: str | os.PathLike[str], *parts: str | os.PathLike[str], option: str = "--out") -> Path:
    """``root`` joined with ``parts``; refuses a path that is not inside ``root`` (compared lexically, after ``..``).

    Raises:
        UsageError: the joined path leaves ``root`` (an absolute part, or ``..`` climbing out),
            naming ``option``.
    """
    root = Path(root)
    path = root.joinpath(*parts)
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.abspath(path))
    if full != base and not full.startswith(base.rstrip(os.sep) + os.sep):
        shown = os.path.join(*map(str, parts)) if parts else str(path)
        raise UsageError(f"{option}: {shown!r} would write outside {root} (to {os.path.relpath(full)})")
    return path
