"""Files and directories that are either whole or absent: the one atomic-write helper of the suite.

A file is written beside its name and renamed over it (``write_atomic``); a directory is built as
a stage beside its name and swapped in (``install_dir``: the old one moved aside, the stage
renamed into place, the old one deleted). A process killed at any point leaves the previous
version or the new one, never a half-written one (checkpoints, bag metadata, caches, metrics).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (its entries), where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: str | bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename. ``fsync``: the
    bytes reach the disk before the rename (power-loss safety), then the directory entry."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_path(path.parent)


def install_dir(stage: str | os.PathLike, target: str | os.PathLike, overwrite: bool = True) -> None:
    """Rename the finished ``stage`` directory to ``target``; an existing target is moved aside
    first and deleted after (``overwrite``; else FileExistsError and the stage is removed)."""
    stage, target = Path(stage), Path(target)
    if target.exists():
        if not overwrite:
            shutil.rmtree(stage, ignore_errors=True)
            raise FileExistsError(f"{target} exists; pass --overwrite or choose a new --out")
        aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, aside)
        os.rename(stage, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(stage, target)
