"""Instance decoder with real MobileSAM embeddings: a short training that must beat an
untrained decoder, resuming, the CLI (`train-instance`, `segment --mode decoder`), bad input.

One module-scoped fixture embeds 3 nuclei images (256 x 256) once and trains for 2 short
epochs (stopped after the first and resumed); the other tests reuse it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.slow

N_IMAGES = 3


@pytest.fixture(scope="module")
def session(mobilesam_checkpoint):
    from sam_core.session import Session

    return Session("vit_t")


@pytest.fixture(scope="module")
def samples(nuclei_dir):
    from sam_core.evaluation.datasets import load_eval_set

    found = [s for s in load_eval_set(nuclei_dir).samples if s.shape == (256, 256)]
    return found[:N_IMAGES]


@pytest.fixture(scope="module")
def items(session, samples):
    from sam_core.instance import prepare_items

    return prepare_items(session, samples, work_side=1024)


def _foreground_dice(network, item) -> float:
    from sam_core.instance.training import item_maps

    predicted = item_maps(network, item)[0] > 0.5
    truth = item.labels > 0
    return 2 * np.count_nonzero(predicted & truth) / (predicted.sum() + truth.sum())


@pytest.fixture(scope="module")
def trained(session, items, tmp_path_factory):
    """(result, out folder, log lines, untrained dice): epoch 1, stop, resume for epoch 2."""
    import torch

    from sam_core.instance import DecoderConfig, InstanceDecoder, TrainConfig, train_decoder

    torch.manual_seed(0)
    untrained = _foreground_dice(InstanceDecoder(DecoderConfig()).eval(), items[-1])
    out = tmp_path_factory.mktemp("instance_run")
    config = TrainConfig(
        epochs=2, steps_per_epoch=12, batch_size=4, crop=96, lr=5e-3, warmup_steps=3
    )
    lines: list[str] = []
    first = train_decoder(
        session, items[:-1], items[-1:], out, config, log=lines.append, stop_after=1
    )
    assert len(first.history) == 1 and not first.entry["finished"]
    result = train_decoder(session, items[:-1], items[-1:], out, config, log=lines.append)
    return result, out, lines, untrained


def test_training_beats_an_untrained_decoder(trained, items):
    result, _, _, untrained = trained
    dice = _foreground_dice(result.decoder.network, items[-1])
    # untrained: ~0.2-0.35 (every pixel one side of 0.5); a trained one finds the nuclei
    assert dice > 0.75 and dice > untrained + 0.3, (dice, untrained)
    assert result.history[-1]["val_AP50"] > 0.3


def test_a_stopped_training_resumes(trained):
    result, out, lines, _ = trained
    assert any(line.startswith("resume") for line in lines)
    assert [h["epoch"] for h in result.history] == [1, 2]
    card = json.loads((out / "model.json").read_text())
    entry = card["instance_decoder"]
    assert entry["finished"] and entry["epochs_done"] == 2
    assert (out / "model.pth").is_file() and (out / "instance_decoder.pth").is_file()


def test_session_and_cli_segment_with_the_decoder(trained, session, samples, nuclei_dir, tmp_path):
    import tifffile

    from sam_core.cli import main

    result, out, _, _ = trained
    labels, records = session.instance_segment(samples[-1].image, decoder=result.decoder.path)
    assert labels.shape == (256, 256) and labels.max() == len(records) > 3
    assert {"segmentation", "area", "bbox", "predicted_iou", "point_coords"} <= set(records[0])
    image = nuclei_dir / "images" / f"{samples[-1].name}.png"
    if not image.is_file():  # names in a manifest may carry other suffixes
        image = next((nuclei_dir / "images").glob(f"{samples[-1].name}.*"))
    code = main(
        [
            "segment",
            str(image),
            "--out",
            str(tmp_path),
            "--model",
            str(out / "model.pth"),
            "--mode",
            "decoder",
            "-q",
        ]
    )
    assert code == 0
    written = tifffile.imread(next(tmp_path.glob("*_labels.tif")))
    assert written.shape == (256, 256) and written.max() == labels.max()


def test_decoder_plus_prompts_gives_sam_masks(trained, session, samples):
    from sam_core.instance import PromptSettings

    result, _, _, _ = trained
    labels, records = session.instance_segment(
        samples[-1].image,
        mode="decoder+prompts",
        decoder=result.decoder.path,
        prompts=PromptSettings(pred_iou_thresh=0.5, stability_score_thresh=0.5),
    )
    assert len(records) > 3 and labels.max() <= len(records)
    assert all(0.5 < r["predicted_iou"] <= 1.5 for r in records)


def test_decoder_of_another_encoder_is_refused(trained, session, samples, tmp_path):
    from sam_core.cli import main
    from sam_core.instance import InstanceDecoderError, load_decoder, save_decoder

    result, out, _, _ = trained
    other = load_decoder(result.decoder.path)
    other.encoder_sha256, other.encoder_model = "0" * 64, "vit_b"
    path = save_decoder(other, tmp_path / "other.pth")
    with pytest.raises(InstanceDecoderError, match="trained on the embeddings of 'vit_b'"):
        session.instance_segment(samples[0].image, decoder=path)
    code = main(
        [
            "segment",
            str(out),
            "--out",
            str(tmp_path / "o"),
            "--mode",
            "decoder",
            "--decoder",
            str(path),
            "-q",
        ]
    )
    assert code == 2


def test_unknown_mode_and_missing_decoder(session, samples):
    from sam_core.instance import InstanceDecoderError, InstanceModeError

    with pytest.raises(InstanceModeError, match="unknown mode"):
        session.instance_segment(samples[0].image, mode="grid")
    with pytest.raises(InstanceDecoderError, match="no instance decoder"):
        session.instance_segment(samples[0].image)


def test_binary_and_empty_labels(session, samples):
    from dataclasses import replace

    from sam_core.errors import ImageError
    from sam_core.instance import EmptyLabelsWarning, prepare_items
    from sam_core.label_check import BinaryLabelsError

    first = samples[0]
    binary = replace(first, label_image=(first.label_image > 0).astype(np.uint8))
    with pytest.raises(BinaryLabelsError, match="binary label image"):
        prepare_items(session, [binary], 1024)
    empty = replace(first, name="empty", label_image=np.zeros_like(first.label_image))
    with pytest.raises(ImageError, match="all 2 label images are empty"):
        prepare_items(session, [empty, replace(empty, name="empty2")], 1024)
    with pytest.warns(EmptyLabelsWarning, match="empty"):
        kept = prepare_items(session, [empty, first], 1024)
    assert [item.name for item in kept] == [first.name]


def test_train_instance_cli_refuses_resume_without_a_run(tmp_path, nuclei_dir):
    from sam_core.cli import main

    code = main(["train-instance", "--data", str(nuclei_dir), "--out", str(tmp_path), "--resume"])
    assert code == 2
    shutil.rmtree(tmp_path, ignore_errors=True)
