"""Auto-resume from a work dir as it is found after a crash, a kill, a move or a
copy: the newest intact checkpoint of *this* work dir, and no partial files.

mmengine resumes from whatever path ``work_dir/last_checkpoint`` holds: an empty
file ends in a traceback, a dangling one too, a truncated checkpoint fails to
load, a moved work dir points into a folder that no longer exists and a copied
one silently continues from the original's file.
"""

import logging
import re
import zipfile
from pathlib import Path

from mmengine.config import Config
from mmengine.logging import print_log

from .checkpoint import PARTIAL_FILE

# The names mmengine's CheckpointHook gives its checkpoints (published and best_* files are not resumable).
CHECKPOINT_NAME = re.compile(r"^(?P<kind>epoch|iter)_(?P<step>\d+)\.pth$")


class NoIntactCheckpointError(RuntimeError):
    """The work dir holds checkpoints, but none of them is complete."""


def _log(message: str, level: int = logging.INFO) -> None:
    print_log(message, logger="current", level=level)


def checkpoint_damage(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint written by ``torch.save``, or None
    when it is intact. Reads the file once: every record of torch's zip archive
    against its CRC-32 (a truncated file has lost the archive's directory, at its end)."""
    try:
        if path.stat().st_size == 0:
            return "it is empty"
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "it is a zip archive without torch's data.pkl record"
            bad = archive.testzip()
    except zipfile.BadZipFile as err:
        return f"it is not a complete zip archive ({err}): truncated, or not written by torch.save"
    except (OSError, EOFError, ValueError) as err:
        return f"it cannot be read ({err})"
    if bad is not None:
        return f"its record {bad} fails the CRC-32 check (damaged on disk)"
    return None


def _named_checkpoint(folder: Path) -> Path | None:
    """The file ``last_checkpoint`` points to, if ``folder`` has a file of that name.
    Only its base name counts: the path inside is absolute, written by the run that
    saved it, and names the original folder after a move or a copy."""
    pointer = folder / "last_checkpoint"
    if not pointer.is_file():
        return None
    text = pointer.read_text(errors="replace").strip()
    if not text:
        _log(f"{pointer} is empty (a kill while it was written?); looking for checkpoints", logging.WARNING)
        return None
    named = Path(text)
    if not (folder / named.name).is_file():
        _log(f"{pointer} names {text}, which is not a file in {folder}; looking for checkpoints", logging.WARNING)
        return None
    if named.is_absolute() and named.parent.resolve() != folder.resolve():
        _log(
            f"{pointer} names {text} of another folder (this work dir was moved or copied); "
            f"using this work dir's {named.name}",
            logging.WARNING,
        )
    return folder / named.name


def _newest_first(folder: Path) -> list[Path]:
    """Resume candidates, newest first: the file ``last_checkpoint`` names, then the
    older ones of its kind (epoch_N or iter_N) from the highest N down. Files with a
    higher N than the named one are left alone: they can be from an earlier run in
    the same work dir. Without a usable ``last_checkpoint``, every checkpoint by
    modification time."""
    checkpoints = [p for p in folder.iterdir() if CHECKPOINT_NAME.match(p.name) and p.is_file()]
    named = _named_checkpoint(folder)
    if named is None:
        return sorted(checkpoints, key=lambda p: p.stat().st_mtime, reverse=True)
    last = CHECKPOINT_NAME.match(named.name)
    older = []
    for path in checkpoints:
        match = CHECKPOINT_NAME.match(path.name)
        if last and match["kind"] == last["kind"] and int(match["step"]) < int(last["step"]):
            older.append((int(match["step"]), path))
    return [named] + [path for _, path in sorted(older, reverse=True)]


def find_resume_checkpoint(folder: str | Path) -> Path | None:
    """The newest intact checkpoint in ``folder`` (see :func:`checkpoint_damage`),
    or None when there is no checkpoint. A damaged one is skipped with a warning
    naming it and why, and so is the fallback to an older one. Raises
    :class:`NoIntactCheckpointError` when there are checkpoints but none is intact."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = _newest_first(folder)
    skipped = []
    for path in candidates:
        damage = checkpoint_damage(path)
        if damage is None:
            if skipped:
                _log(f"resuming from the older checkpoint {path} instead of {skipped[0]}", logging.WARNING)
            return path
        _log(f"skipping checkpoint {path}: {damage}", logging.WARNING)
        skipped.append(path)
    if skipped:
        raise NoIntactCheckpointError(
            f"{folder} holds checkpoints but none is intact ({', '.join(p.name for p in skipped)}; reasons "
            "above). Restore a good checkpoint there, pass --resume FILE, or start over with --no-resume."
        )
    return None


def remove_partial_files(folder: str | Path) -> list[Path]:
    """Removes the partial files that a process killed while writing leaves
    beside its target (``.<name>.<pid>.<hex>.tmp``, see ``atomic_write``) and returns
    them. Call it only while no other process writes into ``folder`` (tools/train.py
    holds the work dir's lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if PARTIAL_FILE.match(path.name) and path.is_file():
            path.unlink()
            removed.append(path)
            _log(f"removed {path}, a partial file of a process killed while writing", logging.WARNING)
    return removed


def checkpoint_folder(cfg: Config) -> Path:
    """Where the config's CheckpointHook writes: the work dir, or ``out_dir/<work dir name>``."""
    out_dir = cfg.get("default_hooks", {}).get("checkpoint", {}).get("out_dir")
    work_dir = Path(cfg.work_dir)
    return Path(out_dir) / work_dir.name if out_dir else work_dir


def choose_auto_resume(cfg: Config) -> None:
    """tools/train.py's auto-resume (``cfg.resume`` True and no ``load_from``): sets
    ``cfg.load_from`` to :func:`find_resume_checkpoint`'s choice, or ``cfg.resume``
    False when the work dir has no checkpoint, and logs it. An explicit checkpoint
    or ``--no-resume`` leaves the config as it is."""
    if not cfg.get("resume") or cfg.get("load_from"):
        return
    folder = checkpoint_folder(cfg)
    found = find_resume_checkpoint(folder)
    if found is None:
        cfg.resume = False
        _log(f"no checkpoint in {folder}: training from the start")
    else:
        cfg.load_from = str(found)
        _log(f"resuming from {found}")
