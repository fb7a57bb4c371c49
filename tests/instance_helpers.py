"""A tiny instance decoder (issue 15) for the front-end tests: trained once per test session.

    run = tiny_decoder_run(tmp_path_factory.getbasetemp() / "instance_tiny", nuclei_dir)
    Session(str(run / "model.pth")).instance_segment(image, mode="decoder")

Two 256 x 256 nuclei images (none of those the front-end tests segment, `HELD_OUT`) are
embedded once by MobileSAM (vit_t, frozen) and the decoder is trained for 24 short steps (the
recipe `tests/core/test_instance_training.py` shows beats an untrained decoder by a wide
margin): it then finds 13 of 13, 5 of 5, 8 of 8 and 6 of 7 nuclei on the held-out images, for
about 13 s of CPU (one thread). The folder gets what `samscope train-instance` writes:
``model.pth`` (vit_t's weights, linked), ``model.json`` (entry ``instance_decoder``) and
``instance_decoder.pth``. A second call with the same folder (other test folders, same
session) reuses it; a lock file keeps two processes from training into one folder at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

N_IMAGES = 2
# segmented by the front-end tests (napari's NUCLEI_IMAGE, fo_helpers.NUCLEI): not trained on
HELD_OUT = ("c043d5ac9dd46605", "0b2e702f90aee4ff", "6fb82031f7fc5f4f", "4829177d0b36abdd")
TINY_CONFIG = {
    "epochs": 1,
    "steps_per_epoch": 24,
    "batch_size": 4,
    "crop": 96,
    "lr": 5e-3,
    "warmup_steps": 3,
    "search_thresholds": False,
}


def nuclei_samples(nuclei_dir: Path, n: int = N_IMAGES) -> list:
    """The first `n` 256 x 256 labelled nuclei images not in `HELD_OUT` (`Sample`s)."""
    from sam_core.evaluation.datasets import load_eval_set

    found = [
        s
        for s in load_eval_set(nuclei_dir).samples
        if s.shape == (256, 256) and s.name not in HELD_OUT
    ]
    return found[:n]


def tiny_decoder_run(out: Path, nuclei_dir: Path) -> Path:
    """The folder `out` holding a trained tiny decoder for vit_t (trained on first use)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = out / "instance_decoder.pth"
    lock = out / ".training"
    deadline = time.monotonic() + 600
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:  # another process trains into this folder: wait for it
            if time.monotonic() > deadline:
                raise TimeoutError(f"{lock} stayed for 10 minutes") from None
            time.sleep(0.5)
    try:
        if not (out / "model.json").is_file() or not done.is_file():
            _train(out, nuclei_dir)
    finally:
        os.close(fd)
        lock.unlink()
    return out


def _train(out: Path, nuclei_dir: Path) -> None:
    import torch

    from sam_core.instance import TrainConfig, prepare_items, train_decoder
    from sam_core.session import Session

    torch.manual_seed(0)
    session = Session("vit_t")
    items = prepare_items(session, nuclei_samples(nuclei_dir), work_side=1024)
    train_decoder(session, items, [], out, TrainConfig(**TINY_CONFIG), resume=False, log=_quiet)


def _quiet(line: str) -> None:
    pass
