"""Fine-tuning outputs: weights in the official format, a JSON card, and a resume file.

In the output folder:

* ``model.pth``: ``model.state_dict()`` after the last finished epoch, with the official
  checkpoint's keys, so ``load_model("out/model.pth")`` loads it like an official one;
* ``best.pth``: the weights of the epoch with the best validation 1-point mIoU;
* ``model.json``: the card (base model, data, trainable parts, settings, metrics per epoch);
* ``resume.pth``: optimizer state, epoch and step, to continue an interrupted run. Read with
  ``torch.load(weights_only=True)`` like every checkpoint; the settings travel as JSON text.

Each file is written to a temporary name and moved into place, so an interruption never
leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..image_io import write_bytes
from ..state_dicts import read_state_dict

MODEL_FILE = "model.pth"
BEST_FILE = "best.pth"
CARD_FILE = "model.json"
RESUME_FILE = "resume.pth"


def _atomic_torch_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(model: torch.nn.Module, path: Path) -> Path:
    """The model's full state dict (official keys), on the CPU, atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_torch_save(state, path)
    return path


def save_card(card: dict, out_dir: Path) -> Path:
    return write_bytes(out_dir / CARD_FILE, (json.dumps(card, indent=2) + "\n").encode())


def card_beside(weights: str | os.PathLike[str]) -> dict | None:
    """The card of a fine-tuning run whose weights file is `weights`, or None.

    Only a ``model.json`` in the same folder that belongs to a samscope fine-tuning run
    counts; an unreadable one is ignored (the weights load without it).
    """
    path = Path(weights).expanduser()
    card_path = path.parent / CARD_FILE
    if path.name not in (MODEL_FILE, BEST_FILE) or not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or not str(card.get("format", "")).startswith(
        "samscope-finetune-card"
    ):
        return None
    return card


def automatic_thresholds(weights: str | os.PathLike[str]) -> dict[str, float] | None:
    """{"pred_iou_thresh", "stability_score_thresh"} searched for this fine-tuned model
    (``samscope finetune`` stores them in its card), or None."""
    card = card_beside(weights)
    found = (card or {}).get("automatic") or {}
    try:
        return {
            "pred_iou_thresh": float(found["pred_iou_thresh"]),
            "stability_score_thresh": float(found["stability_score_thresh"]),
        }
    except (KeyError, TypeError, ValueError):
        return None


def save_resume(
    out_dir: Path, optimizer: torch.optim.Optimizer, epoch: int, step: int, card: dict
) -> Path:
    state = {
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "card_json": json.dumps(card),
    }
    path = out_dir / RESUME_FILE
    _atomic_torch_save(state, path)
    return path


def load_resume(out_dir: Path) -> tuple[dict, dict[str, torch.Tensor], dict] | None:
    """(resume state, last weights, card) of an interrupted run in `out_dir`, or None."""
    resume_path = out_dir / RESUME_FILE
    if not resume_path.is_file():
        return None
    try:
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        card = json.loads(state["card_json"])
    except Exception as exc:
        raise CheckpointError(
            f"cannot resume from {resume_path}: {exc}. Delete it to start over."
        ) from exc
    weights = read_state_dict(out_dir / MODEL_FILE)
    return state, weights, card
