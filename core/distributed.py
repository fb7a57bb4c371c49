"""Batch segmentation on Dask distributed: one task per image, the model loaded once per worker.

    results = run_jobs(jobs, settings, workers=4)                  # a LocalCluster on this machine
    results = run_jobs(jobs, settings, scheduler="tcp://head:8786") # an existing cluster

Tasks run `sam_core.batch.run_job`, the same code as a serial run, so every task writes its own
output atomically and a rerun skips finished images. Workers must be able to import sam_core
and read the input and output paths (a shared file system on a real cluster).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from distributed import WorkerPlugin

from .batch import Job, JobResult, SegmentSettings, get_predictor, run_job


class ModelPlugin(WorkerPlugin):
    """Loads the model when a worker starts (one torch thread per worker process)."""

    name = "samscope-model"

    def __init__(self, model: str, device: str = "cpu", precision: str = "fp32") -> None:
        self.model = model
        self.device = device
        self.precision = precision

    def setup(self, worker) -> None:
        import torch

        torch.set_num_threads(1)  # processes give the parallelism; threads would oversubscribe
        get_predictor(self.model, self.device, self.precision)


def _run_on_worker(job: Job, settings: SegmentSettings) -> JobResult:
    import torch

    torch.set_num_threads(1)
    return run_job(job, settings)


def run_jobs(
    jobs: Sequence[Job],
    settings: SegmentSettings,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run `jobs` on a new LocalCluster of `workers` processes (one thread each) or on the
    cluster at `scheduler`; returns one result per job, in job order.

    progress: called with each result as it arrives. A task that dies (e.g. its worker is
    killed) becomes a "failed" result; the other tasks go on.
    """
    from distributed import Client, LocalCluster, as_completed

    if (workers is None) == (scheduler is None):
        raise ValueError("give either workers (a LocalCluster) or a scheduler address")
    cluster = None
    if scheduler is None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    client = Client(cluster if cluster is not None else scheduler)
    try:
        client.register_plugin(ModelPlugin(settings.model, settings.device, settings.precision))
        futures = client.map(_run_on_worker, list(jobs), settings=settings, pure=False)
        by_future = {f.key: job for f, job in zip(futures, jobs, strict=True)}
        results: dict[Job, JobResult] = {}
        for future in as_completed(futures):
            job = by_future[future.key]
            try:
                result = future.result()
            except Exception as exc:  # the task or its worker died: report, keep going
                result = JobResult(
                    str(job.input), str(job.output), "failed", f"{type(exc).__name__}: {exc}"
                )
            results[job] = result
            if progress is not None:
                progress(result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return [results[job] for job in jobs]
