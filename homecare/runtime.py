"""What every long-running command shares: settings at start, logging, signals, the GC,
and the child processes it starts.

Service commands (``homecare ingest``, ``detect``, ``escalate``, ``rollup run``…) live in
their own folders; these helpers are here, in the core, so that no service imports the
composition root (``cli/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import typer
from pydantic import ValidationError

from homecare.schema import seconds
from homecare.settings import Settings

__all__ = [
    "configure_logging",
    "load_settings",
    "moment",
    "sigterm_as_ctrl_c",
    "start_process",
    "stop_on_signals",
    "stop_process",
    "tune_gc_for_service",
]


def load_settings(*, servers: bool = False, influx: bool = False) -> Settings:
    """Settings from the environment; with ``servers``, both server URLs are required,
    with ``influx`` InfluxDB's (commands that only read or manage storage).

    Invalid settings stop the command with a clear message instead of a traceback.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        raise typer.BadParameter(f"invalid settings: {exc}") from exc
    if servers and (not settings.mqtt.url or not settings.influx.url):
        raise typer.BadParameter("set HOMECARE_MQTT__URL and HOMECARE_INFLUX__URL")
    if influx and not settings.influx.url:
        raise typer.BadParameter("set HOMECARE_INFLUX__URL")
    return settings


def moment(text: str, now: float) -> float:
    """A time option: ``now``, a span back from now (``36h``, ``7d``) or an ISO date/time (UTC
    unless it says otherwise).

    >>> moment("2d", 1_000_000.0), moment("1970-01-02", 0.0), moment("now", 5.0)
    (827200.0, 86400.0, 5.0)
    """
    if text == "now":
        return now
    try:
        return now - seconds(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use now, a span such as 7d, or an ISO date") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def configure_logging(level: str) -> None:
    """One line per record with time, level and logger, for a service's log."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per write is noise


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a graceful shutdown."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def tune_gc_for_service() -> None:
    """Tune the garbage collector for a process that allocates per message all day.

    The objects made at start-up are frozen out of collections, and young collections
    run less often: measured in ``homecare bench detect``, the detect service otherwise
    ran ~10k collections with pauses up to 197 ms in two minutes of 5,000 elders.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _as_ctrl_c(_signum: int, frame: FrameType | None) -> None:
    """Handle SIGTERM with whatever handles SIGINT now: Python's (``KeyboardInterrupt``) or
    ``asyncio.run``'s (cancel the main task first). Where SIGINT is ignored (a command
    started in the background by a script), SIGTERM still interrupts."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        _interrupt_when_it_ends(handler)
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def _interrupt_when_it_ends(handler: Callable[..., Any]) -> None:
    """Where ``handler`` is ``asyncio.run``'s (it cancels the main task), raise
    ``KeyboardInterrupt`` in the loop if that task ends without being cancelled.

    Python 3.11's ``asyncio.wait_for`` returns the result instead of the cancellation
    when what it awaits completes as the cancellation comes (fixed in 3.12): a SIGTERM
    that arrived with a NATS reply was lost and the command went on (seen once in 160
    SIGTERMs to ``homecare certify`` while it provisioned its broker). The main task is
    the one ``asyncio.run`` gives its handler (3.11 to 3.13); anything else: nothing."""
    task = getattr(handler, "keywords", {}).get("main_task")
    if isinstance(task, asyncio.Task) and not task.done():
        task.add_done_callback(_interrupt_unless_cancelled)


def _interrupt_unless_cancelled(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM stops the command exactly as Ctrl-C does.

    ``timeout``, ``docker stop``, systemd and CI stop a command with SIGTERM, whose default
    action ends the process at once: no ``with`` block or ``finally`` runs, so the servers
    and services it started outlive it, and its temporary folders stay. Taking Ctrl-C's
    path instead, every context manager stops what it started. A service that stops
    gracefully replaces this with :func:`stop_on_signals`. Outside the main thread (a
    command run by a test's ``CliRunner`` in a thread) signals cannot be handled: no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _as_ctrl_c)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _raising_interrupts_again(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


_REINTERRUPT_S = 0.01
"""How soon an interrupt that Python swallowed is delivered again."""


def _raising_interrupts_again(
    previous: Callable[[sys.UnraisableHookArgs], Any],
) -> Callable[[sys.UnraisableHookArgs], None]:
    """An unraisable hook that delivers a swallowed ``KeyboardInterrupt`` again.

    Python ignores (prints) an exception that a weakref callback or a ``__del__`` raises;
    a SIGTERM (or Ctrl-C) whose handler ran there was lost, and the command kept running
    (seen once in 160 SIGTERMs to ``homecare certify`` as it started). It is delivered
    again from a thread, after this hook has returned: raised in the hook, it would be
    swallowed too. Any other unraisable exception goes to ``previous``."""

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            threading.Timer(_REINTERRUPT_S, _sigterm_main_thread).start()
            return
        previous(unraisable)

    return hook


def _sigterm_main_thread() -> None:
    """SIGTERM to the main thread (waking a ``sleep`` or ``wait`` there), if it still takes
    Ctrl-C's path: once the block has ended, SIGTERM's default would end the process."""
    main = threading.main_thread().ident
    if main is not None and signal.getsignal(signal.SIGTERM) is _as_ctrl_c:
        signal.pthread_kill(main, signal.SIGTERM)


def start_process(args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **popen)``, but an interrupt (Ctrl-C, SIGTERM) that comes
    while the child starts stops it before the interrupt goes on.

    Raised between the child's ``exec`` and the caller's ``try``, it left the child running
    after its parent had gone: ``homecare bench ingest`` interrupted as its ingest started
    left that ingest behind (once in a CI run). Assign the result inside the ``try`` whose
    clean-up stops it: no interrupt is checked for between a return and an assignment."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        with _interrupts_deferred():
            proc = subprocess.Popen(args, **popen)
    except BaseException:
        if proc is not None:
            stop_process(proc)
        raise
    return proc


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that come within the block are delivered as it ends (to the
    handlers of before). Outside the main thread, where no handler can be set: nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    before = {
        sig: signal.signal(sig, lambda signum, _frame: pending.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in before.items():
            # None: a handler set outside Python, which cannot be put back; the default's
            # action is the nearest (Python sets none of its own for these two).
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def stop_process(proc: subprocess.Popen[Any] | BaseProcess, timeout_s: float = 15.0) -> None:
    """Stop a child process and reap it: SIGTERM (so it can save its state and say its last
    words), SIGKILL if it is still running after ``timeout_s``. Nothing if it has ended."""
    if isinstance(proc, subprocess.Popen):
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    if proc.pid is None or proc.exitcode is not None:  # never started, or already reaped
        return
    proc.terminate()
    proc.join(timeout_s)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
