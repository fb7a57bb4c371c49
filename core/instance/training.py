"""Training the instance decoder on frozen SAM embeddings, with validation, resume and a card.

    result = train_decoder(session, train_samples, val_samples, "runs/nuclei", config)

Per step: `batch_size` random training images, each under a random flip / quarter turn
(`data.view`) and cropped to `crop` pixels; loss per map (foreground, centre, boundary):
binary cross-entropy + soft Dice over valid pixels, summed. AdamW, linear warmup then cosine
decay, all by global step, so a resumed run continues the same schedule. After each epoch the
validation images are segmented (maps → `maps_to_labels`) and scored: AP50, AP (0.5:0.95) and
mean segmentation accuracy (`metrics`); the epoch with the best AP50 is kept.

Outputs in `out_dir` (each written atomically, after every epoch, so a stopped run leaves a
usable decoder): ``instance_decoder.pth`` (best epoch, `checkpoint`), ``instance_resume.pth``
(last weights, optimizer, epoch, history), and the ``model.json`` card entry
``"instance_decoder"`` (see `checkpoint`). At the end the post-processing thresholds are
searched on the validation images (`search_thresholds`) and stored in the decoder file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import CheckpointError
from .checkpoint import CARD_FILE, CARD_KEY, DECODER_FILE, LoadedDecoder, save_decoder
from .data import DecoderItem, pad_to, random_view, turn
from .metrics import score_labels
from .network import DecoderConfig, InstanceDecoder, sample_tokens
from .pixels import WORK_SIDE
from .postprocess import InstanceThresholds, maps_to_labels, object_scores

RESUME_FILE = "instance_resume.pth"
CARD_FORMAT = "samscope-instance-card/1"
MIN_STEPS_PER_EPOCH = 8  # random crops make repeated steps on a few images worth it


@dataclass
class TrainConfig:
    """Training settings.

    epochs: passes; each epoch is `steps_per_epoch` steps (default: enough batches to show
    every training image `repeats` times, at least `MIN_STEPS_PER_EPOCH`, so a user with a
    handful of labelled images still trains for more than one step an epoch). The defaults
    give 1500 steps for 40 images: on the nuclei split 300 steps (repeats 2) reached val AP50
    0.71 and 1500 steps 0.81 (benchmarks/README.md, issue 15), ~7 min on 2 CPU cores.
    crop: side of the random crops, pixels.
    lr: peak AdamW learning rate; warmup_steps: linear warmup. augment: random flips and
    quarter turns. device: "cpu", "cuda", None/"auto" (CUDA when present).
    """

    epochs: int = 30
    batch_size: int = 8
    crop: int = 128
    repeats: int = 10
    steps_per_epoch: int | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    augment: bool = True
    seed: int = 0
    device: str | None = None
    work_side: int = WORK_SIDE
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    search_thresholds: bool = True

    def steps(self, n_train: int) -> int:
        if self.steps_per_epoch is not None:
            return int(self.steps_per_epoch)
        return max(MIN_STEPS_PER_EPOCH, math.ceil(n_train * self.repeats / self.batch_size))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["decoder"] = self.decoder.to_dict()
        return out


def instance_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum over the 3 maps of BCE + soft Dice, valid pixels only.

    logits / targets: (B, 3, H, W); valid: (B, 1, H, W) 0/1."""
    n_valid = valid.sum().clamp(min=1.0)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * valid
    bce = bce.sum(dim=(0, 2, 3)) / n_valid
    probs = torch.sigmoid(logits) * valid
    inter = (probs * targets).sum(dim=(0, 2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (probs.sum(dim=(0, 2, 3)) + targets.sum(dim=(0, 2, 3)) + 1.0)
    return (bce + dice).sum()


@torch.inference_mode()
def item_maps(network: InstanceDecoder, item: DecoderItem) -> np.ndarray:
    """(3, H, W) float32 probabilities of a whole item at its original size."""
    device = next(network.parameters()).device
    logits = network(
        item.tokens[None].to(device),
        item.pixels[None].to(device),
        item.rows.to(device),
        item.cols.to(device),
    )
    probs = torch.sigmoid(logits.float())
    if tuple(probs.shape[-2:]) != tuple(item.labels.shape):
        probs = F.interpolate(probs, size=item.labels.shape, mode="bilinear")
    return probs[0].cpu().numpy()


def evaluate_items(
    network: InstanceDecoder,
    items: Sequence[DecoderItem],
    thresholds: InstanceThresholds | None = None,
    maps: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """AP, AP50, AP75, mSA of the decoder (watershed mode) on `items` (see `metrics`)."""
    maps = maps if maps is not None else [item_maps(network, item) for item in items]
    preds, scores = [], []
    for m in maps:
        labels = maps_to_labels(m, thresholds)
        preds.append(labels)
        scores.append(object_scores(m, labels)[0])
    return score_labels([item.labels for item in items], preds, scores)


def search_thresholds(
    network: InstanceDecoder, items: Sequence[DecoderItem], start: InstanceThresholds
) -> tuple[InstanceThresholds, dict]:
    """The post-processing thresholds with the best AP50 (then mSA) on `items`: a small grid
    over foreground / centre / boundary, the network run once per item."""
    maps = [item_maps(network, item) for item in items]
    best = (start, evaluate_items(network, items, start, maps))
    for fg in (0.4, 0.5, 0.6):
        for centre in (0.3, 0.45, 0.6):
            for boundary in (0.2, 0.35, 0.5):
                t = InstanceThresholds(fg, centre, boundary, start.min_area)
                found = evaluate_items(network, items, t, maps)
                if (found["AP50"], found["mSA"]) > (best[1]["AP50"], best[1]["mSA"]):
                    best = (t, found)
    return best


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainResult:
    """What `train_decoder` did: the best decoder, the card entry and per-epoch history."""

    decoder: LoadedDecoder
    entry: dict
    history: list[dict]


def train_decoder(
    session,
    train_items: Sequence[DecoderItem],
    val_items: Sequence[DecoderItem],
    out_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    resume: bool = True,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    stop_after: int | None = None,
    data_info: dict | None = None,
) -> TrainResult:
    """Train a decoder for `session`'s encoder (frozen) on prepared items; see the module.

    resume: continue from ``instance_resume.pth`` in `out_dir` if there is one (its settings
    win). stop_after: end after this many epochs in this call (to test resuming).
    Raises CheckpointError for a resume file of another encoder or an unreadable one.
    """
    from ..device import resolve_device

    config = config or TrainConfig()
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    sha = session.model_id.split(":", 1)[0]
    torch.manual_seed(config.seed)
    network = InstanceDecoder(config.decoder).to(device)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    history: list[dict] = []
    start_epoch = 0
    best_state, best_ap = None, -1.0
    state = _read_resume(out, sha) if resume else None
    if state is not None:
        network.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        history = json.loads(state["history_json"])
        start_epoch = int(state["epoch"])
        best_state = state.get("best_state")
        best_ap = max((h["val_AP50"] for h in history), default=-1.0)
        log(f"resume   from epoch {start_epoch} in {out / RESUME_FILE}")
    steps = config.steps(len(train_items))
    total = steps * config.epochs
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if stop_after is not None and epoch - start_epoch >= stop_after:
            break
        rng = np.random.default_rng([config.seed, epoch])
        network.train()
        losses = []
        epoch_start = time.perf_counter()
        for s in range(steps):
            step = epoch * steps + s
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _lr_factor(step, total, config.warmup_steps)
            chosen = rng.choice(len(train_items), size=config.batch_size, replace=True)
            loss = _step(network, optimizer, [train_items[i] for i in chosen], config, rng, device)
            losses.append(loss)
            if progress is not None:
                progress(step + 1, total)
        network.eval()
        metrics = evaluate_items(network, val_items) if val_items else {}
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "val_AP50": metrics.get("AP50", float("nan")),
            "val_AP": metrics.get("AP", float("nan")),
            "val_mSA": metrics.get("mSA", float("nan")),
            "seconds": round(time.perf_counter() - epoch_start, 2),
        }
        history.append(record)
        score = record["val_AP50"] if val_items else float(epoch)
        if best_state is None or score > best_ap:
            best_ap = score
            best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        _write_resume(out, network, optimizer, epoch + 1, history, sha, best_state, config)
        run = {"config": config, "data_info": data_info, "started": started, "device": device}
        _publish(out, session, best_state, InstanceThresholds(), history, run)
        # Logged once the epoch is saved: a front end that stops on this line loses nothing.
        log(
            f"epoch {epoch + 1:3d}/{config.epochs}  loss {record['loss']:.4f}  "
            f"val AP50 {record['val_AP50']:.3f}  AP {record['val_AP']:.3f}  "
            f"mSA {record['val_mSA']:.3f}  ({record['seconds']:.1f} s)"
        )
    best_state = best_state if best_state is not None else network.state_dict()
    finished = len(history) >= config.epochs
    thresholds = InstanceThresholds()
    if finished and config.search_thresholds and val_items:
        best = InstanceDecoder(config.decoder)
        best.load_state_dict(best_state)
        thresholds, found = search_thresholds(best.to(device).eval(), val_items, thresholds)
        log(
            f"thresholds foreground {thresholds.foreground}, centre {thresholds.centre}, "
            f"boundary {thresholds.boundary}: val AP50 {found['AP50']:.3f}, AP {found['AP']:.3f}, "
            f"mSA {found['mSA']:.3f}"
        )
    run = {"config": config, "data_info": data_info, "started": started, "device": device}
    loaded, entry = _publish(out, session, best_state, thresholds, history, run)
    return TrainResult(loaded, entry, history)


def _publish(out, session, state, thresholds, history, run) -> tuple[LoadedDecoder, dict]:
    """Write the best decoder so far and its card entry (after each epoch and at the end)."""
    config = run["config"]
    network = InstanceDecoder(config.decoder)
    network.load_state_dict(state)
    sha = session.model_id.split(":", 1)[0]
    finished = len(history) >= config.epochs
    info = {"epochs_done": len(history), "finished": finished, "history": history}
    loaded = LoadedDecoder(
        network.eval(), sha, session.predictor.model_name, thresholds, config.work_side, None, info
    )
    loaded.path = save_decoder(loaded, out / DECODER_FILE)
    loaded.network.to(run["device"])
    entry = {
        "file": DECODER_FILE,
        "encoder_model": session.predictor.model_name,
        "encoder_sha256": sha,
        "epochs_done": len(history),
        "finished": finished,
        "best_epoch": _best_epoch(history),
        "thresholds": thresholds.to_dict(),
        "config": config.to_dict(),
        "data": run["data_info"] or {},
        "history": history,
        "train_seconds_this_call": round(time.perf_counter() - run["started"], 1),
    }
    write_card_entry(out, session, entry)
    return loaded, entry


def _best_epoch(history: list[dict]) -> int:
    scores = np.nan_to_num([h["val_AP50"] for h in history], nan=-1.0)
    return int(np.argmax(scores)) + 1 if len(scores) else 0


def _step(network, optimizer, items, config, rng, device) -> float:
    sampled, pixels, targets, valid = [], [], [], []
    side = config.crop
    for item in items:
        v = random_view(item, side, rng, config.augment)
        features = network.token_features(v.tokens[None].to(device))
        part = sample_tokens(features, v.rows.to(device), v.cols.to(device))[0]
        ones = torch.ones(1, *v.pixels.shape[-2:])
        sampled.append(turn(pad_to(part, side), v.k))
        pixels.append(turn(pad_to(v.pixels, side), v.k))
        targets.append(turn(pad_to(v.targets, side), v.k))
        valid.append(turn(pad_to(ones, side), v.k))
    logits = network.fuse_sampled(torch.stack(sampled), torch.stack(pixels).to(device))
    loss = instance_loss(logits, torch.stack(targets).to(device), torch.stack(valid).to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _write_resume(out, network, optimizer, epoch, history, sha, best_state, config) -> None:
    from ..training.checkpointing import _atomic_torch_save

    _atomic_torch_save(
        {
            "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "history_json": json.dumps(history),
            "encoder_sha256": sha,
            "best_state": best_state,
            "config_json": json.dumps(config.to_dict()),
        },
        out / RESUME_FILE,
    )


def _read_resume(out: Path, sha: str) -> dict | None:
    path = out / RESUME_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot resume from {path}: {exc}. Delete it to start over."
        ) from exc
    if state.get("encoder_sha256") != sha:
        raise CheckpointError(
            f"{path} is a training of a decoder for other SAM weights (sha256 "
            f"{str(state.get('encoder_sha256'))[:12]}...); use the same --model, another "
            "--out, or --restart"
        )
    return state


def write_card_entry(out: Path, session, entry: dict) -> Path:
    """Record the decoder in ``out/model.json`` and make sure ``out/model.pth`` holds the SAM
    weights it was trained on (a hard link or copy of the base weights when missing).

    An existing card (e.g. of `samscope finetune`) keeps all its keys and gains
    ``"instance_decoder"``. Raises CheckpointError when ``out/model.pth`` holds other weights.
    """
    from ..checkpoints import resolve_checkpoint, sha256_of
    from ..image_io import write_bytes

    target = out / "model.pth"
    _, source = resolve_checkpoint(session.model)
    source = Path(source).resolve()
    if target.exists():
        if target.resolve() != source and sha256_of(target) != entry["encoder_sha256"]:
            raise CheckpointError(
                f"{target} holds other SAM weights than those the decoder was trained on "
                f"({session.model}); use another --out, or --model {target}"
            )
    else:
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    card_path = out / CARD_FILE
    card = {}
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError):
            card = {}
    if not isinstance(card, dict) or not card:
        card = {"format": CARD_FORMAT, "base_model": str(session.model)}
    card[CARD_KEY] = entry
    return write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode())
