"""Each volume's target is a tmpfs of its own, so a token is held in memory and never
written to the node's disk (where it would outlive the Pod in backups and disk images).

The mount is made on the first publish and removed on unpublish. It is small and bounded
(`SIZE_BYTES`, `MAX_INODES`) since it holds a few rendered files, and it is `nosuid`,
`nodev`, `noexec`. Mounting needs CAP_SYS_ADMIN, which the driver's privileged container
has; without it publishing fails rather than falling back to the disk.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from connectors.api.errors import VolumeError

SIZE_BYTES = 4 * 1024 * 1024
MAX_INODES = 256
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x2, 0x4, 0x8
_MNT_DETACH = 0x2


class MountError(VolumeError, OSError):
    """The memory-backed mount could not be made or removed."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def is_memory_backed(target: Path) -> bool:
    """True when `target` is itself the mount point of a tmpfs."""
    wanted = os.fsencode(os.path.realpath(target))
    with open("/proc/self/mounts", "rb") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and _unescape(fields[1]) == wanted and fields[2] == b"tmpfs":
                return True
    return False


def mount(target: Path) -> None:
    """Mount a fresh, bounded tmpfs on `target` (created if need be), unless one is there."""
    target.mkdir(parents=True, exist_ok=True)
    if is_memory_backed(target):
        return
    options = f"size={SIZE_BYTES},nr_inodes={MAX_INODES},mode=0755".encode()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc().mount(b"tmpfs", os.fsencode(target), b"tmpfs", flags, options) != 0:
        code = ctypes.get_errno()
        raise MountError(code, f"cannot mount a tmpfs on {target}: {os.strerror(code)}")


def unmount(target: Path) -> None:
    """Detach the tmpfs on `target` if there is one; its contents are gone with it."""
    if not is_memory_backed(target):
        return
    if _libc().umount2(os.fsencode(target), _MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # already gone
            raise MountError(code, f"cannot unmount {target}: {os.strerror(code)}")


def _unescape(field: bytes) -> bytes:
    """/proc/self/mounts writes space, tab, newline and backslash as octal escapes."""
    for code in (b"\\040", b"\\011", b"\\012", b"\\134"):
        field = field.replace(code, bytes([int(code[1:], 8)]))
    return field
