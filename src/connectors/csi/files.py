"""Write a volume's files where a `subPath` mount keeps seeing them.

Kubelet resolves a `subPath` once, when the container starts, and bind-mounts that one
inode into the container (the seed's Jobs mount `pip.conf` and `.pypirc` this way). A file
replaced by rename, or reached through a swapped `..data` symlink as Secret volumes do, is
a new inode such a container never sees: it would keep its first token and get 401s once
that expires. So the files are plain files at fixed paths, rewritten in place, and every
reader, with or without `subPath`, reads the same inode.

A rewrite never leaves the file missing or empty: the new text is written over the old in
one `pwrite`, padded with newlines to the old length when shorter, and only then
truncated, so a reader between the two steps sees the new text and blank lines, which every
configuration format here ignores. What in-place writing cannot give is a snapshot: a read
that overlaps the write itself (microseconds, once per token renewal) may see part of each
text, or the new text cut at the old length, and the client fails that once. Swapping
inodes would avoid that and never reach a `subPath` mount at all. A file that is new is
written beside its name and renamed into place. Files are mode 0444.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from connectors.api.errors import VolumeError
from connectors.csi import memoryfs

FILE_MODE = 0o444
DIR_MODE = 0o755
_NEW = ".new-"  # prefix of a file being created, never a rendered name


class UnsafeFilename(VolumeError, ValueError):
    """A file name that would land outside the volume or clash with the writer's own."""


def _check(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if "\0" in name or path.is_absolute() or not path.parts or ".." in path.parts:
        raise UnsafeFilename(f"file name {name!r} is not a plain relative path")
    if any(part.startswith(_NEW) for part in path.parts):
        raise UnsafeFilename(f"file name {name!r} clashes with the volume's own entries")
    return path


def check(files: dict[str, str]) -> None:
    """Refuse, before anything is written, a set of files that could not be written whole:
    unsafe names, a name that is also another's directory, more files or bytes than the
    volume's tmpfs holds (`memoryfs`)."""
    checked = [_check(name) for name in files]
    directories = {parent for path in checked for parent in path.parents}
    clashing = sorted(str(path) for path in checked if path in directories)
    if clashing:
        raise UnsafeFilename(f"{', '.join(clashing)} would be both a file and a directory")
    if len(checked) + len(directories) > memoryfs.MAX_INODES // 2:
        raise UnsafeFilename(f"{len(checked)} files are more than a volume holds")
    size = sum(len(text.encode()) for text in files.values())
    if size > memoryfs.SIZE_BYTES // 2:  # half: a rewrite may briefly need both
        raise UnsafeFilename(f"{size} bytes of files are more than a volume holds")


def write(target: Path, files: dict[str, str]) -> None:
    """Make `files` (relative name -> text) the contents of `target`, rewriting in place."""
    checked = {_check(name): text.encode() for name, text in files.items()}
    for relative, data in checked.items():
        path = target / relative
        for parent in reversed(relative.parents[:-1]):
            (target / parent).mkdir(mode=DIR_MODE, exist_ok=True)
        if path.is_file() and not path.is_symlink():
            _rewrite(path, data)
        else:
            _create(path, data)
    _remove_others(target, {target / relative for relative in checked})


def _rewrite(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        old_size = os.fstat(fd).st_size
        if os.pread(fd, old_size + 1, 0) == data:
            return  # unchanged: not even the modification time moves
        padded = data + b"\n" * max(0, old_size - len(data))
        written = os.pwrite(fd, padded, 0)
        while written < len(padded):
            written += os.pwrite(fd, padded[written:], written)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _create(path: Path, data: bytes) -> None:
    if path.is_symlink() or path.is_dir():
        _remove(path)
    staging = path.with_name(_NEW + path.name)
    staging.unlink(missing_ok=True)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        written = 0
        while written < len(data):  # a full tmpfs writes short before it says ENOSPC
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
    staging.rename(path)


def _remove_others(target: Path, wanted: set[Path]) -> None:
    """Remove every file and directory `files` no longer names (deepest first)."""
    keep_dirs = {parent for path in wanted for parent in path.parents}
    for root, dirs, names in os.walk(target, topdown=False):
        here = Path(root)
        for name in names:
            if here / name not in wanted:
                (here / name).unlink()
        for name in dirs:
            if here / name not in keep_dirs:
                _remove(here / name)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    for entry in path.iterdir():
        _remove(entry)
    path.rmdir()


def remove(target: Path) -> None:
    """Remove everything `write` made in `target`, and `target` itself."""
    if target.exists() or target.is_symlink():
        _remove(target)
