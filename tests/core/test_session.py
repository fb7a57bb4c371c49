"""The core session: one reading rule, embeddings keyed on pixels, one tiling decision, one
lock; and the CLI (predict / segment / embed) reading files the same way as the API."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam_core.errors import ImageError
from sam_core.image_axes import guess_axes, interpret_axes
from sam_core.image_io import read_image, read_image_axes
from sam_core.session import (
    MEMORY_CACHE,
    OFFICIAL_AUTOMATIC_SETTINGS,
    Session,
    automatic_settings,
    embedding_key,
)
from sam_core.tiling import TiledEmbedding


# ------------------------------------------------------------------------------ axes rule
@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((64, 80), "YX"),
        ((96, 128, 5), "YXC"),
        ((64, 80, 3), "YXC"),
        ((30, 64, 80), "ZYX"),
        ((2, 64, 80), "ZYX"),
        ((5, 64, 80), "ZYX"),
        ((2, 3000), "YX"),
        ((7, 64, 80, 2), "ZYXC"),
    ],
)
def test_one_rule_for_channels_and_stacks(shape, axes):
    assert guess_axes(shape) == axes


def test_axes_given_by_the_user_or_the_file_move_channels_last():
    cyx = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    data, axes = interpret_axes(cyx, "CYX")
    assert axes == "YXC" and data.shape == (6, 7, 5) and data[2, 3, 4] == cyx[4, 2, 3]
    data, axes = interpret_axes(np.zeros((1, 4, 6, 7)), "TCYX")
    assert axes == "YXC" and data.shape == (6, 7, 4)
    with pytest.raises(ImageError, match=r"two channel axes|stack axes"):
        interpret_axes(np.zeros((2, 3, 6, 7)), "ZTYX")
    with pytest.raises(ImageError, match="4-D data"):
        guess_axes((2, 3, 64, 80))


def test_tiff_axes_metadata_is_used(tmp_path):
    tifffile.imwrite(tmp_path / "cyx.tif", np.zeros((30, 64, 80), np.uint16), imagej=True,
                     metadata={"axes": "CYX"})  # fmt: skip
    tifffile.imwrite(tmp_path / "zyx.tif", np.zeros((5, 64, 80), np.uint16), imagej=True,
                     metadata={"axes": "ZYX"})  # fmt: skip
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((96, 128, 5), np.uint16))
    assert read_image_axes(tmp_path / "cyx.tif")[0].shape == (64, 80, 30)
    assert read_image_axes(tmp_path / "cyx.tif")[1] == "YXC"
    assert read_image_axes(tmp_path / "zyx.tif")[1] == "ZYX"
    assert read_image_axes(tmp_path / "plain.tif")[1] == "YXC"
    assert read_image_axes(tmp_path / "zyx.tif", axes="CYX")[0].shape == (64, 80, 5)


def _oriented_jpeg(path, orientation: int = 6):
    """A JPEG stored 360 wide x 240 tall whose EXIF orientation 6 displays it 240 wide x 360
    tall, with a bright disc centred at displayed (x=170, y=260). Returns the displayed truth."""
    yy, xx = np.mgrid[0:360, 0:240]
    truth = (xx - 170) ** 2 + (yy - 260) ** 2 < 40**2
    displayed = np.where(truth, 230, 30).astype(np.uint8)
    stored = np.rot90(displayed, k=1)  # orientation 6 rotates 90° clockwise to display
    image = Image.fromarray(np.ascontiguousarray(stored)).convert("RGB")
    exif = image.getexif()
    exif[274] = orientation
    image.save(path, exif=exif, quality=95)
    return truth


def test_exif_orientation_is_applied(tmp_path):
    truth = _oriented_jpeg(tmp_path / "phone.jpg")
    pixels = read_image(tmp_path / "phone.jpg")
    assert pixels.shape[:2] == (360, 240)
    bright = pixels[..., 0] > 128
    assert (bright & truth).sum() / (bright | truth).sum() > 0.95


# ------------------------------------------------------------------------------ cache keys
def test_embedding_keys_follow_the_pixels_not_the_file():
    rng = np.random.default_rng(0)
    plane = rng.integers(0, 4000, (64, 80, 5), dtype=np.uint16)
    key = embedding_key(plane, 2, "auto", "sha", "fp32", None)
    assert key == embedding_key(plane.copy(), 2, "auto", "sha", "fp32", None)
    others = [
        embedding_key(np.rot90(plane).copy(), 2, "auto", "sha", "fp32", None),  # rotated
        embedding_key(plane, 1, "auto", "sha", "fp32", None),  # another channel
        embedding_key(plane, 2, "minmax", "sha", "fp32", None),  # another normalisation
        embedding_key(plane, 2, "auto", "other", "fp32", None),  # another model
        embedding_key(plane, 2, "auto", "sha", "bf16", None),
    ]
    assert len({key, *others}) == 6
    # the channel that is not chosen does not change what is embedded
    edited = plane.copy()
    edited[..., 4] += 1
    assert embedding_key(edited, 2, "auto", "sha", "fp32", None) == key


@pytest.mark.slow
def test_file_and_array_share_one_embedding_rotations_do_not(tmp_path, vit_t_model):
    session = Session("vit_t", predictor=_predictor(vit_t_model))
    truth = _oriented_jpeg(tmp_path / "phone.jpg")
    from_file = session.load(tmp_path / "phone.jpg")
    from_array = session.load(read_image(tmp_path / "phone.jpg"))
    assert session.embed(from_file) is session.embed(from_array)
    rotated = session.load(np.rot90(from_file.data).copy())
    assert session.embedding_key(rotated) != session.embedding_key(from_file)
    mask, _ = session.predict_best(session.embed(from_file), points=[[170, 260]])
    assert mask.shape == truth.shape
    assert (mask & truth).sum() / (mask | truth).sum() > 0.9


def _predictor(model):
    from sam_core import Predictor

    return Predictor(model, device="cpu")


def test_tiling_decision_and_zarr_cache(tmp_path, vit_t_model):
    session = Session(
        "vit_t",
        predictor=_predictor(vit_t_model),
        cache_dir=tmp_path / "cache",
        max_side=300,
        tile_shape=(256, 256),
        halo=(32, 32),
    )
    assert session.tile_layout((300, 200)) is None
    assert len(session.tile_layout((301, 200))) == 2
    image = session.load(np.random.default_rng(1).integers(0, 255, (320, 200), dtype=np.uint8))
    MEMORY_CACHE.clear()
    tiled = session.embed(image)
    assert isinstance(tiled, TiledEmbedding) and len(tiled.embeddings) == 2
    stores = list((tmp_path / "cache").glob("*.zarr"))
    assert [s.name for s in stores] == [f"{session.embedding_key(image)}.zarr"]
    MEMORY_CACHE.clear()  # a later process: read back from the zarr store, same features
    again = session.embed(image)
    assert again is not tiled
    for a, b in zip(again.embeddings, tiled.embeddings, strict=True):
        assert np.array_equal(a.features.numpy(), b.features.numpy())
    masks, _, _ = session.predict(again, points=[[100, 300]])
    assert masks.shape == (3, 320, 200)


def test_one_predictor_one_lock_across_threads(vit_t_model):
    from sam_core.session import predictor_lock, use_predictor

    predictor = _predictor(vit_t_model)
    use_predictor("vit_t-lock-test", predictor)
    a = Session("vit_t-lock-test")
    b = Session("vit_t-lock-test")
    assert a.predictor is b.predictor and a.lock is b.lock is predictor_lock(predictor)
    rng = np.random.default_rng(2)
    images = [a.load(rng.integers(0, 255, (96, 128), dtype=np.uint8)) for _ in range(2)]
    embeddings = [a.embed(image) for image in images]
    expected = [a.predict(e, points=[[40, 50]])[0] for e in embeddings]
    results: dict[int, list] = {0: [], 1: []}

    def work(i: int) -> None:
        session = Session("vit_t-lock-test")
        for _ in range(6):
            results[i].append(session.predict(embeddings[i], points=[[40, 50]])[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for i in range(2):
        assert len(results[i]) == 6
        assert all(np.array_equal(m, expected[i]) for m in results[i])


def test_prompts_on_one_embedding_reuse_its_decoder_terms(vit_t_model, monkeypatch):
    """The decoder's per-image terms (`MaskDecoder.share_image_side`) are computed once per
    embedding, however many `Session.predict` calls use it; a new embedding recomputes them."""
    from sam_core.session import use_predictor

    predictor = _predictor(vit_t_model)
    use_predictor("vit_t-shared-terms-test", predictor)
    session = Session("vit_t-shared-terms-test")
    decoder = predictor.model.mask_decoder
    calls = []
    share = decoder.share_image_side
    monkeypatch.setattr(decoder, "share_image_side", lambda *a: calls.append(1) or share(*a))
    rng = np.random.default_rng(3)
    images = [session.load(rng.integers(0, 255, (96, 128), dtype=np.uint8)) for _ in range(2)]
    first, second = (session.embed(image) for image in images)
    masks = [session.predict(first, points=[[40 + 5 * i, 50]])[0] for i in range(4)]
    assert len(calls) == 1
    assert first.to("cpu") is first  # why: set_embedding keeps the very object
    session.predict(second, points=[[40, 50]])
    assert len(calls) == 2
    # the reused terms give the masks of a fresh predictor
    fresh = _predictor(vit_t_model)
    fresh.set_embedding(first)
    assert np.array_equal(fresh.predict(points=[[55, 50]])[0], masks[3])


def test_channel_choice_is_checked_when_read(tmp_path):
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((96, 128, 5), np.uint16))
    session = Session("vit_t")
    with pytest.raises(ImageError, match=r"5 channels.*--channel"):
        session.load(tmp_path / "five.tif")
    with pytest.raises(ImageError, match="channel 7 does not exist"):
        session.load(tmp_path / "five.tif", channels=7)
    assert session.load(tmp_path / "five.tif", channels=2).selected_plane().shape == (96, 128)


def test_automatic_settings_resolved_in_one_place(tmp_path):
    assert automatic_settings(None, "vit_t")["pred_iou_thresh"] == 0.88
    assert automatic_settings({"pred_iou_thresh": 0.5}, "vit_t")["pred_iou_thresh"] == 0.5
    (tmp_path / "model.pth").write_bytes(b"")
    (tmp_path / "model.json").write_text(
        '{"format": "samscope-finetune-card/1", '
        '"automatic": {"pred_iou_thresh": 0.4, "stability_score_thresh": 0.8}}'
    )
    tuned = automatic_settings({"points_per_side": 8}, str(tmp_path / "model.pth"))
    assert (tuned["pred_iou_thresh"], tuned["stability_score_thresh"]) == (0.4, 0.8)
    assert tuned["points_per_side"] == 8 and tuned["thresholds_from"] == "model.json"
    assert set(OFFICIAL_AUTOMATIC_SETTINGS) <= set(tuned)


# ------------------------------------------------------------------ the CLI reads the same
@pytest.mark.slow
def test_many_channels_every_command(five_channel_tiff, tmp_path, mobilesam_checkpoint, capsys):
    from sam_core.cli import main

    path, truth = five_channel_tiff
    session = Session("vit_t")
    api, _ = session.predict_best(session.embed(session.load(path, channels=2)), [[70, 45]])
    assert (api & truth).sum() / (api | truth).sum() > 0.9

    out = tmp_path / "mask.png"
    args = ["predict", str(path), "--channel", "2", "--point", "70,45", "--out", str(out), "-q"]
    assert main(args) == 0
    cli = np.asarray(Image.open(out)) > 0
    assert (cli & api).sum() / (cli | api).sum() >= 0.99

    cache = tmp_path / "cache"
    assert main(["embed", str(path), "--channel", "2", "--cache", str(cache), "-q"]) == 0
    assert len(list(cache.glob("*.zarr"))) == 1  # one plane, not 96 slices of 128 x 5
    seg = ["segment", str(path), "--channel", "2", "--out", str(tmp_path / "seg"), "-q"]
    assert main([*seg, "--points-per-side", "8", "--cache", str(cache)]) == 0
    labels = tifffile.imread(tmp_path / "seg" / "five_labels.tif")
    assert labels.shape == (96, 128)
    best = max((labels == i).sum() and ((labels == i) & truth).sum() / ((labels == i) | truth).sum()
               for i in range(1, labels.max() + 1))  # fmt: skip
    assert best > 0.85

    assert main(["predict", str(path), "--point", "70,45", "--out", str(out), "-q"]) == 2
    assert "5 channels" in capsys.readouterr().err


@pytest.mark.slow
def test_channel_first_and_stacks_in_predict(tmp_path, mobilesam_checkpoint, capsys):
    from sam_core.cli import main

    stack = np.zeros((5, 64, 80), np.uint16)
    stack[3, 20:40, 30:50] = 1000
    path = tmp_path / "zyx.tif"
    tifffile.imwrite(path, stack)
    out = tmp_path / "m.png"
    assert main(["predict", str(path), "--point", "40,30", "--out", str(out), "-q"]) == 2
    assert "--slice" in capsys.readouterr().err
    assert main(["predict", str(path), "--slice", "3", "--point", "40,30", "--out", str(out)]) == 0
    mask = np.asarray(Image.open(out)) > 0
    assert mask.shape == (64, 80)
    box = np.zeros_like(mask)
    box[20:40, 30:50] = True
    assert (mask & box).sum() / (mask | box).sum() > 0.9
    # the same file named channel-first: channel 3 of a 5-channel image
    args = ["predict", str(path), "--axes", "CYX", "--channel", "3", "--point", "40,30"]
    assert main([*args, "--out", str(tmp_path / "c.png"), "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.png")) > 0, mask)


@pytest.mark.slow
def test_orientation_through_the_cli(tmp_path, mobilesam_checkpoint):
    from sam_core.cli import main

    truth = _oriented_jpeg(tmp_path / "phone.jpg")
    out = tmp_path / "mask.png"
    assert (
        main(["predict", str(tmp_path / "phone.jpg"), "--point", "170,260", "--out", str(out)]) == 0
    )
    mask = np.asarray(Image.open(out)) > 0
    assert mask.shape == (360, 240)
    assert (mask & truth).sum() / (mask | truth).sum() > 0.9
