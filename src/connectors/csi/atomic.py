"""Write a volume's files so a reader never sees a missing, partial or mixed set.

Layout inside the target directory (the same idea as Kubernetes' own Secret volumes):

    target/..2026_11_28_02_30_00.123456/pip.conf   the files of one generation, mode 0444
    target/..data -> ..2026_11_28_02_30_00.123456  the current generation
    target/pip.conf -> ..data/pip.conf              what the workload opens

A new generation is written in full into a fresh directory, then `..data` is swapped to it
with one rename (atomic on POSIX). A reader that opened a file keeps the old contents; one
that opens it after the swap gets the new. The generation before is kept until the next
write: a reader that had just resolved `..data` to it when the swap happened still finds
its file (removing it at once loses that race, as a test with a busy reader showed).
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

DATA_LINK = "..data"
FILE_MODE = 0o444
DIR_MODE = 0o555


class UnsafeFilename(ValueError):
    """A file name that would land outside the volume or clash with the layout."""


def _check(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts):
        raise UnsafeFilename(f"file name {name!r} is not a plain relative path")
    if path.parts[0].startswith(".."):
        raise UnsafeFilename(f"file name {name!r} clashes with the volume's own entries")
    return path


def write(target: Path, files: dict[str, str]) -> None:
    """Make `files` (relative name -> text) the current contents of `target`."""
    checked = {_check(name): text for name, text in files.items()}
    target.mkdir(parents=True, exist_ok=True)
    previous = _current(target)
    previous_name = previous.name if previous is not None else ""
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    generation = target / stamp
    generation.mkdir(mode=0o700)
    for relative, text in checked.items():
        path = generation / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        path.chmod(FILE_MODE)
    for directory in sorted({p.parent for p in checked}, key=lambda p: -len(p.parts)):
        if directory.parts:
            (generation / directory).chmod(DIR_MODE)
    generation.chmod(DIR_MODE)

    swap = target / f"{DATA_LINK}_tmp"
    swap.unlink(missing_ok=True)
    swap.symlink_to(stamp)
    swap.rename(target / DATA_LINK)

    wanted = {relative.parts[0] for relative in checked}
    for entry in wanted:
        link = target / entry
        if not link.is_symlink():
            tmp = target / f"..{entry}_tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(f"{DATA_LINK}/{entry}")
            tmp.rename(link)
    for stale in target.iterdir():
        if not stale.name.startswith("..") and stale.name not in wanted and stale.is_symlink():
            stale.unlink()
    _remove_old_generations(target, keep={stamp, previous_name})


def _current(target: Path) -> Path | None:
    link = target / DATA_LINK
    return target / os.readlink(link) if link.is_symlink() else None


def _remove_old_generations(target: Path, keep: set[str]) -> None:
    for entry in target.iterdir():
        old = entry.name.startswith("..") and entry.name not in keep | {DATA_LINK}
        if old and entry.is_dir() and not entry.is_symlink():
            _remove(entry)


def _remove(path: Path) -> None:
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
    path.chmod(0o700)
    shutil.rmtree(path, ignore_errors=True)


def remove(target: Path) -> None:
    """Remove everything `write` made in `target`, and `target` itself."""
    if not target.exists() and not target.is_symlink():
        return
    for entry in list(target.iterdir()):
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
        elif entry.is_dir():
            _remove(entry)
    target.rmdir()
