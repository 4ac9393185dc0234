"""Where output files go and how they are made: shared by every job that writes one."""

from __future__ import annotations

import os
from pathlib import Path


def output_path(out: Path) -> Path:
    """The file to write for ``out``: a symbolic link is followed, so the file it points to
    is replaced and the link stays a link."""
    return out.resolve() if out.is_symlink() else out


def with_default_permissions(path: Path) -> None:
    """The permissions a new file gets by the process's umask (a temporary file is made
    readable by its owner alone)."""
    path.chmod(0o666 & ~_umask())


def _umask() -> int:
    try:  # Linux says it without changing it (os.umask can only set it, racing other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
