"""Image sets for evaluation: a folder of image files, or a shipped set by name (``mnist-test``, ...).

Every set is a list of string ids and a way to load image ``i`` as a ``(C, H, W)`` float tensor
in ``[-1, 1]`` at a requested resolution:

* `ImageFolder`: every PNG / JPEG / WebP file under a folder (recursive, sorted), id = the
  path relative to the folder (POSIX separators). Each image is converted to the model's
  channels (grey for 1, RGB for 3; every PIL mode and bit depth scaled by its range, see
  `constrained_diffusion.utils.images.pil_to_tensor`), centre-cropped to the target aspect ratio
  (the largest centred window ``H'/W' = H/W``) and resized to ``(H, W)`` with antialiased
  bicubic resampling. The folder is listed, not decoded, up front: a file is decoded when its
  batch needs it (`load_available`), so ``--limit N`` decodes N files and the first sample starts
  at once. A file that cannot be decoded is reported (``skipped``) and left out when it is
  reached; an image smaller than the resolution is an error (it would be up-sampled, not evaluated),
  unless it is smaller by a border (at most 1/`BORDER` of each side: 28x28 MNIST digits for a
  32x32 model), which is padded with the image's edge pixels (a warning says so once).
* `TensorImages`: images already in memory, resized the same way when the resolution differs.
  The shipped MNIST sets are three views of the 500 held-out digits (`cd.data.mnist`):
  ``mnist-held-out`` (all 500, ids ``00000`` ... ``00499``), ``mnist-validation`` and
  ``mnist-test`` (its seeded, stratified halves of 250). A digit's id is its held-out position
  in every view, so it keeps its noise and masks, and validation and test ids never meet.
  ``mnist-validation:stratified-N`` (likewise for the other two) is the class-stratified subset
  of ``N`` digits (`stratified_set`), which tuning and ``tune-study`` use: the first ``N`` by id
  would be one class.
* `HFImages`: a local Hugging Face ``datasets`` image dataset (a folder written by
  ``Dataset.save_to_disk``; a ``DatasetDict`` folder takes its ``test`` split, else its
  first), its first ``Image`` column; ids are the ``id`` / ``file_name`` column where there
  is one, else the row number ``00000``, ...

`open_images` picks one from the ``--data`` argument; `SHIPPED_SETS` lists the named sets;
`load_available` decodes a batch of ids, skipping (and reporting) the unreadable ones.

Examples:
    >>> images = open_images("mnist-held-out", (1, 32, 32))
    >>> len(images), images.ids[:2]
    (500, ['00000', '00001'])
    >>> val, test = open_images("mnist-validation", (1, 32, 32)), open_images("mnist-test", (1, 32, 32))
    >>> len(val), len(test), set(val.ids).isdisjoint(test.ids)
    (250, 250, True)
    >>> x = images.load(0)
    >>> tuple(x.shape), bool(x.min() >= -1 and x.max() <= 1)
    ((1, 32, 32), True)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from constrained_diffusion.utils.images import pil_to_tensor

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
"""File suffixes (any case) an image folder reads."""


def _mnist(split: str) -> Callable[[], tuple[Tensor, list[str]]]:
    def load() -> tuple[Tensor, list[str]]:
        from constrained_diffusion.data.mnist import held_out_positions, mnist

        order = "id"  # the harness iterates by id: "first N" digits stay those of the 0.1 tables
        return mnist(split, order)[0], [f"{int(p):05d}" for p in held_out_positions(split, order)]  # type: ignore[arg-type]

    load.__doc__ = f"The {split} MNIST digits and their held-out positions as ids."
    return load


SHIPPED_SETS: dict[str, Callable[[], tuple[Tensor, list[str]]]] = {
    "mnist-held-out": _mnist("held-out"), "mnist-validation": _mnist("validation"), "mnist-test": _mnist("test")}
"""Named image sets that need no files: name -> a function returning images ``(N, C, H, W)`` in ``[-1, 1]`` and their ids."""
STRATIFIED = ":stratified-"
"""``mnist-validation:stratified-N``: the shipped set's class-stratified subset of ``N`` digits (`stratified_set`)."""


def shipped_labels(data: str | os.PathLike[str], ids: Sequence[str]) -> Tensor | None:
    """The class labels ``(B,)`` of images ``ids`` of a shipped MNIST set (or its stratified subset); ``None`` for any other ``data``.

    A shipped digit's id is its held-out position, so its label is the held-out set's label there.

    Examples:
        >>> shipped_labels("mnist-held-out", ["00000", "00001"]).tolist() == mnist_labels()[:2].tolist()
        True
        >>> shipped_labels("my/folder", ["cat.png"]) is None
        True
    """
    return mnist_labels()[[int(i) for i in ids]] if labelled(data) else None


def labelled(data: str | os.PathLike[str]) -> bool:
    """Whether ``data`` is a shipped MNIST set (or its stratified subset), whose labels `shipped_labels` knows (reads no file)."""
    return os.fspath(data).partition(STRATIFIED)[0] in SHIPPED_SETS


def mnist_labels() -> Tensor:
    """The labels ``(500,)`` of the held-out MNIST digits, by held-out position."""
    from constrained_diffusion.data.mnist import mnist

    return mnist("held-out")[1]


def stratified_set(name: str, n: int) -> tuple[Tensor, list[str]]:
    """The class-stratified ``n`` digits of the shipped MNIST set ``name``, sorted by id (their held-out positions).

    The first ``n`` digits of the split's class-interleaved order (``0, 1, ..., 9, 0, ...``,
    `constrained_diffusion.data.mnist.held_out_positions`): ``n // 10`` of each class, one more
    for the ``n % 10`` lowest classes. A digit keeps its id, so its noise and masks are those
    of the full set. ``open_images("mnist-test:stratified-16", ...)`` opens it.

    Examples:
        >>> from constrained_diffusion.data.mnist import mnist
        >>> images, ids = stratified_set("mnist-validation", 10)
        >>> labels = mnist("held-out")[1]
        >>> sorted(labels[[int(i) for i in ids]].tolist())
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    from constrained_diffusion.data.mnist import held_out_positions, mnist

    splits = {"mnist-held-out": "held-out", "mnist-validation": "validation", "mnist-test": "test"}
    if name not in splits:
        raise ValueError(f"--data: {name}{STRATIFIED}{n}: only the shipped MNIST sets ({', '.join(splits)}) have a stratified subset")
    split = splits[name]
    positions = held_out_positions(split, "class-interleaved")  # type: ignore[arg-type]
    if not 1 <= n <= positions.numel():
        raise ValueError(f"--data: {name}{STRATIFIED}{n}: N must be in 1..{positions.numel()}")
    chosen = positions[:n].sort().values
    held = mnist("held-out")[0]
    return held[chosen].clone(), [f"{int(p):05d}" for p in chosen]


class UnreadableImage(ValueError):
    """A listed image file that cannot be decoded (`ImageFolder.load`); `load_available` skips it."""


@dataclass
class Skipped:
    """A file of a folder that was left out, and why."""

    id: str
    reason: str


BORDER = 8
"""An image smaller than the model by at most ``1/BORDER`` of each side is padded, not refused (28x28 for 32x32)."""


def check_size(h: int, w: int, size: tuple[int, int], name: str) -> bool:
    """Whether an ``h x w`` image needs padding to the model's ``size`` ``(H, W)``.

    Raises:
        ValueError: it is smaller than ``size`` by more than a border (``1/BORDER`` of a side),
            with the fix: pad or resize the images first.

    Examples:
        >>> check_size(28, 28, (32, 32), "mnist"), check_size(40, 32, (32, 32), "x")
        (True, False)
    """
    H, W = size
    if h >= H and w >= W:
        return False
    if H - h <= H // BORDER and W - w <= W // BORDER:
        return True
    raise ValueError(f"--data: image {name} is {w}x{h} pixels, smaller than the model's resolution {W}x{H}; pad or resize "
                     f"the images to at least {W}x{H} first (a border of up to {W // BORDER}x{H // BORDER} pixels is padded "
                     f"automatically, e.g. 28x28 MNIST digits for a 32x32 model)")


def pad_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Pad ``x`` ``(C, h, w)`` to at least ``size`` ``(H, W)``, centred, with its edge pixels (``replicate``)."""
    H, W = size
    h, w = x.shape[-2:]
    dh, dw = max(0, H - h), max(0, W - w)
    warnings.warn(f"images of {w}x{h} pixels are padded to the model's {W}x{H} with their edge pixels", UserWarning, stacklevel=3)
    padded = torch.nn.functional.pad(x[None].float(), (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="replicate")
    return padded[0]


def _resize(x: Tensor, size: tuple[int, int], name: str) -> Tensor:
    """Centre-crop ``x`` ``(C, h, w)`` to the aspect ratio of ``size`` ``(H, W)``, then resize (antialiased bicubic).

    An image smaller than ``size`` by a border is first padded (`pad_to`); by more, it is an error (`check_size`).
    """
    H, W = size
    if check_size(*x.shape[-2:], size, name):
        x = pad_to(x, size)
    h, w = x.shape[-2:]
    if (h, w) == (H, W):
        return x
    if h * W > w * H:  # too tall: crop rows
        ch, cw = max(H, round(w * H / W)), w
    else:
        ch, cw = h, max(W, round(h * W / H))
    top, left = (h - ch) // 2, (w - cw) // 2
    x = x[..., top:top + ch, left:left + cw]
    if (ch, cw) == (H, W):
        return x
    out = torch.nn.functional.interpolate(x[None].float(), size=(H, W), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(-1, 1)


@dataclass
class TensorImages:
    """Images held in memory, ``(N, C, H, W)`` in ``[-1, 1]``, with ids ``00000``, ``00001``, ... unless given.

    Args:
        images: the images.
        resolution: ``(C, H, W)`` the `load` returns (channels must match; the size is
            centre-cropped and resized as for a folder).
        name: how the set is named in records and errors.
        ids: one distinct string per image, sorted (default: the positions, five digits).
    """

    images: Tensor
    resolution: tuple[int, int, int]
    name: str = "tensor"
    ids: list[str] | None = None
    skipped: list[Skipped] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.shape[1] != self.resolution[0]:
            raise ValueError(f"--data: {self.name} has {self.images.shape[1]} channel(s) but the model takes {self.resolution[0]}")
        check_size(*self.images.shape[-2:], self.resolution[1:], f"set {self.name}")
        if self.ids is None:
            self.ids = [f"{i:05d}" for i in range(self.images.shape[0])]
        elif len(self.ids) != self.images.shape[0] or len(set(self.ids)) != len(self.ids) or list(self.ids) != sorted(self.ids):
            raise ValueError(f"ids must be {self.images.shape[0]} distinct, sorted strings, one per image")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> Tensor:
        """Image ``index`` as ``(C, H, W)`` float32 in ``[-1, 1]``."""
        return _resize(self.images[index].float(), self.resolution[1:], f"{self.name}/{self.ids[index]}")


@dataclass
class ImageFolder:
    """Every image file under ``root`` (recursive), centre-cropped and resized to ``resolution``.

    Args:
        root: the folder.
        resolution: ``(C, H, W)``: ``C`` 1 (greyscale) or 3 (RGB), ``(H, W)`` the model's size.
        check: decode every file now, so that a corrupt file is found and reported before any
            sampling; ``False`` (the default) lists the files and decodes each when it is loaded
            (a corrupt one is then reported and skipped when reached, `load_available`).
        report: called with one line per skipped file (default: print to stderr).

    Attributes:
        ids: the image files' paths relative to ``root``, sorted (with ``check=True``: the readable ones).
        skipped: the files left out (`Skipped`: id and reason), as they are found.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no image file in it (with ``check=True``: no readable one); an image smaller
            than the resolution (naming it, when it is decoded); ``C`` other than 1 or 3.
    """

    root: Path
    resolution: tuple[int, int, int]
    check: bool = False
    report: Callable[[str], object] | None = None
    ids: list[str] = field(init=False)
    skipped: list[Skipped] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"--data: {self.root} is not a folder")
        if self.resolution[0] not in (1, 3):
            raise ValueError(f"an image folder feeds models with 1 or 3 channels, not {self.resolution[0]}")
        files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                       if p.is_file() and p.suffix.lower() in EXTENSIONS)
        report = self.report or _stderr
        self.ids = []
        for name in files:
            if self.check:
                try:
                    self._decode(name)
                except OSError as exc:
                    self._skip(name, exc, report)
                    continue
            self.ids.append(name)
        if not self.ids:
            what = f"{len(files)} file(s) with a suffix in {EXTENSIONS}, none readable" if files else f"no file with a suffix in {EXTENSIONS}"
            raise ValueError(f"--data: {self.root} holds no readable image ({what})")

    def __len__(self) -> int:
        return len(self.ids)

    def _skip(self, name: str, exc: OSError, report: Callable[[str], object]) -> Skipped:
        skipped = Skipped(name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if all(s.id != name for s in self.skipped):
            self.skipped.append(skipped)
            report(f"skipped {self.root / name}: cannot be decoded ({skipped.reason})")
        return skipped

    def _decode(self, name: str) -> Tensor:
        from PIL import Image

        with Image.open(self.root / name) as img:
            x = pil_to_tensor(img, self.resolution[0], (-1.0, 1.0), name)
        return _resize(x, self.resolution[1:], name)

    def load(self, index: int) -> Tensor:
        """Image ``index`` (of `ids`) as ``(C, H, W)`` float32 in ``[-1, 1]``, decoded now.

        Raises:
            UnreadableImage: the file cannot be decoded (it is added to `skipped` and reported once).
        """
        name = self.ids[index]
        try:
            return self._decode(name)
        except OSError as exc:
            skipped = self._skip(name, exc, self.report or _stderr)
            raise UnreadableImage(f"--data: {self.root / name} cannot be decoded ({skipped.reason})") from None


@dataclass
class HFImages:
    """A local Hugging Face ``datasets`` image dataset (``save_to_disk`` folder), resized as a folder's images.

    Args:
        root: the folder (``dataset_info.json`` / ``state.json`` inside, or a ``DatasetDict``'s
            ``dataset_dict.json``).
        resolution: ``(C, H, W)``.
        split: the split of a ``DatasetDict`` (default ``test`` where present, else the first).

    Raises:
        ValueError: ``datasets`` is not installed; the dataset has no image column.
    """

    root: Path
    resolution: tuple[int, int, int]
    split: str | None = None
    ids: list[str] = field(init=False)
    skipped: list[Skipped] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        try:
            import datasets
        except ImportError:
            raise ValueError(f"--data: {self.root} is a Hugging Face dataset; reading it needs `pip install datasets`") from None
        ds = datasets.load_from_disk(str(self.root))
        if isinstance(ds, datasets.DatasetDict):
            split = self.split or ("test" if "test" in ds else next(iter(ds)))
            ds = ds[split]
        column = next((name for name, feat in ds.features.items() if isinstance(feat, datasets.Image)), None)
        if column is None:
            raise ValueError(f"--data: the dataset at {self.root} has no Image column (columns: {', '.join(ds.features)})")
        self.dataset, self.column = ds, column
        key = next((c for c in ("id", "file_name", "filename", "image_id") if c in ds.features), None)
        self.ids = [str(v) for v in ds[key]] if key is not None else [f"{i:05d}" for i in range(len(ds))]
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"--data: the {key!r} column of {self.root} repeats ids")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> Tensor:
        """Row ``index``'s image as ``(C, H, W)`` float32 in ``[-1, 1]``."""
        name = f"{self.root}[{self.ids[index]}]"
        x = pil_to_tensor(self.dataset[index][self.column], self.resolution[0], (-1.0, 1.0), name)
        return _resize(x, self.resolution[1:], name)


def load_available(images: ImageSet, ids: Sequence[str]) -> tuple[Tensor | None, list[str]]:
    """Decode the images ``ids`` of ``images`` now, leaving out (and reporting, once) those that cannot be decoded.

    Args:
        images: an image set.
        ids: some of its ids.

    Returns:
        ``(x, kept)``: ``x`` the readable images stacked ``(len(kept), C, H, W)`` (``None`` if none
        is), ``kept`` their ids in the order given.

    Examples:
        >>> images = open_images("mnist-test", (1, 32, 32))
        >>> x, kept = load_available(images, images.ids[:3])
        >>> tuple(x.shape), kept == images.ids[:3]
        ((3, 1, 32, 32), True)
    """
    index = getattr(images, "_positions", None)
    if index is None or len(index) != len(images.ids):  # built once per set, not per batch
        index = {image_id: i for i, image_id in enumerate(images.ids)}
        images._positions = index  # type: ignore[union-attr]
    loaded, kept = [], []
    for image_id in ids:
        try:
            loaded.append(images.load(index[image_id]))
        except UnreadableImage:
            continue
        kept.append(image_id)
    return (torch.stack(loaded) if loaded else None), kept


def _is_hf_dataset(path: Path) -> bool:
    return any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json"))


ImageSet = ImageFolder | TensorImages | HFImages


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def open_images(data: str | os.PathLike[str], resolution: Sequence[int], report: Callable[[str], object] | None = None) -> ImageSet:
    """The image set ``data`` names: a shipped set (`SHIPPED_SETS`), a folder, a ``datasets`` folder, or one image file.

    Args:
        data: a shipped set (``"mnist-test"``, ``"mnist-validation"``, ``"mnist-held-out"``, or its class-stratified
            subset ``"mnist-test:stratified-16"``, `stratified_set`), a folder of images, a folder written by ``datasets``'
            ``save_to_disk`` (`HFImages`), or a single image file (its folder is not scanned).
        resolution: ``(C, H, W)`` of the model's pixels.
        report: receives one line per skipped (corrupt) file of a folder.

    Raises:
        ValueError: an unknown name, an unreadable single image, a folder with none readable,
            an image smaller than ``resolution``.
        FileNotFoundError: a path that does not exist.
    """
    res = tuple(int(r) for r in resolution)
    if len(res) != 3:
        raise ValueError(f"resolution must be (C, H, W), got {tuple(resolution)}")
    text = os.fspath(data)
    if text in SHIPPED_SETS:
        images, ids = SHIPPED_SETS[text]()
        return TensorImages(images, res, text, ids)  # type: ignore[arg-type]
    if STRATIFIED in text and text.split(STRATIFIED)[0] in SHIPPED_SETS:
        base, _, count = text.partition(STRATIFIED)
        if not count.isdigit():
            raise ValueError(f"--data: {text}: expected {base}{STRATIFIED}N with N a whole number")
        images, ids = stratified_set(base, int(count))
        return TensorImages(images, res, text, ids)  # type: ignore[arg-type]
    path = Path(text)
    if path.is_dir() and _is_hf_dataset(path):
        return HFImages(path, res)  # type: ignore[arg-type]
    if path.is_dir():
        return ImageFolder(path, res, report=report)  # type: ignore[arg-type]
    if path.is_file():
        if path.suffix.lower() not in EXTENSIONS:
            raise ValueError(f"--data: {path} is not an image file ({', '.join(EXTENSIONS)})")
        folder = _SingleFile(path.parent, res, path.name)  # type: ignore[arg-type]
        try:
            folder._decode(path.name)  # one file: read now, so that a bad --data fails at once
        except OSError as exc:
            raise ValueError(f"--data: cannot read image {path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        return folder
    if path.suffix or os.sep in text or "/" in text:
        raise FileNotFoundError(f"--data: {text} does not exist")
    raise ValueError(f"--data: unknown image set {text!r}; expected a folder, an image file or one of {sorted(SHIPPED_SETS)}")


class _SingleFile(ImageFolder):
    """An `ImageFolder` of one named file."""

    def __init__(self, root: Path, resolution: tuple[int, int, int], name: str) -> None:
        self.root, self.resolution, self.check, self.report = Path(root), resolution, False, None
        self.ids, self.skipped = [name], []
