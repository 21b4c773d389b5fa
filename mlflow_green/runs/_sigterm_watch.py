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
when the signal was read and after the wait, and the main thread ran no code
meanwhile (no CPU time; else the same frame and instruction): a thread that ran
code has handled the signal, so a program's own handler, set for a while, took it.
A program that takes the signal with its own handler, puts ours back and then
sleeps in one call for the whole grace, all before the watcher reads the signal,
gets it again: the one case left. Not started where a wakeup fd is set already
(asyncio's, trio's) or where there is no ``pthread_kill`` (Windows).

Around a fork, SIGTERM is blocked in the forking thread (a child's only thread): a
child caught by it before its at-fork handlers run would lose it (Python forgets
such signals), and it waits in the kernel instead. In the child, the inherited
write end then leads to ``/dev/null``: a child's signals never reach this watcher.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: How long the handler may take to begin before SIGTERM is sent to the main thread again.
GRACE_S = 1.0
#: At most this much CPU time of the main thread over :data:`GRACE_S` counts as asleep.
IDLE_CPU_S = 0.005

# Re-entrant, and a plain flag rather than an Event (whose lock is not): a second SIGTERM
# may run the handler again inside begin() itself.
_lock = threading.RLock()
_begun = False
_pipe: tuple[int, int] | None = None  # (read end, write end = the wakeup fd)
_parked: int | None = None  # a former write end, led to /dev/null: reused by the next pipe
_fork = threading.local()  # .mask: the forking thread's signal mask before the fork
_handler_mask: Any = None  # the main thread's signal mask before begin()


def start(stands_in: Callable[[], bool]) -> None:
    """Watch for SIGTERM (main thread only). ``stands_in()`` says whether the handler stands
    in for the default action now; nothing is sent unless it does."""
    global _pipe
    if _pipe is not None or not hasattr(signal, "pthread_kill"):
        return
    read, write = _new_pipe()
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread
        previous = None
    ours = previous == -1
    if previous not in (None, -1):  # another's (asyncio's, trio's): give it back, do without
        try:
            signal.set_wakeup_fd(previous, warn_on_full_buffer=False)
        except (ValueError, OSError):  # theirs is refused now (closed): ours stays, and watches
            ours, previous = True, -1
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
            _drop(write)
        os.close(read)


def _new_pipe() -> tuple[int, int]:
    """A pipe whose write end does not block; on the number of a parked former write end
    when there is one (a library that kept that number and gives it back gets a live one)."""
    global _parked
    read, write = os.pipe()
    os.set_blocking(write, False)  # the C-level handler must never block on it
    if _parked is not None:
        try:
            os.dup2(write, _parked, inheritable=False)
            os.close(write)
            write = _parked
        finally:
            _parked = None
    return read, write


def _drop(write: int) -> None:
    with contextlib.suppress(OSError):
        os.close(write)


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
    global _begun, _handler_mask
    if _pipe is None:
        return
    with _lock:
        _begun = True
    with contextlib.suppress(ValueError, OSError):
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        if _handler_mask is None:  # a second SIGTERM in here: the first one's mask stands
            _handler_mask = mask


def leave() -> None:
    """After :func:`begin`: this thread's signal mask as it was (a pending SIGTERM then takes
    the process), and the watcher on duty again should the process go on."""
    global _begun, _handler_mask
    mask, _handler_mask = _handler_mask, None
    _unblock_unless_in(mask)
    _begun = False


def _watch(read: int, stands_in: Callable[[], bool], main: int | None) -> None:
    try:
        while data := os.read(read, 512):
            if signal.SIGTERM not in data or not stands_in() or main is None:
                continue
            before = _main_at(main)
            deadline = time.monotonic() + GRACE_S
            while not _begun and time.monotonic() < deadline:
                time.sleep(0.05)  # polls the handler's flag, which a signal may set any time
            with _lock:
                # Ours was the handler when the signal was read and still is; it has not
                # begun; and the main thread ran nothing meanwhile (had it run, it would
                # have handled the signal: another handler took it, for a while).
                if not _begun and stands_in() and _idle(before, _main_at(main)):
                    signal.pthread_kill(main, signal.SIGTERM)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(read)


def _main_at(main: int) -> tuple[float | None, Any, int]:
    """Where the main thread is: its CPU time in seconds (where the platform tells it),
    its innermost frame and instruction."""
    cpu_s = None
    with contextlib.suppress(AttributeError, OSError, OverflowError):
        cpu_s = time.clock_gettime(time.pthread_getcpuclockid(main))
    frame = sys._current_frames().get(main)
    return cpu_s, frame, -1 if frame is None else frame.f_lasti


def _idle(before: tuple[float | None, Any, int], after: tuple[float | None, Any, int]) -> bool:
    """Whether the main thread ran no code between the two: no CPU time (a thread asleep in
    a call uses none), else the same frame at the same instruction."""
    if before[0] is not None and after[0] is not None:
        return after[0] - before[0] < IDLE_CPU_S
    return before[1:] == after[1:] and before[1] is not None


def _unblock_unless_in(mask: Any) -> None:
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
        _drop(write)
        return
    global _parked
    if _lead_nowhere(write) and _parked is None:
        _parked = write


def _lead_nowhere(write: int) -> bool:
    """Point the number ``write`` at ``/dev/null`` (non-blocking, as a wakeup fd must be)."""
    try:
        nowhere = os.open(os.devnull, os.O_WRONLY | os.O_NONBLOCK)
        os.dup2(nowhere, write, inheritable=False)
        os.close(nowhere)
    except OSError:
        return False
    return True


def _before_fork() -> None:
    _fork.mask = None
    if _pipe is not None:
        with contextlib.suppress(ValueError, OSError):
            _fork.mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _after_fork_in_parent() -> None:
    mask, _fork.mask = getattr(_fork, "mask", None), None
    _unblock_unless_in(mask)


def _after_fork_in_child() -> None:
    # The watcher does not exist in a child; the lock may have been held at the fork.
    global _pipe, _lock, _begun, _handler_mask, _parked
    _lock, _begun, _handler_mask, _parked = threading.RLock(), False, None, None
    if _pipe is not None:  # this child's signals must never reach the parent's watcher
        read, write = _pipe
        _pipe = None
        with contextlib.suppress(OSError):
            os.close(read)
        _close_write_end(write)  # closed, or led to /dev/null (SIGTERM is blocked until then)
    _after_fork_in_parent()  # the mask as before the fork: a SIGTERM sent meanwhile lands


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
