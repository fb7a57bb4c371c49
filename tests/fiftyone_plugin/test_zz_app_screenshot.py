"""The FiftyOne App, headless, with the mask review panel open: screenshot in Chromium.

Named to run last in the module, after the tests that leave ratings for the report panel.

Set SAMSCOPE_UPDATE_SCREENSHOTS=1 to write docs/images/fiftyone_review_panel.png (and the
report panel shot); otherwise the pictures go to the test's temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.fiftyone, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

LAUNCH = """
import sys, fiftyone as fo
ds = fo.load_dataset(sys.argv[1])
spaces = fo.Space(
    children=[fo.Panel(type="Samples", pinned=True), fo.Panel(type=sys.argv[3])],
    orientation="horizontal",
)
session = fo.launch_app(ds, remote=True, address="127.0.0.1", port=int(sys.argv[2]),
                        spaces=spaces, auto=False)
print("APP READY", flush=True)
session.wait(-1)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    raise TimeoutError(f"the App did not answer at {url} within {timeout:.0f} s")


def _looks_rendered(path: Path) -> bool:
    """False for the App's plain loading page (one dark colour and a word)."""
    from PIL import Image

    picture = np.asarray(Image.open(path).convert("L"), dtype=float)
    return picture.std() > 20


def screenshot_panel(dataset_name: str, panel: str, out: Path, home: Path) -> Path:
    """Launch the App with `panel` beside the grid, screenshot it with headless Chromium."""
    port = _free_port()
    env = {**os.environ, "HOME": str(home)}
    app = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, dataset_name, str(port), panel],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    tree: list = []
    try:
        _wait_http(f"http://127.0.0.1:{port}/", timeout=150)
        time.sleep(3.0)  # the first page right after start can miss the dataset
        # the server's own service processes can outlive the launcher: collect them now
        tree = _process_tree(app.pid)
        for attempt in range(3):  # the App can still be loading ("Pixelating...")
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run(
                    [
                        "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        "--window-size=1800,1000", "--virtual-time-budget=30000",
                        "--hide-scrollbars", f"--screenshot={out}",
                        f"http://127.0.0.1:{port}/datasets/{dataset_name}",
                    ],
                    check=True, capture_output=True, timeout=180, env=env,
                )  # fmt: skip
            if _looks_rendered(out) or attempt == 2:
                break
            time.sleep(10.0)
    finally:
        import psutil

        for process in {p.pid: p for p in tree + _process_tree(app.pid)}.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        app.wait(timeout=30)
    return out


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_review_panel_screenshot(fo_dataset, coco_dir, review_field, tmp_path):
    """Needs the COCO samples (`coco_dir`): the panel opens on the lowest-IoU mask, which is
    then a COCO object; a nucleus's mask is too small for the tint check."""
    import fiftyone as fo
    from PIL import Image

    from samscope_fiftyone.review import rating_rows, review_queue, save_rating

    if not rating_rows(fo_dataset, [review_field]):  # the report panel needs some ratings
        for ref, value in zip(review_queue(fo_dataset, review_field)[:3], (4, 8, 9), strict=False):
            save_rating(fo_dataset, ref, value, "screenshot")
    # a clone with just the ground truth, the box prompts and the reviewed masks (and their
    # ratings): the panel opens on those masks and the sidebar stays short
    app_name = f"{fo_dataset.name}-app"
    if fo.dataset_exists(app_name):
        fo.delete_dataset(app_name)
    fo_dataset.select_fields(["ground_truth", "boxes", review_field]).clone(
        app_name, persistent=True
    )
    update = os.environ.get("SAMSCOPE_UPDATE_SCREENSHOTS") == "1"
    folder = REPO / "docs" / "images" if update else tmp_path
    home = tmp_path / "home"
    home.mkdir()
    shot = screenshot_panel(app_name, "mask_review", folder / "fiftyone_review_panel.png", home)
    picture = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert picture.shape[:2] == (1000, 1800)
    right = picture[:, 900:]
    # the five-view picture's mask tint (blue, see review_render.MASK_RGB) is on the panel side
    tint = (right[..., 2] > 150) & (right[..., 2] - right[..., 0] > 60)
    assert tint.sum() > 200, "no mask overlay visible in the review panel"
    if update:
        report = screenshot_panel(
            app_name, "quality_report", folder / "fiftyone_quality_report.png", home
        )
        assert _looks_rendered(report)
