"""`samscope segment` on Dask distributed: the same files as a serial run, one model per worker.

Three 128² nuclei crops, an 8x8 point grid, real MobileSAM; clusters of 2 worker processes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_core import Predictor
from sam_core.batch import SegmentSettings, list_inputs, plan_jobs, run_job
from sam_core.cli import main
from sam_core.cli_batch import AMG_OPTIONS, _fill_thresholds

pytestmark = pytest.mark.slow

NAMES = ("00071198d059ba7f", "003cee89357d9fe1", "094afe36759e7daf")


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory, nuclei_dir) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for name in NAMES:
        image = np.asarray(Image.open(nuclei_dir / f"images/{name}.png"))
        Image.fromarray(image[64:192, 64:192]).save(folder / f"{name}.png")
    return folder


def _settings() -> SegmentSettings:
    amg = {dest: default for dest, _, default, _ in AMG_OPTIONS.values()}  # the CLI defaults
    _fill_thresholds(amg, "vit_t")  # the official 0.88 / 0.95, as `samscope segment` does
    amg["points_per_side"] = 8
    return SegmentSettings(model="vit_t", device="cpu", amg=amg)


@pytest.fixture(scope="module")
def serial(tmp_path_factory, input_dir, vit_t_model) -> Path:
    out = tmp_path_factory.mktemp("serial")
    predictor = Predictor(vit_t_model, device="cpu")
    for job in plan_jobs(list_inputs([input_dir]), out, "tif"):
        assert run_job(job, _settings(), predictor).status == "done"
    return out


# Provenance fields that say when and from where, not what: the serial run loads the weights
# from a file (the Dask workers by registry name) and reads a copy of the inputs in one test.
_WHERE_AND_WHEN = {"created", "source", "image"}


def _files(folder: Path) -> dict[str, object]:
    """Each output file's bytes; provenance sidecars parsed, without `_WHERE_AND_WHEN`."""
    files: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(".provenance.json"):
            files[path.name] = _without_times(json.loads(path.read_text()))
        else:
            files[path.name] = path.read_bytes()
    return files


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in _WHERE_AND_WHEN}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def test_local_cluster_of_two_workers_writes_exactly_the_serial_files(
    tmp_path, input_dir, serial, capsys
):
    out = tmp_path / "dask"
    argv = ["segment", str(input_dir), "--out", str(out), "--points-per-side", "8", "-q"]
    assert main([*argv, "--workers", "2"]) == 0
    assert "3 written" in capsys.readouterr().out
    assert not _differences(_files(out), _files(serial))
    assert sum(name.endswith("_labels.tif") for name in _files(serial)) == len(NAMES)

    assert main([*argv, "--workers", "2"]) == 0  # nothing left to do: no cluster is started
    assert "3 already done, 0 to do" in capsys.readouterr().out
    assert not _differences(_files(out), _files(serial))


def test_scheduler_address_each_worker_loads_the_model_once_and_failures_are_reported(
    tmp_path, input_dir, serial
):
    from distributed import Client, LocalCluster

    from sam_core.distributed import run_jobs

    folder = tmp_path / "in"
    folder.mkdir()
    for path in input_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes((input_dir / f"{NAMES[0]}.png").read_bytes()[:200])
    out = tmp_path / "out"
    jobs = plan_jobs(list_inputs([folder]), out, "tif")
    seen = []
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        results = run_jobs(
            jobs, _settings(), scheduler=cluster.scheduler_address, progress=seen.append
        )
        with Client(cluster) as client:
            loads = client.run(lambda: __import__("sam_core.session").session.loaded_predictors())
            threads = client.run(lambda: __import__("torch").get_num_threads())
    assert sorted(loads.values()) == [1, 1]  # one model per worker, loaded by the plugin
    assert set(threads.values()) == {1}
    assert [r.input for r in results] == [str(j.input) for j in jobs]
    assert len(seen) == len(jobs)
    status = {Path(r.input).name: r.status for r in results}
    assert status == {"broken.png": "failed", **{f"{n}.png": "done" for n in NAMES}}
    broken = next(r for r in results if r.status == "failed")
    assert "broken.png" in broken.message
    assert not _differences(_files(out), _files(serial))


def test_run_jobs_needs_exactly_one_target():
    from sam_core.distributed import run_jobs

    with pytest.raises(ValueError, match="either workers"):
        run_jobs([], _settings())
    with pytest.raises(ValueError, match="either workers"):
        run_jobs([], _settings(), workers=2, scheduler="tcp://127.0.0.1:1")


def _differences(a, b, path="") -> list[str]:
    """Where two parsed output folders differ: files byte for byte, sidecar values exactly
    except floats (relative 1e-5)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(key), b.get(key), f"{path}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        # Scores are computed on 1 thread in a Dask worker and on 2 here: last-digit changes.
        return [] if math.isclose(a, b, rel_tol=1e-5) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]
