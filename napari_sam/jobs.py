"""Background jobs for the widgets: every model call runs in a napari `thread_worker`, on
samscope's own thread pool.

A job function never raises into Qt: exceptions become a `Failure` result, shown with
`show_error` (a clear message, no traceback dialog). Results that arrive after the widget
or its layers are gone, or after the job was cancelled, are dropped.

Why an own pool: a worker's own `start()` queues it on `QThreadPool.globalInstance()`, the
pool that Qt 5's raster engine also splits large image conversions into. With every thread of
that pool taken by a job waiting for the GIL, a repaint that holds the GIL waits for its
conversion tasks forever (a deadlock seen on a loaded 2-core machine). Jobs run on
`job_pool()` instead, so Qt's global pool stays free.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, WorkerBase, thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QCoreApplication, QThreadPool

from sam_core.errors import SamscopeError


@dataclass(frozen=True)
class Failure:
    """What went wrong in a job, as a message for the user."""

    message: str


def describe(exc: BaseException) -> str:
    """One line for the user: our own errors as they are, others with their type."""
    if isinstance(exc, SamscopeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


_POOL: QThreadPool | None = None
_RUNNING: set[WorkerBase] = set()


def job_pool() -> QThreadPool:
    """samscope's own thread pool (created on first use, a child of the running
    QApplication when there is one); as many threads as Qt's ideal thread count."""
    global _POOL
    if _POOL is None:
        _POOL = QThreadPool(QCoreApplication.instance())
        _POOL.destroyed.connect(_forget_pool)
    return _POOL


def _forget_pool(*_: Any) -> None:
    global _POOL
    _POOL = None


def wait_for_jobs(msecs: int = -1) -> bool:
    """Block until every running job has finished (at most `msecs` ms, -1: no limit);
    True when none is left. Results still go to their callbacks through the event loop."""
    return _POOL is None or _POOL.waitForDone(msecs)


def _start(worker: WorkerBase) -> None:
    """Start `worker` on `job_pool()`, never on Qt's global pool. A reference is kept
    until it finishes, so a job whose caller dropped it still runs to its end."""
    if worker in _RUNNING:
        raise RuntimeError("this job was already started")
    _RUNNING.add(worker)
    worker.finished.connect(lambda: _RUNNING.discard(worker))
    job_pool().start(worker)


def _if_alive(callback: Callable[..., None]) -> Callable[..., None]:
    """Call `callback`, ignoring the error Qt bindings raise when its widget was deleted
    (the viewer was closed while the job ran): the result is simply dropped."""

    def call(*args: Any) -> None:
        try:
            callback(*args)
        except RuntimeError as exc:
            if "has been deleted" not in str(exc):
                raise

    return call


def start_function_job(
    func: Callable[[], Any], on_done: Callable[[Any], None], what: str
) -> FunctionWorker:
    """Run func() in a worker thread; on_done(result or Failure) runs in the GUI thread.
    After `worker.quit()` the worker drops func's result (Qt never emits it), and on_done
    gets None once the job has ended (func may stop early by checking abort_requested)."""

    def guarded() -> Any:
        try:
            return func()
        except Exception as exc:  # reported to the user by on_done
            return Failure(f"{what} failed: {describe(exc)}")

    worker = thread_worker(guarded, start_thread=False)()
    worker.returned.connect(_if_alive(on_done))
    worker.finished.connect(_if_alive(lambda: on_done(None) if worker.abort_requested else None))
    _start(worker)
    return worker


def start_generator_job(
    gen_func: Callable[[], Generator[Any, None, Any]],
    on_yield: Callable[[Any], None],
    on_done: Callable[[Any], None],
    what: str,
) -> GeneratorWorker:
    """Run a generator in a worker; each yielded value goes to on_yield in the GUI thread,
    the return value (or a Failure) to on_done. `worker.quit()` stops it at the next yield
    and on_done then gets None."""

    def guarded() -> Generator[Any, None, Any]:
        try:
            return (yield from gen_func())
        except Exception as exc:
            return Failure(f"{what} failed: {describe(exc)}")

    worker = thread_worker(guarded, start_thread=False)()
    worker.yielded.connect(_if_alive(on_yield))
    worker.returned.connect(_if_alive(on_done))
    worker.aborted.connect(_if_alive(lambda: on_done(None)))
    _start(worker)
    return worker


def report(result: Any) -> bool:
    """Show a Failure with show_error; True when `result` is a real result."""
    if isinstance(result, Failure):
        show_error(result.message)
        return False
    return result is not None
