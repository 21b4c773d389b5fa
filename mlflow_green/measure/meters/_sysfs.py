"""Reading small kernel attribute files (sysfs, procfs) without ever blocking.

``Path.read_text`` opens whatever it is given: a FIFO blocks in ``open`` until
a writer appears (forever, inside ``start_run``), a character device such as
``/dev/zero`` never reaches end of file, and a device's ``open`` may have side
effects. A kernel attribute is always a regular file of at most one page, so
anything else is refused before it is opened, and the file is opened
non-blocking and checked again, in case it was swapped in between.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: A sysfs attribute holds at most one page; a counter's value is a few dozen bytes.
MAX_ATTRIBUTE_BYTES = 4096

# O_NONBLOCK: a FIFO swapped in after the stat opens at once instead of waiting for a
# writer. O_NOCTTY: a terminal never becomes our controlling terminal. Both are POSIX;
# elsewhere (Windows, which has no powercap) they are 0.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotARegularFile(OSError):
    """An attribute path that is not a regular file (a FIFO, a directory, a device...).

    ``path`` is the path as given, ``kind`` says what it is, e.g. ``"a FIFO (named pipe)"``.
    """

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.path = path
        self.kind = kind


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_attribute(path: str | os.PathLike[str]) -> str:
    """The text of a kernel attribute file, read without blocking.

    Raises :class:`NotARegularFile` (an ``OSError``) when ``path`` is anything but a
    regular file, without opening it; other ``OSError`` as ``open`` and ``read`` do
    (``PermissionError``, ``FileNotFoundError``...). Reads at most
    :data:`MAX_ATTRIBUTE_BYTES`.
    """
    path = Path(path)
    # stat follows symlinks (sysfs is full of them) and never opens the file.
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(path, _kind(mode))
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # swapped between the stat and the open
            raise NotARegularFile(path, _kind(mode))
        data = os.read(fd, MAX_ATTRIBUTE_BYTES)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")
