"""The FiftyOne environment of a test process: private folders (database, plugins, datasets),
a private database server, no analytics.

FiftyOne reads its configuration once, when it is first imported, and test modules anywhere in
the suite may import it at collection (`pytest.importorskip("fiftyone")`). So the root conftest
calls `configure()` before any test module is imported.

Private folders are not enough to isolate two test processes: FiftyOne attaches to *any*
database service its user already runs, whatever that service's folder (it looks for the
process by its arguments), so two pytest-xdist workers shared one database (a worker rebuilding
"samscope-test-fo" deleted the other's), could both start a server on one folder
("DBPathInUse"), and a developer's own FiftyOne session would have received the test datasets.
`start_database()` gives each test process its own mongod on a fresh folder instead, reached
through `FIFTYONE_DATABASE_URI` (inherited by the subprocesses tests start).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60.0


def base_folder() -> Path:
    """$FO_TEST_BASE (or <tmp>/samscope-fo-<uid>) / <xdist worker id, or "main">."""
    default = Path(tempfile.gettempdir()) / f"samscope-fo-{os.getuid()}"
    root = os.environ.get("FO_TEST_BASE") or default
    return Path(root) / os.environ.get("PYTEST_XDIST_WORKER", "main")


def configure() -> Path:
    """Point FiftyOne's folders at `base_folder()` (overriding the user's own settings, so
    tests never touch a real database) and return that folder."""
    base = base_folder()
    os.environ["FIFTYONE_DATABASE_DIR"] = str(base / "db")
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(base / "plugins")
    os.environ["FIFTYONE_DEFAULT_DATASET_DIR"] = str(base / "datasets")
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"
    # set by `start_database`; a value inherited from elsewhere would reach another server
    os.environ.pop("FIFTYONE_DATABASE_URI", None)
    os.environ.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
    return base


@dataclass
class PrivateDatabase:
    """A mongod serving one test process: its URI, process and data folder."""

    uri: str
    process: subprocess.Popen
    folder: Path

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 20 s) and delete its folder."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the test process dies, however it dies, so a
    killed run leaves no server behind (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def start_database(mongod: str | Path, base: Path) -> PrivateDatabase:
    """Start `mongod` on a fresh folder under `base` and a free localhost port; wait until it
    accepts connections. Raises RuntimeError (with the server's log tail) if it exits or does
    not listen within START_TIMEOUT_S, after 3 tries (a port can be taken between the probe and
    the server's bind)."""
    base.mkdir(parents=True, exist_ok=True)
    problem = ""
    for _ in range(3):
        folder = Path(tempfile.mkdtemp(prefix="db-", dir=base))
        port = _free_port()
        log = folder / "mongo.log"
        command = [str(mongod), "--dbpath", str(folder), "--port", str(port),
                   "--bind_ip", "127.0.0.1", "--logpath", str(log)]  # fmt: skip
        if not sys.platform.startswith("win"):
            command.append("--nounixsocket")
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        database = PrivateDatabase(f"mongodb://127.0.0.1:{port}", process, folder)
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return database
            time.sleep(0.1)
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else "(no log)"
        problem = f"mongod exited with {process.poll()} or did not listen on {port}: {tail}"
        database.stop()
    raise RuntimeError(f"could not start a private FiftyOne database: {problem}")
