"""A SIGTERM that Python holds back still takes the process down.

Python runs a signal handler in the main thread, at a check between two bytecodes.
A main thread asleep in a call that no check interrupts (``signal.pause()``, the
idiom of a program that starts its threads and waits) sleeps on when the signal
reaches it just before the call, or reaches another thread: the kernel alone
would have killed the process, but with the handler of
:mod:`~mlflow_green.runs.signals` standing in for the default action the process
would live on. So while that handler stands in, the signal module also writes each
signal's number to a pipe (``signal.set_wakeup_fd``), and a thread watching it sends
SIGTERM again to the main thread (``pthread_kill``, which ends such a wait) when the
handler has not begun within :data:`GRACE_S`, provided ours was the handler both
when the signal was read and after the wait (a program's own handler, set for a
while, may have taken it). Not started where a wakeup fd is set already (asyncio's,
trio's) or where there is no ``pthread_kill`` (Windows).

Around a fork, SIGTERM is blocked in the forking thread (a child's only thread): a
child caught by it before its at-fork handlers run would lose it (Python forgets
such signals), and it waits in the kernel instead. In the child, the inherited
write end then leads to ``/dev/null``: a child's signals never reach this watcher.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable

#: How long the handler may take to begin before SIGTERM is sent to the main thread again.
GRACE_S = 1.0

_lock = threading.Lock()
_begun = threading.Event()
_pipe: tuple[int, int] | None = None  # (read end, write end = the wakeup fd)
_saved = threading.local()  # .mask: the thread's signal mask before we blocked SIGTERM


def start(stands_in: Callable[[], bool]) -> None:
    """Watch for SIGTERM (main thread only). ``stands_in()`` says whether the handler stands
    in for the default action now; nothing is sent unless it does."""
    global _pipe
    if _pipe is not None or not hasattr(signal, "pthread_kill"):
        return
    read, write = os.pipe()
    try:
        os.set_blocking(write, False)  # the C-level handler must never block on it
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread
        previous = None
    ours = previous == -1
    if previous not in (None, -1):  # another's (asyncio's, trio's): give it back, do without
        try:
            signal.set_wakeup_fd(previous, warn_on_full_buffer=False)
        except (ValueError, OSError):
            ours = True  # still ours: closed below as a wakeup fd
            previous = -1
    try:
        if previous != -1:
            raise OSError("no wakeup fd of our own")
        thread = threading.Thread(
            target=_watch,
            args=(read, stands_in, threading.main_thread().ident),
            name="mlflow-green-sigterm",
            daemon=True,
        )
        _pipe = (read, write)
        thread.start()
    except (OSError, RuntimeError):  # no wakeup fd, or no more threads
        _pipe = None
        if ours:
            _close_write_end(write)
        else:  # never a wakeup fd, or not any more, and no one else knows its number
            os.close(write)
        os.close(read)


def stop() -> None:
    """Stop watching (main thread only): the watcher reads the end of the pipe and leaves."""
    global _pipe
    if _pipe is not None:
        write, _pipe = _pipe[1], None
        _close_write_end(write)


def begin() -> None:
    """The handler has begun, in the main thread: nothing is sent again from now on. SIGTERM
    is blocked in this thread until :func:`leave`, so that a signal the watcher sent just
    before cannot land once the action is the default one; a SIGTERM from outside still
    kills at once, through any other thread."""
    if _pipe is None:
        return
    with _lock:
        _begun.set()
    _block_here()


def leave() -> None:
    """After :func:`begin`: this thread's signal mask as it was (a pending SIGTERM then takes
    the process), and the watcher on duty again should the process go on."""
    _restore_here()
    _begun.clear()


def _watch(read: int, stands_in: Callable[[], bool], main: int | None) -> None:
    try:
        while data := os.read(read, 512):
            if signal.SIGTERM not in data or not stands_in() or _begun.wait(GRACE_S):
                continue
            with _lock:
                if not _begun.is_set() and stands_in() and main is not None:
                    signal.pthread_kill(main, signal.SIGTERM)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(read)


def _block_here() -> None:
    with contextlib.suppress(ValueError, OSError):
        _saved.mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _restore_here() -> None:
    mask = getattr(_saved, "mask", None)
    _saved.mask = None
    if mask is not None and signal.SIGTERM not in mask:  # the program's own block stays
        with contextlib.suppress(ValueError, OSError):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _close_write_end(write: int) -> None:
    """Take ``write`` off as the wakeup fd, and close it; where it cannot be taken off or is
    another's wakeup fd now (one that may give ours back later), it is kept open, leading to
    ``/dev/null``: a closed number could be reused by a file that signal numbers then reach."""
    try:
        current = signal.set_wakeup_fd(-1)
        if current != write:  # another's since: leave theirs in place
            signal.set_wakeup_fd(current, warn_on_full_buffer=False)
        closable = current == write
    except (ValueError, OSError):
        closable = False
    if closable:
        with contextlib.suppress(OSError):
            os.close(write)
        return
    with contextlib.suppress(OSError):
        nowhere = os.open(os.devnull, os.O_WRONLY | os.O_NONBLOCK)
        os.dup2(nowhere, write, inheritable=False)
        os.close(nowhere)


def _before_fork() -> None:
    if _pipe is not None:
        _block_here()


def _after_fork_in_child() -> None:
    # The watcher does not exist in a child; the locks may have been held at the fork.
    global _pipe, _lock, _begun
    _lock, _begun = threading.Lock(), threading.Event()
    if _pipe is not None:
        read, write = _pipe
        _pipe = None
        with contextlib.suppress(OSError):
            os.close(read)
        with contextlib.suppress(OSError):  # first of all, this child's signals go nowhere
            nowhere = os.open(os.devnull, os.O_WRONLY | os.O_NONBLOCK)
            os.dup2(nowhere, write, inheritable=False)
            os.close(nowhere)
        _close_write_end(write)
    _restore_here()  # a SIGTERM sent meanwhile is handled now


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_restore_here,
        after_in_child=_after_fork_in_child,
    )
