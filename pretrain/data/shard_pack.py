"""Packing an ImageNet-layout split into webdataset tar shards (``tools/pack_shards.py``).

The listing and labels are :func:`scan_imagenet_split`'s, so they match the
folder datasets exactly. The samples are shuffled once with ``seed`` (ImageNet's
folders are sorted by class: unshuffled shards would each hold one or two
classes) and cut into shards of ``shard_size`` samples or at most
``max_shard_bytes`` bytes; everything about a shard follows from the listing and
these arguments, so a packing is reproducible to the byte.

Resumable: each shard is written under a temporary name and renamed when
complete, and the manifest (``complete: false`` until the end) records each
finished shard's sha256. A rerun with the same arguments keeps the shards whose
hash matches and writes the others.
"""

import ctypes
import ctypes.util
import hashlib
import re
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .folders import ImageFolderError, scan_imagenet_split
from .shards import (
    Manifest,
    ShardError,
    ShardInfo,
    archive_bytes,
    file_sha256,
    image_extension,
    manifest_path,
    read_manifest,
    sample_bytes,
    sample_key,
    shard_name,
    write_manifest,
    write_shard,
)

PACKER = "tools/pack_shards.py"
PACKER_VERSION = 1


@dataclass(frozen=True)
class SourceImage:
    key: str
    ext: str
    path: Path
    label: int
    size: int


def list_source(root: str | Path, split: str) -> tuple[list[SourceImage], list[str]]:
    """The split's images (in :func:`scan_imagenet_split` order) with their shard keys,
    and the class list. Two files that would get one key are an error naming both."""
    samples, classes = scan_imagenet_split(root, split)
    split_dir = Path(root) / split
    images, seen = [], {}
    for path, label in samples:
        key = sample_key(path.relative_to(split_dir))
        if key in seen:
            raise ImageFolderError(
                f"{path} and {seen[key]} would both be stored under the key {key!r} (the file name without "
                "its suffix, dots made underscores); rename one of them"
            )
        seen[key] = path
        images.append(SourceImage(key, image_extension(path), path, label, path.stat().st_size))
    return images, classes


def listing_sha256(images: list[SourceImage], split_dir: Path) -> str:
    """A digest of what is packed: every file's path below the split, label and size."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.path.relative_to(split_dir).as_posix()}\t{image.label}\t{image.size}\n".encode())
    return digest.hexdigest()


def plan_shards(
    images: list[SourceImage], seed: int, shard_size: int | None = None, max_shard_bytes: int | None = None
) -> list[list[SourceImage]]:
    """The images shuffled with ``seed``, cut into shards of ``shard_size`` images or
    of at most ``max_shard_bytes`` bytes (tar headers included; a single larger image
    gets a shard of its own), each shard sorted by key."""
    if (shard_size is None) == (max_shard_bytes is None):
        raise ValueError("give exactly one of shard_size and max_shard_bytes")
    if (shard_size or max_shard_bytes) < 1:
        raise ValueError(f"shard_size / max_shard_bytes must be >= 1, got {shard_size or max_shard_bytes}")
    order = np.random.default_rng(seed).permutation(len(images))
    shards, current, used = [], [], 0
    for index in order:
        image = images[index]
        size = sample_bytes(image.key, image.ext, image.label, image.size)
        full = len(current) == shard_size if shard_size else archive_bytes(used + size) > max_shard_bytes
        if current and full:
            shards.append(current)
            current, used = [], 0
        current.append(image)
        used += size
    if current:
        shards.append(current)
    return [sorted(shard, key=lambda image: image.key) for shard in shards]


def remove_partial_shards(out: Path, split: str) -> list[Path]:
    """Temporary files a killed packing of ``split`` left in ``out``."""
    pattern = re.compile(rf"^\.{re.escape(split)}-(\d{{6}}\.tar|manifest\.json)\.\d+\.[0-9a-f]{{8}}\.tmp$")
    removed = [p for p in out.iterdir() if pattern.match(p.name) and p.is_file()]
    for path in removed:
        path.unlink()
    return removed


def _die_with_parent() -> None:
    """In each worker: Linux sends it SIGTERM when the packing process dies, even by
    SIGKILL. An orphaned worker would keep the output folder's lock (inherited on
    fork) and block the rerun that resumes the packing."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(1, signal.SIGTERM) != 0:  # 1: PR_SET_PDEATHSIG (linux/prctl.h)
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _write(out: Path, name: str, shard: list[SourceImage]) -> tuple[str, str, int]:
    sha256, size = write_shard(out / name, [(s.key, s.ext, s.path, s.label) for s in shard])
    return name, sha256, size


def _intact(out: Path, shard: ShardInfo) -> bool:
    path = out / shard.name
    return path.is_file() and path.stat().st_size == shard.bytes and file_sha256(path) == shard.sha256


def _refuse_other_packing(existing: Manifest, packing: dict) -> None:
    changed = sorted(k for k in packing.keys() | existing.packing.keys() if packing.get(k) != existing.packing.get(k))
    raise ShardError(
        f"{existing.path} belongs to a packing with other arguments or another source listing (differs in: "
        f"{', '.join(changed)}); rerun with the arguments it records under 'tool', or write to an empty folder"
    )


Progress = Callable[[int, int, int, int, str], None]  # (shards done, shards, images done, images, last shard)


def pack(
    root: str | Path,
    out: str | Path,
    split: str = "train",
    shard_size: int | None = None,
    max_shard_bytes: int | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: Progress | None = None,
) -> Manifest:
    """Pack ``root/<split>`` into ``out/<split>-NNNNNN.tar`` and ``out/<split>-manifest.json``;
    resumes an interrupted packing with the same arguments (see the module doc). One
    packing per ``out`` at a time: tools/pack_shards.py holds a lock there."""
    root, out = Path(root).resolve(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, classes = list_source(root, split)
    shards = plan_shards(images, seed, shard_size, max_shard_bytes)
    packing = dict(
        split=split,
        seed=seed,
        shard_size=shard_size,
        max_shard_bytes=max_shard_bytes,
        num_samples=len(images),
        listing_sha256=listing_sha256(images, root / split),
        packer_version=PACKER_VERSION,
    )
    tool = dict(name=PACKER, version=PACKER_VERSION, args=dict(packing, workers=workers, root=str(root), out=str(out)))
    tool["args"].pop("listing_sha256")
    tool["args"].pop("num_samples")
    existing = read_manifest(manifest_path(out, split)) if manifest_path(out, split).exists() else None
    if existing is not None and existing.packing != packing:
        _refuse_other_packing(existing, packing)
    remove_partial_shards(out, split)

    infos = [ShardInfo(shard_name(split, i), len(shard)) for i, shard in enumerate(shards)]
    manifest = Manifest(out, split, classes, infos, str(root), packing, tool, complete=False)
    written = {s.name: s for s in (existing.shards if existing else []) if s.sha256 is not None}
    with ProcessPoolExecutor(max(workers, 1), initializer=_die_with_parent) as pool:
        # Keep a shard only if the manifest in progress has its hash and the file matches it.
        claimed = [written[info.name] for info in infos if info.name in written]
        intact = pool.map(_intact, [out] * len(claimed), claimed)
        kept = {s.name: s for s, ok in zip(claimed, intact, strict=True) if ok}
        manifest.shards = [kept.get(info.name, info) for info in infos]
        write_manifest(manifest)
        index = {info.name: i for i, info in enumerate(infos)}
        done, images_done = len(kept), sum(s.num_samples for s in kept.values())
        if progress:
            progress(done, len(infos), images_done, len(images), "")
        jobs = [pool.submit(_write, out, info.name, shards[i]) for i, info in enumerate(infos) if info.name not in kept]
        for job in as_completed(jobs):  # the manifest records each shard as soon as it is complete
            name, sha256, size = job.result()
            i = index[name]
            manifest.shards[i] = replace(infos[i], sha256=sha256, bytes=size)
            write_manifest(manifest)
            done, images_done = done + 1, images_done + infos[i].num_samples
            if progress:
                progress(done, len(infos), images_done, len(images), name)
    manifest.complete = True
    write_manifest(manifest)
    return manifest


class ProgressLine:
    """``done/total shards, images, img/s, ETA`` on stderr: one line per shard into a
    log, one updated line on a terminal."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.start, self.first_images = time.monotonic(), None
        self.end = "\r" if stream.isatty() else "\n"

    def __call__(self, done: int, total: int, images: int, total_images: int, name: str) -> None:
        if self.first_images is None:  # kept shards do not count towards the rate
            self.first_images = images
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = (images - self.first_images) / elapsed
        left = (total_images - images) / rate if rate > 0 else float("nan")
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if np.isfinite(left) else "--:--:--"
        last = f" ({name})" if name else ""
        line = f"{done}/{total} shards, {images}/{total_images} images, {rate:.0f} img/s, ETA {eta}{last}"
        end = "\n" if done == total else self.end
        print(line, end=end, file=self.stream, flush=True)
