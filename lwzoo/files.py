"""Safe writes on disk: atomic files and folders, checks before writing, stale temp clean-up, run locks.

Every lwzoo writer goes through these, so a crash or a kill at any moment leaves either the old file
or the new one, never half of one, and a second process never writes into a run folder in use.
Temporary names are ``.<name>.tmp<pid>`` (files) and ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>``
(folders), so the pid says whose they are and :func:`remove_stale_temps` can tell a dead writer's.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

from .errors import LwzooError

_TEMP = re.compile(r"^\..+\.(?:tmp|tmp-|old-)(\d+)$")


def temp_name(path: Path) -> Path:
    """The temporary sibling a write of ``path`` goes through."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def public_mode(path: Path) -> None:
    """Give ``path`` the permissions a plain ``open()`` would (0666 less the umask). Some writers, such as
    safetensors, create files 0600, which leaves an export that other users of a shared machine cannot load."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    dst = Path(dst)
    tmp = temp_name(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(tmp: str | Path, dest: str | Path) -> None:
    """Move a finished folder ``tmp`` to ``dest``, replacing what was there only once ``tmp`` is complete:
    the old folder is renamed aside, the new one renamed in, the old one removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def check_writable_dir(path: str | Path, what: str, option: str = "--out") -> Path:
    """Raise LwzooError unless the folder ``path`` exists and is writable, or can be created.

    Catches, before any work is done, an ``--out`` under a regular file, under a read-only or virtual file
    system (/proc), or where permission is missing; returns ``path``.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise LwzooError(f"{option} '{path}' is a file, not a folder; choose a folder for the {what}")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LwzooError(f"cannot create '{path}': '{ancestor}' is a file; choose another {option} for the {what}")
    probe = ancestor / f".lwzoo-write-test.tmp{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise LwzooError(
            f"cannot write the {what} under '{ancestor}' ({e.strerror or type(e).__name__}); choose another {option}"
        ) from None
    return path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | Path, of: str | None = None) -> list[Path]:
    """Clean up after writers killed mid-write (kill -9, power loss) in ``folder``: delete the temp files and
    folders named by lwzoo's temp pattern whose pid is no longer running (only those of the entry ``of``,
    when given, so a user's own folder is left alone). A folder set aside by :func:`replace_dir` whose
    replacement never arrived is renamed back: it is the last good copy. Returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMP.match(entry.name)
        if m is None or _alive(int(m.group(1))):
            continue
        name = entry.name[1:].rsplit(".", 1)[0]
        if of is not None and name != of:
            continue
        original = folder / name
        if ".old-" in entry.name and not original.exists():
            os.replace(entry, original)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


class RunLock:
    """An exclusive lock on a run folder for as long as one process trains into it.

    It is an OS file lock (``flock``) on ``<folder>/.lock``: the kernel releases it when the process exits
    or is killed, so a crashed run never leaves a folder locked. The file records who holds it, for the
    message the second process prints.
    """

    NAME = ".lock"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / self.NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LwzooError(
                f"run folder '{self.folder}' is in use by another lwzoo process ({holder}); wait for it to "
                "finish or stop it, or choose another --out"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
