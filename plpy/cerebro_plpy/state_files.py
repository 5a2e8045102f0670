"""Where committed model states live: one immutable file per state, in the server's data directory.

A state of hundreds of MB written into a ``bytea`` column costs TOAST about 135,000 chunk tuples and as much
WAL (resnet50: 2 s a hop); written to a file it is one write and one fsync. SQL still decides and records:
``model_states.state_file`` names each config's file, committed in the hop's transaction, and
``cerebro_db/sql/10_unit/30_state_files.sql`` decides which files are garbage. This module only does the I/O.

Crash safety: a file and its directory entry are on disk (fsync) before the transaction that names it
commits, and no file changes after it is written, so a committed name always has its whole file. A file no
committed row names is garbage once its writer is no longer in progress (its transaction id is in its name).
Backends run in the data directory, so the paths here are relative to it (and so inside it).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import shutil
from collections.abc import Iterable, Sequence

ROOT = "cerebro_states"
#: ``cerebro_states/<database oid>``: each database of a cluster has its own.
DIRECTORY = re.compile(ROOT + r"/[0-9]+")
#: ``c<config id>-x<writer's transaction id>.state``, unique per (config, transaction); ``.staged``: a second
#: name a clone takes before it has a config id of its own.
NAME = re.compile(r"c[0-9]{1,10}-x[0-9]{1,18}\.(state|staged)")  # (ids that fit int4 and int8)


class StateFileError(ValueError):
    """A state file's path that is not one of ours, or a committed state whose file is gone."""


def _path(directory: str, name: str) -> str:
    # The SQL wrappers are system-only; this keeps even a mistaken caller inside the state directory.
    if not DIRECTORY.fullmatch(directory):
        raise StateFileError(f"{directory!r} is not a state directory (cerebro_states/<database oid>)")
    if not NAME.fullmatch(name):
        raise StateFileError(f"{name!r} is not a state file name (c<config>-x<transaction>.state or .staged)")
    return os.path.join(directory, name)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_directory(directory: str) -> None:
    """``directory`` and its parent, each made durable in its own parent: also when another backend made it, which
    may not have fsynced its parent yet (or died before it did)."""
    for made, parent in ((os.path.dirname(directory), "."), (directory, os.path.dirname(directory))):
        with contextlib.suppress(FileExistsError):
            os.mkdir(made, 0o700)
        _fsync_directory(parent)


def write(directory: str, name: str, buffers: Sequence[bytes | memoryview]) -> int:
    """Write ``buffers`` (a state's encoding in pieces) as ``name``, durably; returns its size in bytes.
    A file of this name from an earlier, rolled-back attempt of the same transaction is replaced, never
    truncated: it may have another name too (link)."""
    path = _path(directory, name)
    _make_directory(directory)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    size = 0
    try:
        for buffer in buffers:
            view = memoryview(buffer).cast("B")
            while view:  # a write may take less than asked (above 2 GiB on Linux)
                written = os.write(fd, view)
                view = view[written:]
                size += written
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_directory(directory)
    return size


def read(directory: str, name: str) -> mmap.mmap | bytes | None:
    """The state ``name`` as a read-only map (its pages come straight from the page cache: no copy), or None
    if the file is gone (a reader with an older snapshot than the sweep that removed it: read the row again)."""
    try:
        fd = os.open(_path(directory, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        # An open file outlives its unlinking: the map stays valid if a sweep removes the name meanwhile.
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else b""
    finally:
        os.close(fd)


def link(directory: str, source: str, target: str) -> bool:
    """``target`` as a second name of ``source``'s file (a clone's own copy, without copying); False if
    ``source`` is gone. Files never change, so sharing one is safe, and each name is swept on its own."""
    source_path, target_path = _path(directory, source), _path(directory, target)
    try:
        os.link(source_path, target_path)
    except FileNotFoundError:
        return False
    except FileExistsError:  # an earlier, rolled-back attempt of the same transaction
        os.unlink(target_path)
        os.link(source_path, target_path)
    _fsync_directory(directory)
    return True


def rename(directory: str, source: str, target: str) -> None:
    """Give the file ``source`` (this transaction's, named by no row yet) the name ``target``, durably."""
    os.rename(_path(directory, source), _path(directory, target))
    _fsync_directory(directory)


def names(directory: str) -> list[str]:
    """The state files in ``directory`` (none if it does not exist yet)."""
    _path(directory, "c0-x0.state")  # checks the directory
    try:
        return sorted(entry for entry in os.listdir(directory) if NAME.fullmatch(entry))
    except FileNotFoundError:
        return []


def delete_other_databases(live: Iterable[int]) -> list[str]:
    """Remove the state directories of the databases not in ``live`` (dropped ones: DROP DATABASE knows nothing of
    them); returns what it removed."""
    keep = {str(oid) for oid in live}
    try:
        entries = os.listdir(ROOT)
    except FileNotFoundError:
        return []
    removed = [entry for entry in sorted(entries) if entry.isdigit() and entry not in keep]
    for entry in removed:
        shutil.rmtree(os.path.join(ROOT, entry), ignore_errors=True)
    return removed


def delete(directory: str, garbage: Iterable[str]) -> int:
    """Remove the files ``garbage`` names; one already gone (another sweep's) is not an error. Returns how many
    this call removed."""
    removed = 0
    for name in garbage:
        try:
            os.unlink(_path(directory, name))
        except FileNotFoundError:
            continue
        removed += 1
    return removed
