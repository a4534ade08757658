"""data=folder: a folder of your own images, in torchvision's ImageFolder layout.

`data.root` holds one sub-folder per class (class names = folder names, sorted), or `train/`, `val/`
and `test/` each holding them (those splits are taken as given). Images are decoded once, by
torchvision.io on every core (no PIL), converted to the majority's channels (or `data.channels`),
resized to `data.image_size` where given, and cached on disk as one uint8 tensor keyed by a fingerprint
of the file list, sizes, modification times and the decode settings: the next run reads the cache, and
a changed folder is decoded again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..config import data_home
from ..errors import ConfigError, DataError
from ..native import NativeStderr
from .types import Loaded

log = logging.getLogger("trainrun")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}  # BMP, TIFF: through PIL
SPLITS = ("train", "val", "test")
CACHE_VERSION = 2  # bump when the cached layout or the decoding changes (2: EXIF orientation, 16-bit PNG)
DECODE_CHUNK = 16  # files per decoding task
SMALL_FILE_BYTES = 16_384  # files smaller than this on average decode on one thread (see decode_all)


def folder(cfg, g, on_bad_file, image_size=None, channels=None, cache_dir=None):

    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={cfg.root}: no such folder")
    given = [s for s in SPLITS if (root / s).is_dir()]
    split_dirs = {s: root / s for s in given} if given else {"train": root}
    if given and "train" not in given:
        raise DataError(f"data.root={cfg.root} has {', '.join(given)}/ but no train/")
    classes = class_folders(split_dirs["train"])
    files = {s: list_images(d, classes) for s, d in split_dirs.items()}
    settings = {"image_size": list(image_size) if image_size else None, "channels": channels,
                "on_bad_file": on_bad_file, "version": CACHE_VERSION}
    cache = cache_path(root, files, settings, cache_dir)
    decoded = read_cache(cache)
    if decoded is None:
        decoded = decode_all(files, classes, image_size, channels, on_bad_file)
        log.info("data=folder: decoded %d images into %s", sum(len(v["y"]) for v in decoded["splits"].values()), cache)
        write_cache(cache, decoded)
        decoded = read_cache(cache) or decoded  # the images as the cache file's pages, which a run can stream
    else:
        log.info("data=folder: read the decoded images from %s", cache)
    parts = {s: (d["x"], d["y"]) for s, d in decoded["splits"].items()}  # uint8: Data.fetch makes floats
    x, y = parts["train"]
    test, val = parts.get("test", (None, None)), parts.get("val", (None, None))
    # what new images go through before this run's model sees them (trainrun-predict, decode_as_trained)
    inputs = {"kind": "images", "channels": int(x.shape[1]), "image_size": list(image_size) if image_size else None,
              "converts_channels": True, "resize": "bilinear, antialiased"}
    return Loaded(x, y, *test, *val, class_names=decoded["classes"], on_disk=decoded.get("mapped", False),
                  inputs=inputs)


def class_folders(directory: Path) -> list[str]:
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{directory} has no class sub-folders (expected {directory}/<class>/<image files>)")
    if len(classes) == 1:
        raise DataError(f"{directory} has one class sub-folder ({classes[0]}): nothing to tell apart")
    return classes


def image_files(directory: Path) -> list[str]:
    """The paths of the image files under `directory`, at any depth, in pathlib's order (by the path's parts),
    as strings: 10,000 in ~0.04 s, against ~0.3 s through rglob, whose Path objects took 0.16 s to sort and
    making them 0.06 s more. A broken link is listed, and then named as unreadable."""
    found = [os.path.join(top, name) for top, _, names in os.walk(directory, followlinks=True) for name in names
             if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda f: f.split(os.sep))


def list_images(directory: Path, classes: list[str]) -> list[tuple[str, int]]:
    found = []
    for index, name in enumerate(classes):
        images = image_files(directory / name)
        if not images:
            raise DataError(f"class folder {directory / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        found += [(p, index) for p in images]
    return found


def cache_path(root: Path, files: dict, settings: dict, cache_dir: str | None) -> Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    prefix = len(os.path.join(str(root), ""))  # every listed path starts with root's: relative by slicing
    for split, entries in files.items():
        for path, label in entries:
            stat = os.stat(path)
            digest.update(f"{split}\0{path[prefix:]}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    # beside trainrun's other data (data.root's default), never inside the user's folder
    base = Path(cache_dir).expanduser() if cache_dir else \
        data_home() / "folder-cache"
    return base / f"{root.name}-{digest.hexdigest()[:20]}.pt"


def read_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:  # memory-mapped: pages are read as batches need them, and belong to the page cache
        return {**torch.load(path, map_location="cpu", weights_only=True, mmap=True), "mapped": True}
    except Exception:  # a cache is disposable: a broken one is decoded again
        log.warning("data=folder: the cache %s is unreadable; decoding the images again", path)
        return None


def write_cache(path: Path, decoded: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(decoded, tmp)
        os.replace(tmp, path)
    except OSError as e:  # the run goes on; the next one decodes again
        log.warning("data=folder: cannot write the cache %s (%s)", path, e.strerror or e)


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, without a Python file object (whose buffering cost 3x the read of a small file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)  # a regular file in one read: its size, and a byte more to see it did not grow
        if len(data) <= size:
            return data
        parts = [data]
        while part := os.read(fd, 1 << 20):  # it grew, or is not a regular file (a pipe: size 0)
            parts.append(part)
        return b"".join(parts)
    finally:
        os.close(fd)


def decode_one(path: str | Path) -> torch.Tensor | str:
    """The image as uint8 (C, H, W), 1 or 3 channels (an alpha channel dropped); the error text if unreadable."""
    from torchvision.io import ImageReadMode

    # the file's bytes checked as bytes: indexing a tensor per file had doubled the decode of 10,000 MNIST PNGs
    # (1.7 s against 0.8 s on this CPU); read by os.read: 14 us a file against open().read()'s 42 us
    try:
        raw = read_bytes(path)
        # a palette PNG (IHDR colour type 3) decodes UNCHANGED to its palette indices: ask for its colours
        palette = raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 25 and raw[25] == 3
        # torchvision's operator, as its decode_image calls it: that wrapper's usage log and deprecation warning
        # took a quarter of the decode of 10,000 MNIST PNGs (0.135 s against 0.100 s)
        image = torch.ops.image.decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8),
                                             (ImageReadMode.RGB if palette else ImageReadMode.UNCHANGED).value,
                                             True)  # EXIF orientation: a phone's portrait JPEG is stored sideways
    except OSError as e:
        return e.strerror or type(e).__name__
    except Exception as e:  # torchvision raises RuntimeError or ValueError for files that are not images
        image = decode_with_pil(path)  # formats torchvision cannot decode (BMP, TIFF)
        if image is None:
            return decoder_error(e)
    if image.dim() == 4:  # an animated GIF: its first frame
        image = image[0]
    if image.dtype == torch.uint16:  # a 16-bit PNG: its top 8 bits, as PIL's conversion to 8 bits keeps
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    channels = image.shape[0]
    return image if channels in (1, 3) else image[:1] if channels == 2 else image[:3]


def libpng_reason(native: NativeStderr, path: str, given: str) -> str:
    """`given` (torchvision's words for a file it could not decode), or, where that says only "Internal error.",
    libpng's line for the file (libpng writes it to the process's stderr itself), decoded again alone."""
    if not given.startswith("Internal error"):
        return given
    start = native.written()
    decode_one(path)
    said = [line.removeprefix("libpng error: ") for line in native.since(start).splitlines()
            if line.startswith("libpng error")]
    return said[-1] if said else given


def decoder_error(e: Exception) -> str:
    """torchvision's message for a file it cannot decode, without the C++ source place it begins with
    ("operator(), .../decode_png.cpp:79, Out of bound read in decode_png. Probably, ..."): its first sentence."""
    text = re.sub(r"^[\w()]+, \S+:\d+, ", "", " ".join(str(e).split()))
    return text.split(". ")[0][:100] or type(e).__name__


def decode_with_pil(path: Path) -> torch.Tensor | None:
    """The image as uint8 (C, H, W) through PIL (torchvision's dependency), or None where PIL cannot read it."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            mode = {"1": "L", "L": "L", "LA": "L", "I;16": "L"}.get(image.mode, "RGB")  # palette, CMYK, alpha: RGB
            pixels = np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return torch.from_numpy(pixels.copy()).unsqueeze(0) if pixels.ndim == 2 else \
        torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def decode_all(files: dict, classes: list[str], image_size, channels, on_bad_file: str) -> dict:
    from torchvision.transforms.v2 import functional as F

    order = [(split, path, label) for split, entries in files.items() for path, label in entries]
    paths = [path for _, path, _ in order]
    # Measured on 2 cores: 300 512x512 JPEGs decode 1.7x faster on two threads (torchvision's decoders release the
    # GIL), but 10,000 MNIST PNGs (~300 bytes each) 1.5x slower (0.23 s against 0.15 s): for small files the
    # threads fight over the GIL for the Python around each decode. Files go in chunks: a future per file costs
    # more than a small file's decode.
    sample = paths[:: max(1, len(paths) // 100)]
    small = sum(os.path.getsize(p) for p in sample) / max(len(sample), 1) < SMALL_FILE_BYTES
    chunks = [paths[i:i + DECODE_CHUNK] for i in range(0, len(paths), DECODE_CHUNK)]
    with NativeStderr(("libpng ",)) as native, ThreadPoolExecutor(max_workers=1 if small else os.cpu_count() or 1) as pool:
        images = [image for chunk in pool.map(lambda chunk: [decode_one(p) for p in chunk], chunks) for image in chunk]
        bad = [(path, image) for (_, path, _), image in zip(order, images) if isinstance(image, str)]
        if bad:
            bad[0] = (bad[0][0], libpng_reason(native, *bad[0]))
    if bad and on_bad_file == "error":
        path, why = bad[0]
        raise DataError(f"{path} is not a readable image ({why}); fix or remove it, or set data.on_bad_file=skip"
                        + (f" ({len(bad)} such files)" if len(bad) > 1 else ""))
    if bad:
        log.warning("data=folder: skipped %d unreadable files (the first: %s)", len(bad), bad[0][0])
    kept = [(s, label, image) for (s, _, label), image in zip(order, images) if not isinstance(image, str)]
    if channels is None:  # the majority's
        colour = sum(image.shape[0] == 3 for _, _, image in kept)
        channels = 3 if colour * 2 >= len(kept) else 1
    sizes = sorted({tuple(image.shape[1:]) for _, _, image in kept})
    if image_size is None and len(sizes) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sizes[:4]) + (f" and {len(sizes) - 4} more" if len(sizes) > 4 else "")
        raise ConfigError(f"data=folder: the images have different sizes ({shown}); set data.image_size=[H,W]")
    splits = {}
    for split in files:
        xs, ys = [], []
        for s, label, image in kept:
            if s != split:
                continue
            if image.shape[0] != channels:
                image = F.rgb_to_grayscale(image) if channels == 1 else image.expand(3, -1, -1)
            if image_size is not None and tuple(image.shape[1:]) != tuple(image_size):
                image = F.resize(image, list(image_size), antialias=True)
            xs.append(image)
            ys.append(label)
        if not xs:
            raise DataError(f"data=folder: no readable image left in the {split} split")
        splits[split] = {"x": torch.stack(xs).contiguous(), "y": torch.tensor(ys, dtype=torch.int64)}
    return {"splits": splits, "classes": classes}
