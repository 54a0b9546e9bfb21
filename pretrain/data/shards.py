"""An ImageNet-layout split as webdataset tar shards: the file format, the
manifest beside the shards, and the checks of both.

A shard ``<split>-000000.tar`` holds, per sample, ``<key>.cls`` (the class
index as decimal text) followed by ``<key>.<ext>`` (the image file's original
bytes: ``jpg`` for .jpg/.jpeg files, otherwise the file's lower-case suffix
such as ``png``). Keys are the image's path below the split folder without its
suffix (``n01440764/n01440764_10026``), unique in the split and sorted within a
shard. Tar headers carry no time stamp or owner, so a shard's bytes follow from
its samples alone. Plain tar, readable by the ``webdataset`` package and timm.

``<split>-manifest.json`` lists the shards (name, samples, bytes, sha256), the
class list, the total and how the packing was made; ``complete`` is false while
``tools/pack_shards.py`` is still writing.
"""

import hashlib
import io
import json
import os
import secrets
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

MANIFEST_FORMAT = "sdae-imagenet-shards/1"
HASH_CHUNK = 1 << 20


class ShardError(RuntimeError):
    """A shard or manifest that is missing, incomplete or does not match."""


@dataclass(frozen=True)
class ShardInfo:
    """One shard as the manifest lists it (``sha256``/``bytes`` are None until written)."""

    name: str
    num_samples: int
    sha256: str | None = None
    bytes: int | None = None


@dataclass
class Manifest:
    """The contents of ``<split>-manifest.json``; shards lie in ``folder``."""

    folder: Path
    split: str
    classes: list[str]
    shards: list[ShardInfo]
    source_root: str
    packing: dict  # what decides the shards' contents (compared on a resumed packing)
    tool: dict  # the packing tool, its version and its arguments
    complete: bool = False

    @property
    def path(self) -> Path:
        return manifest_path(self.folder, self.split)

    @property
    def total(self) -> int:
        return sum(shard.num_samples for shard in self.shards)

    def shard_path(self, shard: ShardInfo) -> Path:
        return self.folder / shard.name

    def to_json(self) -> dict:
        return dict(
            format=MANIFEST_FORMAT,
            split=self.split,
            complete=self.complete,
            total=self.total,
            num_shards=len(self.shards),
            classes=self.classes,
            source_root=self.source_root,
            packing=self.packing,
            tool=self.tool,
            shards=[asdict(shard) for shard in self.shards],
        )


class ShardSample(NamedTuple):
    """One sample as stored: the image's bytes, its class index and where it is."""

    key: str
    ext: str
    data: bytes
    label: int
    shard: str

    @property
    def where(self) -> str:
        return f"{self.shard}:{self.key}.{self.ext}"


def manifest_path(folder: str | Path, split: str) -> Path:
    return Path(folder) / f"{split}-manifest.json"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def partial_name(name: str) -> str:
    """A temporary name beside ``name``; the same pattern as the checkpoint writer's
    partial files (``.<name>.<pid>.<hex>.tmp``)."""
    return f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp_path)`` a complete file beside ``path``, flush it to disk, then
    rename it to ``path``: ``path`` is never a partial file."""
    tmp = path.parent / partial_name(path.name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_manifest(manifest: Manifest) -> None:
    text = json.dumps(manifest.to_json(), indent=1) + "\n"
    replace_atomically(manifest.path, lambda tmp: tmp.write_text(text))


def read_manifest(path: str | Path) -> Manifest:
    """The manifest at ``path``, complete or not; an error names the file if it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        return Manifest(
            folder=path.parent,
            split=doc["split"],
            classes=list(doc["classes"]),
            shards=[ShardInfo(**shard) for shard in doc["shards"]],
            source_root=doc["source_root"],
            packing=doc["packing"],
            tool=doc["tool"],
            complete=bool(doc["complete"]),
        )
    except FileNotFoundError:
        raise ShardError(f"shard manifest {path} not found; write the shards with tools/pack_shards.py") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ShardError(f"{path} is not a shard manifest written by tools/pack_shards.py ({err})") from err


def load_manifest(path: str | Path) -> Manifest:
    """A complete manifest whose shards all exist with the listed size (a cheap
    check: ``verify_shard`` compares the contents)."""
    manifest = read_manifest(path)
    if not manifest.complete:
        raise ShardError(
            f"{manifest.path}: the packing did not finish; rerun the same tools/pack_shards.py command "
            "(it keeps the finished shards and writes the rest)"
        )
    for shard in manifest.shards:
        shard_file = manifest.shard_path(shard)
        size = shard_file.stat().st_size if shard_file.is_file() else None
        if size != shard.bytes:
            found = "is missing" if size is None else f"has {size} bytes"
            raise ShardError(
                f"shard {shard_file} {found}, the manifest {manifest.path} says {shard.bytes}; "
                "copy it again, or rerun tools/pack_shards.py"
            )
    return manifest


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_shard(manifest: Manifest, shard: ShardInfo) -> None:
    """Raise :class:`ShardError` naming the shard if its sha256 differs from the manifest's."""
    path = manifest.shard_path(shard)
    if not path.is_file():
        raise ShardError(f"shard {path} is missing (listed in {manifest.path})")
    actual = file_sha256(path)
    if actual != shard.sha256:
        raise ShardError(
            f"shard {path} is damaged: sha256 {actual}, the manifest {manifest.path} says {shard.sha256}; "
            "copy it again, or rerun tools/pack_shards.py"
        )


def image_extension(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return "jpg" if suffix in ("jpg", "jpeg") else suffix


def sample_key(relative: Path) -> str:
    """The key of the image at ``relative`` (below the split folder): its path
    without suffix, with dots in the file name made underscores (webdataset
    takes everything after a name's first dot as the extension)."""
    return (relative.parent / relative.stem.replace(".", "_")).as_posix()


def _member(name: str, size: int) -> tarfile.TarInfo:
    """A tar header without time stamp or owner: shard bytes depend on contents only."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def member_bytes(name: str, size: int) -> int:
    """Bytes a member takes in a shard: its header(s) and its data padded to 512."""
    header = len(_member(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    return header + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def sample_bytes(key: str, ext: str, label: int, size: int) -> int:
    return member_bytes(f"{key}.cls", len(str(label))) + member_bytes(f"{key}.{ext}", size)


def archive_bytes(members: int) -> int:
    """A shard's size from the sum of its members': the end-of-archive blocks, padded to a record."""
    total = members + 2 * tarfile.BLOCKSIZE
    return -(-total // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def write_shard(path: Path, samples: list[tuple[str, str, Path, int]]) -> tuple[str, int]:
    """Write ``(key, ext, image file, label)`` samples (sorted by key) to the shard
    ``path`` through a temporary file; returns its ``(sha256, bytes)``."""

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for key, ext, image, label in samples:
                text = str(label).encode()
                tar.addfile(_member(f"{key}.cls", len(text)), io.BytesIO(text))
                data = image.read_bytes()
                tar.addfile(_member(f"{key}.{ext}", len(data)), io.BytesIO(data))

    replace_atomically(path, write)
    return file_sha256(path), path.stat().st_size


def _label(shard: Path, member: tarfile.TarInfo, text: bytes, num_classes: int) -> int:
    try:
        label = int(text.decode("ascii"))
    except ValueError:
        label = -1
    if not 0 <= label < num_classes:
        raise ShardError(f"shard {shard}: {member.name} holds {text[:20]!r}, not a class index below {num_classes}")
    return label


def read_shard(path: Path, num_classes: int, start: int = 0, stop: int | None = None) -> Iterator[ShardSample]:
    """Samples ``start:stop`` of the shard at ``path``, in order. The members before
    ``start`` are skipped without reading their data. Anything but ``<key>.cls``
    followed by ``<key>.<ext>`` with increasing keys is an error naming the shard."""
    previous = ""
    index = 0
    try:
        with tarfile.open(path, "r:") as tar:
            members = iter(tar)
            for cls in members:
                if stop is not None and index >= stop:
                    return
                image = next(members, None)
                key = cls.name.removesuffix(".cls")
                image_key, _, ext = ("" if image is None else image.name).rpartition(".")
                if cls.name == key or image_key != key or ext in ("", "cls") or key <= previous:
                    found = cls.name if image is None else f"{cls.name}, {image.name}"
                    raise ShardError(
                        f"shard {path}: members {found} after key {previous!r} are not one sample's "
                        "<key>.cls and <key>.<image>, in key order; write it again with tools/pack_shards.py"
                    )
                previous = key
                if index >= start:
                    label = _label(path, cls, tar.extractfile(cls).read(), num_classes)
                    data = tar.extractfile(image).read()
                    if len(data) != image.size:
                        raise ShardError(f"shard {path}: {image.name} is truncated")
                    yield ShardSample(key, ext, data, label, path.name)
                index += 1
    except tarfile.TarError as err:
        raise ShardError(f"shard {path} cannot be read as a tar file ({err}); copy it again") from err
    if stop is not None and index < stop:
        raise ShardError(f"shard {path} holds {index} samples, fewer than {stop}; copy it again")


def shard_problems(manifest: Manifest, shard: ShardInfo) -> list[str]:
    """Everything wrong with one shard: missing, sha256 or size differing from the
    manifest, or members that are not the manifest's number of samples."""
    path = manifest.shard_path(shard)
    try:
        verify_shard(manifest, shard)
        count = sum(1 for _ in read_shard(path, len(manifest.classes)))
    except ShardError as err:
        return [str(err)]
    if count != shard.num_samples:
        return [f"shard {path} holds {count} samples, the manifest {manifest.path} says {shard.num_samples}"]
    return []
