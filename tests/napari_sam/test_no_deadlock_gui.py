"""samscope's jobs never starve the thread pool Qt itself needs (issue 14, item 5).

Qt 5's raster engine splits large image conversions into tasks on
`QThreadPool.globalInstance()` and waits for them while the GUI thread holds the GIL. If
every thread of that pool runs a samscope job that waits for the GIL, the repaint never ends
(seen as a hang of the whole suite on a loaded 2-core machine). Here the global pool is
limited to 2 threads on purpose, four jobs keep busy in Python, and the GUI thread repaints a
2048² image layer, grabs the window and converts large QImages meanwhile. With samscope's own
pool everything finishes; with jobs on the global pool, Qt 5 deadlocks (pytest-timeout then
fails the run with a stack) and every binding fails the "global pool stays free" check.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]

JOBS = 4
BUSY_SECONDS = 2.0


def _busy_python(seconds: float) -> int:
    """Loop in pure Python (so the thread keeps asking for the GIL) for `seconds`."""
    end = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < end:
        turns += 1
    return turns


def _convert_large_images() -> None:
    """Conversions big enough for Qt to split them across its thread pool."""
    from qtpy.QtCore import Qt
    from qtpy.QtGui import QImage

    image = QImage(2048, 2048, QImage.Format_RGB888)
    image.fill(0x336699)
    image.convertToFormat(QImage.Format_ARGB32_Premultiplied)
    image.scaled(1536, 1536, Qt.IgnoreAspectRatio, Qt.SmoothTransformation)


def test_jobs_run_beside_repaints_with_a_small_global_pool(make_napari_viewer, qtbot):
    from qtpy.QtCore import QThreadPool
    from qtpy.QtWidgets import QApplication

    from samscope_napari import jobs

    viewer = make_napari_viewer(show=True)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 256, (2048, 2048), dtype=np.uint8), name="large")
    global_pool = QThreadPool.globalInstance()
    old_max = global_pool.maxThreadCount()
    global_pool.setMaxThreadCount(2)
    results: list[object] = []
    try:
        baseline = global_pool.activeThreadCount()
        started = threading.Semaphore(0)

        def job() -> int:
            started.release()
            return _busy_python(BUSY_SECONDS)

        for _ in range(JOBS):
            jobs.start_function_job(job, results.append, "busy")
        qtbot.waitUntil(lambda: started.acquire(blocking=False), timeout=10_000)

        global_busy, repaints = [], 0
        deadline = time.monotonic() + 60
        while len(results) < JOBS and time.monotonic() < deadline:
            global_busy.append(global_pool.activeThreadCount())
            viewer.layers["large"].refresh()
            viewer.window._qt_window.grab()  # the whole window through the raster engine
            _convert_large_images()
            QApplication.processEvents()
            repaints += 1
    finally:
        global_pool.setMaxThreadCount(old_max)

    assert len(results) == JOBS, f"{len(results)} of {JOBS} jobs finished within 60 s"
    assert all(isinstance(r, int) and r > 0 for r in results), results
    assert repaints >= 2, f"only {repaints} repaints while the jobs ran"
    assert max(global_busy) <= baseline, (
        f"samscope jobs ran on Qt's global thread pool ({max(global_busy)} threads busy there)"
    )
    assert jobs.wait_for_jobs(10_000)
