"""What the workers of one host share: the host-meter lock, each worker's counts, the session state.

Layout, under ``<folder for this model and port>/``::

    host.lock                       # flock'd by the one host meter
    <session>/counts/<pid>-<t>.json # one worker's cumulative counts (atomic replace), its
                                    # pid and host; "final": true once it stopped counting
    <session>/state.json            # the serving run and the energy it already holds

The lock is an exclusive, non-blocking ``fcntl.flock`` held for the holder's
lifetime; the kernel releases it when the holder dies, however it dies, so
another worker can take over. JSON files are written to a temporary name and
renamed, so a reader never sees half a file.

Safety against other local users: every folder is created mode 0700 and must be
a real directory (not a symlink) owned by this user and writable by nobody else
(:func:`check_folder`); files are opened with ``O_NOFOLLOW`` and created 0600, so
a planted symlink can neither redirect a write, a truncation nor a deletion.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

from mlflow_green.serving.counting import Counts

_log = logging.getLogger(__name__)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UnsafeFolder(OSError):
    """A shared folder another user could tamper with (the message names it and why)."""


def check_folder(path: Path) -> None:
    """Raise :class:`UnsafeFolder` unless ``path`` is a real directory (not a symlink)
    owned by this user that neither group nor others may write to."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(f"{path} is not a real directory (a symlink or a file)")
    if info.st_uid != os.geteuid():
        raise UnsafeFolder(f"{path} is owned by uid {info.st_uid}, not by this user")
    if info.st_mode & 0o022:
        raise UnsafeFolder(f"{path} is writable by other users (mode {info.st_mode & 0o777:o})")


def check_parent(path: Path) -> None:
    """Raise :class:`UnsafeFolder` if another user could replace entries of folder ``path``:
    it must be owned by this user or root, and sticky if others may write to it (``/tmp``)."""
    info = os.stat(path)  # a symlink the user gave is theirs to give; its target is checked
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(f"{path} is not a directory")
    if info.st_uid not in (0, os.geteuid()):
        raise UnsafeFolder(f"{path} is owned by uid {info.st_uid}, not by this user")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise UnsafeFolder(f"{path} is writable by other users and not sticky")


def secure_folder(path: Path) -> Path:
    """Create ``path`` (mode 0700) if missing, then :func:`check_folder` it; returns it.

    The parent must already be safe: only the last component is created (no
    ``mkdir -p``, which would follow symlinks planted on the way).
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    check_folder(path)
    return path


def prepare(root: Path, key_folder: Path, folder: Path) -> None:
    """Create and check the shared folders of a serving session; raises :class:`UnsafeFolder`.

    ``root``'s parent must be safe (:func:`check_parent`); ``root``, ``key_folder``
    and ``folder`` (with its ``counts``) are made 0700 and checked.
    """
    # The parent is the temporary folder, or the user's MLFLOW_GREEN_SERVING_DIR (made if
    # missing: its path is the user's own choice).
    root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_parent(root.parent)
    for path in (root, key_folder, folder, folder / "counts"):
        secure_folder(path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename); ``path``'s folder
    must be a safe folder (:func:`check_folder`)."""
    check_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a left-over of this pid; a symlink is removed, never followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(data))
    os.replace(tmp, path)  # replaces the name itself, even a symlink, never its target


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in regular file ``path``; None when missing, a symlink or not an object."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        with os.fdopen(fd, "r") as src:
            fd = -1
            data = json.loads(src.read())
    except (OSError, ValueError):
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    return data if isinstance(data, dict) else None


class HostLock:
    """The host meter's lock: whoever holds it measures the machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it (never waits); True if this process holds it."""
        if self._fd is not None:
            return True
        import fcntl

        check_folder(self.path.parent)
        # O_NOFOLLOW: a symlink planted here must not make us truncate its target.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                raise UnsafeFolder(f"{self.path} is not a regular file of this user")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
        self._fd = fd
        return True

    def release(self) -> None:
        """Let another worker take over (closing the file drops the lock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class SessionFolder:
    """One serving session's shared files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts_dir = folder / "counts"
        self.state_path = folder / "state.json"
        # Unique per worker even when a pid comes back within the session.
        self._own = self.counts_dir / f"{os.getpid()}-{time.monotonic_ns()}.json"

    def publish(self, counts: Counts, token_method: str, final: bool = False) -> None:
        """Write this worker's cumulative counts; ``final`` once it counts no more."""
        data = {**counts.to_dict(), "token_method": token_method}
        secure_folder(self.counts_dir)  # only this last component is made; the rest checked
        record = {**data, "pid": os.getpid(), "host": this_host(), "final": final}
        write_json(self._own, record)

    def gone(self) -> bool:
        """Whether every server of this session is gone, so its folder may be cleaned up.

        Only a session judged on its own host: each of its counts files names this host
        and a pid that no longer runs here (a zombie counts as gone). A session with a
        live worker (two servers of one key: a port given by hand, two bind addresses),
        a file from another host (a folder shared over NFS), a file that names no host,
        or no worker on file yet (a server starting) is never gone.
        """
        state = self.state() or {}
        if state.get("host", this_host()) != this_host():
            return False
        try:
            paths = list(self.counts_dir.glob("*.json")) if self.counts_dir.is_dir() else []
        except OSError:
            return False
        if not paths:
            return False
        for path in paths:
            data = read_json(path)
            if data is None or data.get("host") != this_host():
                return False
            pid = data.get("pid")
            if not isinstance(pid, int) or pid <= 0 or alive(pid):
                return False
        return True

    def unfinished(self) -> list[int]:
        """Live workers whose counts are not final yet (their last requests may be missing)."""
        pids = []
        for path in self.counts_dir.glob("*.json") if self.counts_dir.is_dir() else []:
            data = read_json(path) or {}
            pid = data["pid"] if isinstance(data.get("pid"), int) else _pid_of(path)
            if not data.get("final") and pid and pid != os.getpid() and alive(pid):
                pids.append(pid)
        return pids

    def total(self) -> tuple[Counts, str]:
        """The counts of every worker of the session, summed, and a token-counting method."""
        total, methods = Counts(), set()
        try:
            paths = sorted(self.counts_dir.glob("*.json"))
        except OSError:
            paths = []
        for path in paths:
            data = read_json(path)
            if data is None:
                continue
            total.add(Counts.from_dict(data))
            if data.get("token_method") not in (None, "none"):
                methods.add(str(data["token_method"]))
        return total, "+".join(sorted(methods)) or "none"

    def state(self) -> dict[str, Any] | None:
        """The session's state (its serving run, energy already logged), if any."""
        return read_json(self.state_path)

    def save_state(self, state: dict[str, Any]) -> None:
        """Replace the session's state."""
        write_json(self.state_path, state)


def this_host() -> str:
    """This machine's name, recorded in the shared files: a session is judged only on its host."""
    return socket.gethostname()


def _pid_of(path: Path) -> int:
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        pass
    try:  # no /proc (macOS): a signal 0 says whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def older_sessions(key_folder: Path, current: Path) -> list[Path]:
    """Folders of the other sessions of the same model and port (some may still serve: see
    :meth:`SessionFolder.gone`); only safe ones (:func:`check_folder`): never a symlink or
    another user's folder."""
    try:
        check_folder(key_folder)
        names = sorted(os.listdir(key_folder))
    except OSError:
        return []
    out = []
    for name in names:
        path = key_folder / name
        try:
            check_folder(path)
        except OSError:
            continue
        if path != current:
            out.append(path)
    return out
