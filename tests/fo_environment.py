"""The FiftyOne environment of a test process: private database, plugins and datasets folders,
one set per pytest-xdist worker, no analytics.

FiftyOne reads its configuration once, when it is first imported, and test modules anywhere in
the suite may import it at collection (`pytest.importorskip("fiftyone")`). So the root conftest
calls `configure()` before any test module is imported. Two workers on one database would see
each other's datasets (a worker rebuilding "samscope-test-fo" deleted the other's), and two
database servers starting on one folder collide ("DBPathInUse").
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
    os.environ.pop("FIFTYONE_DATABASE_URI", None)  # a shared server would share datasets too
    return base
