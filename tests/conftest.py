"""Fixtures and hooks shared by the whole test suite.

Hooks: per-test time limits (pytest-timeout: 300 s, 900 s for tests marked slow or
fiftyone) with a C-level watchdog behind them, and one closing line that counts the skipped
tests by reason.

Data: ``nuclei_dir`` (dsb2018 nuclei: the shared set, or the subset shipped in tests/data on a
clone without ``../shared``), ``shared_dir`` (everything else in ``../shared``; skips without
it), the real MobileSAM weights.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import sys
from collections import Counter
from pathlib import Path

import fo_environment  # tests/ is on sys.path: this conftest's folder
import pytest

# pytest-xdist workers share the machine's cores. Their OpenMP threads sleep at barriers
# instead of spinning, so two workers computing at once do not burn each other's time slices;
# each keeps torch's default thread count, because some results are bit-exact only at the
# thread count the official reference was computed with (PyTorch's one-thread bilinear
# interpolation sums in another order). Set before anything imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# FiftyOne's private folders, set before any test module can import fiftyone.
fo_environment.configure()

# Some machines (this project's among them) set PYTHONDONTWRITEBYTECODE. Then every Python
# process of the run (both pytest workers, and the CLI, Dask, FiftyOne and wheel-install
# subprocesses that tests start) compiles samscope's modules and pytest's assertion-rewritten
# modules from source again: measured 4-5 s per pytest process here. The bytecode goes to
# __pycache__ folders, which git ignores; the workers start after this conftest loads.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

SLOW_TIMEOUT_S = 900  # tests marked slow or fiftyone (real weights, the FiftyOne database)
WATCHDOG_GRACE_S = 30  # the watchdog fires this long after the test's own time limit
_WATCHDOG_FD = pytest.StashKey[int]()  # a copy of the real stderr, for the watchdog


# ---------------------------------------------------------------------------- time limits


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow or fiftyone get SLOW_TIMEOUT_S unless they set their own timeout.
    Test files run longest first (`_longest_files_first`)."""
    for item in items:
        marked_slow = item.get_closest_marker("slow") or item.get_closest_marker("fiftyone")
        if marked_slow and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    _longest_files_first(items)


# ------------------------------------------------------------------ order and durations

# Seconds per test file from a full run (`SAMSCOPE_RECORD_DURATIONS`, below). pytest-xdist
# (--dist loadfile --no-loadscope-reorder) hands files to whichever worker is free in this
# order, so starting with the longest ones keeps a long file from running alone at the end.
FILE_SECONDS = Path(__file__).with_name("file_seconds.json")
UNKNOWN_FILE_S = 5.0  # a file new since the last recording


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _longest_files_first(items: list[pytest.Item]) -> None:
    try:
        seconds = json.loads(FILE_SECONDS.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: -seconds.get(_file_of(item.nodeid), UNKNOWN_FILE_S))


_recorded_phases: list = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With SAMSCOPE_RECORD_DURATIONS=<json path>, collect each phase's time and worker (in
    the process that reports: the xdist controller, or the only process)."""
    if not os.environ.get("SAMSCOPE_RECORD_DURATIONS") or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    node = getattr(report, "node", None)
    worker = getattr(getattr(node, "gateway", None), "id", "main")
    _recorded_phases.append(
        [report.nodeid, report.when, worker, report.start, report.stop, report.outcome]
    )


def _write_durations(path: Path) -> None:
    """{"files": {test file: seconds, longest first}, "phases": [[nodeid, phase, worker, start,
    stop, outcome], ...]}; copy "files" into tests/file_seconds.json to reorder the suite."""
    files: Counter[str] = Counter()
    for nodeid, _when, _worker, start, stop, _outcome in _recorded_phases:
        files[_file_of(nodeid)] += stop - start
    ordered = {name: round(s, 1) for name, s in files.most_common()}
    path.write_text(json.dumps({"files": ordered, "phases": _recorded_phases}, indent=1))


def _time_limit_s(item: pytest.Item) -> float:
    """The test's pytest-timeout limit in seconds (marker, then --timeout, then the ini
    value); 0 when there is none or pytest-timeout is not installed."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
        if value is not None:
            return float(value)
    try:
        option = item.config.getoption("timeout", default=None)
        value = option if option is not None else item.config.getini("timeout")
    except ValueError:  # pytest-timeout not installed: no such ini key
        return 0.0
    return float(value or 0)


def pytest_configure(config: pytest.Config) -> None:
    """Keep a copy of the real stderr for the watchdog (capture is off at this point)."""
    stream = sys.stderr if hasattr(sys.stderr, "fileno") else sys.__stderr__
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no real stderr
        config.stash[_WATCHDOG_FD] = os.dup(stream.fileno())


def pytest_unconfigure(config: pytest.Config) -> None:
    record = os.environ.get("SAMSCOPE_RECORD_DURATIONS")
    if record and _recorded_phases:
        _write_durations(Path(record))
    fd = config.stash.get(_WATCHDOG_FD, None)
    if fd is not None:
        os.close(fd)
        del config.stash[_WATCHDOG_FD]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Arm faulthandler's watchdog for WATCHDOG_GRACE_S past the test's time limit.

    pytest-timeout's "thread" method needs the GIL to print stacks and stop the run; in a
    deadlock where a thread holds the GIL inside Qt it never gets it. faulthandler's watchdog
    is a C thread: it prints every thread's stack and exits (code 1) without the GIL.
    """
    limit = _time_limit_s(item)
    fd = item.config.stash.get(_WATCHDOG_FD, None)
    if limit <= 0 or fd is None:
        return (yield)
    faulthandler.dump_traceback_later(limit + WATCHDOG_GRACE_S, exit=True, file=fd)
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()


# ------------------------------------------------------------------------- skip summary


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line: how many tests were skipped, grouped by reason (most frequent first)."""
    reports = [r for r in terminalreporter.stats.get("skipped", []) if r.skipped]
    if not reports:
        terminalreporter.write_line("skipped: none")
        return
    counts = Counter(_skip_reason(r) for r in reports)
    parts = "; ".join(f"{n} x {reason}" for reason, n in counts.most_common())
    terminalreporter.write_line(f"skipped {len(reports)}: {parts}")


# ------------------------------------------------------------------------------ test data

SHARED_PATH = (Path(__file__).parents[1] / ".." / "shared").resolve()
SHIPPED_NUCLEI = Path(__file__).parent / "data" / "dsb2018_fluo_dev"


@pytest.fixture(scope="session")
def shared_dir_or_none() -> Path | None:
    """The ``shared/`` folder next to the repository, or None on a clone without it."""
    return SHARED_PATH if SHARED_PATH.is_dir() else None


@pytest.fixture(scope="session")
def shared_dir(shared_dir_or_none: Path | None) -> Path:
    """The ``shared/`` folder next to the repository (reference outputs, data sets); skips the
    test when it is missing. Tests that read only dsb2018_fluo_dev use ``nuclei_dir``."""
    if shared_dir_or_none is None:
        pytest.skip(
            f"shared data folder {SHARED_PATH} does not exist (official reference outputs, "
            "data sets other than the dsb2018 nuclei shipped in tests/data)"
        )
    return shared_dir_or_none


@pytest.fixture(scope="session")
def nuclei_dir(shared_dir_or_none: Path | None) -> Path:
    """The dsb2018_fluo_dev folder (CC0 fluorescence nuclei): ``images/<name>.png`` gray
    uint8, ``labels/<name>.tif`` uint16 instance ids (0 = background), ``manifest.json``.

    The full 50-image set in ``shared/data`` when it exists, else the 12-image subset
    shipped in ``tests/data`` (byte-identical copies of every image a test names and of the
    first 6 manifest items, manifest in the same order), so these tests also run on a fresh
    clone.
    """
    if shared_dir_or_none is not None:
        full = shared_dir_or_none / "data" / "dsb2018_fluo_dev"
        if full.is_dir():
            return full
    return SHIPPED_NUCLEI


@pytest.fixture(scope="session")
def mobilesam_checkpoint() -> Path:
    """Path of the real MobileSAM (vit_t) weights, fetched once per machine into the default
    cache (``$SAMSCOPE_CACHE_DIR`` if set) and reused by later sessions."""
    from sam_core.checkpoints import fetch_checkpoint

    if os.environ.get("SAMSCOPE_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        from sam_core.checkpoints import cached_path

        path = cached_path("vit_t")
        if path is None:
            pytest.skip("SAMSCOPE_OFFLINE is set and vit_t is not cached")
        return path
    return fetch_checkpoint("vit_t", progress=False)


@pytest.fixture(scope="session")
def random_weights(shared_dir: Path):
    """``shared/reference/random_weights.py`` as a module (not part of the package): the
    deterministic random weights the official reference outputs were computed with."""
    import importlib.util

    path = shared_dir / "reference" / "random_weights.py"
    if not path.is_file():
        pytest.skip(f"{path} does not exist")
    spec = importlib.util.spec_from_file_location("samscope_reference_random_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def vit_t_model(mobilesam_checkpoint: Path):
    """The real MobileSAM model on the CPU, loaded once per session (treat as read-only)."""
    from sam_core import load_model

    return load_model("vit_t", device="cpu")


@pytest.fixture(scope="session")
def read_rgb():
    """A reader that returns an image file as the official code sees it: (H, W, 3) RGB uint8,
    grayscale replicated to three channels, alpha dropped."""
    import numpy as np
    from PIL import Image

    def read(path: str | os.PathLike[str]):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)

    return read


class _CachedVitT:
    """MobileSAM (fp32, CPU) with image embeddings and click predictions memoised per image."""

    def __init__(self, model, read_rgb) -> None:
        from sam_core import Predictor

        self._predictor = Predictor(model, device="cpu", precision="fp32")
        self._read_rgb = read_rgb
        self._embeddings: dict[str, object] = {}
        self._clicks: dict[tuple[str, bytes], tuple] = {}

    def embedding(self, path: str | os.PathLike[str]):
        key = str(Path(path).resolve())
        if key not in self._embeddings:
            self._embeddings[key] = self._predictor.compute_embedding(self._read_rgb(path))
        return self._embeddings[key]

    def predict(self, path: str | os.PathLike[str], points):
        """One positive click per object: points (B, 2) xy → masks (B, 3, H, W), scores (B, 3)."""
        import numpy as np

        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        key = (str(Path(path).resolve()), points.tobytes())
        if key not in self._clicks:
            self._predictor.set_embedding(self.embedding(path))
            masks, scores, _ = self._predictor.predict(
                points=points[:, None, :], labels=np.ones((len(points), 1)), multimask=True
            )
            self._clicks[key] = (masks, scores)
        return self._clicks[key]


@pytest.fixture(scope="session")
def vit_t_cached(vit_t_model, read_rgb) -> _CachedVitT:
    """MobileSAM on the CPU whose embeddings (`.embedding(path)`) and one-click predictions
    (`.predict(path, points)`) are memoised for the session: the fidelity and
    real-segmentation tests use the same images and clicks and share the work."""
    return _CachedVitT(vit_t_model, read_rgb)


@pytest.fixture
def five_channel_tiff(tmp_path):
    """A (96, 128, 5) uint16 TIFF (channels last, no axes metadata) with a bright disc only in
    channel 2, the issue-13 "many channels" file every way in is tested with.
    Returns (path, (96, 128) bool disc)."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(3)
    data = rng.integers(900, 1000, (96, 128, 5), dtype=np.uint16)
    yy, xx = np.mgrid[0:96, 0:128]
    truth = (xx - 70) ** 2 + (yy - 45) ** 2 < 18**2
    data[..., 2][truth] = 3000
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, data)
    return path, truth
