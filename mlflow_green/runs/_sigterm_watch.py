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
handler has not begun within :data:`GRACE_S`. Not started where a wakeup fd is set
already (asyncio's) or where there is no ``pthread_kill`` (Windows).
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


def start(stands_in: Callable[[], bool]) -> None:
    """Watch for SIGTERM (main thread only). ``stands_in()`` says whether the handler still
    stands in for the default action; nothing is sent again once it does not."""
    global _pipe
    if _pipe is not None or not hasattr(signal, "pthread_kill"):
        return
    read, write = os.pipe()
    os.set_blocking(write, False)  # the C-level handler must never block on it
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread
        previous = None
    if previous != -1:
        if previous is not None:  # another's (asyncio's): give it back, and do without
            signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        return
    _pipe = (read, write)
    main = threading.main_thread().ident
    threading.Thread(
        target=_watch, args=(read, stands_in, main), name="mlflow-green-sigterm", daemon=True
    ).start()


def stop() -> None:
    """Stop watching (main thread only); the wakeup fd goes back to none if still ours."""
    global _pipe
    if _pipe is None or not _release(_pipe[1]):
        return
    write = _pipe[1]
    _pipe = None
    os.close(write)  # the watcher reads the end of the pipe, closes its end and returns


def begin() -> None:
    """The handler has begun, in the main thread: nothing is sent again from now on. SIGTERM
    is blocked in this thread until :func:`leave`, so that a signal the watcher sent just
    before cannot land once the action is the default one; a SIGTERM from outside still
    kills at once, through any other thread."""
    if _pipe is None:
        return
    with _lock:
        _begun.set()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def leave() -> None:
    """Unblock SIGTERM in this thread (after :func:`begin`): a pending one now takes the
    process with the default action."""
    if _begun.is_set():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _watch(read: int, stands_in: Callable[[], bool], main: int | None) -> None:
    try:
        while data := os.read(read, 512):
            if signal.SIGTERM not in data or _begun.wait(GRACE_S):
                continue
            with _lock:
                if not _begun.is_set() and stands_in() and main is not None:
                    signal.pthread_kill(main, signal.SIGTERM)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(read)


def _release(write: int) -> bool:
    """Take ``write`` off as the wakeup fd; True when it no longer is one, so it may be
    closed (closing it while the signal module writes to it would send signal numbers
    into whatever file reuses its number)."""
    try:
        current = signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        return False
    if current != write:  # another's since: leave theirs in place
        signal.set_wakeup_fd(current)
    return True


_hidden_for_fork = False
_blocked_for_fork = False


def _before_fork() -> None:
    # A SIGTERM that reaches the child before its at-fork handlers run would be lost: Python
    # forgets the signals a child caught before then, and the default action that would
    # have killed it is ours to stand in for. Blocked in the forking thread (the child's
    # only one) until the child's handler below, it waits in the kernel instead.
    global _hidden_for_fork, _blocked_for_fork
    if _pipe is None:
        return
    with contextlib.suppress(ValueError, OSError):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _blocked_for_fork = True
    # The child is also born without the wakeup fd where it can be (a fork from the main
    # thread): its signals must never reach this process's watcher.
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        return
    if current == _pipe[1]:
        _hidden_for_fork = True
    else:  # another's since: leave theirs in place
        signal.set_wakeup_fd(current)


def _after_fork_in_parent() -> None:
    global _hidden_for_fork
    if _hidden_for_fork and _pipe is not None:
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(_pipe[1], warn_on_full_buffer=False)
    _hidden_for_fork = False
    _unblock_after_fork()


def _unblock_after_fork() -> None:
    global _blocked_for_fork
    if _blocked_for_fork:
        _blocked_for_fork = False
        with contextlib.suppress(ValueError, OSError):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _after_fork_in_child() -> None:
    # The watcher does not exist in a child, and the child's signals must never reach the
    # parent's watcher (it would stop the parent): the child's copy of the write end now
    # leads nowhere, whether or not the child can take it off as its wakeup fd.
    global _pipe, _hidden_for_fork
    if _pipe is None:
        return
    try:
        _forget_in_child(*_pipe)
    finally:
        _pipe, _hidden_for_fork = None, False
        _unblock_after_fork()  # a SIGTERM sent meanwhile is handled now


def _forget_in_child(read: int, write: int) -> None:
    _begun.clear()
    with contextlib.suppress(OSError):
        os.close(read)
    with contextlib.suppress(OSError):
        nowhere = os.open(os.devnull, os.O_WRONLY)
        os.dup2(nowhere, write, inheritable=False)
        os.close(nowhere)
    if _release(write):
        with contextlib.suppress(OSError):
            os.close(write)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
