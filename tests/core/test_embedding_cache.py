"""The zarr embedding cache: round trips, provenance checks, resuming, repair of damage.

Images are 128² crops of real data (the encoder still sees 1024², ~1-3 s per embedding on a
busy 2-core CPU); `CountingPredictor` counts encoder runs so each test can tell a read from a
recomputation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from sam_core import EmbeddingError, ImageEmbedding, ImageError, Predictor, build_sam
from sam_core.embedding_cache import EmbeddingCache, data_hash
from sam_core.image_io import read_image
from sam_core.tiling import TiledEmbedding

pytestmark = pytest.mark.slow


class CountingPredictor(Predictor):
    """A real Predictor that counts how often the image encoder runs."""

    runs = 0

    def compute_embedding(self, image, channels=None, normalization="auto"):
        self.runs += 1
        return super().compute_embedding(image, channels, normalization)


@pytest.fixture(scope="module")
def predictor(vit_t_model) -> CountingPredictor:
    return CountingPredictor(vit_t_model, device="cpu")


@pytest.fixture(scope="module")
def nuclei(nuclei_dir) -> np.ndarray:
    return read_image(nuclei_dir / "images/00071198d059ba7f.png")


@pytest.fixture(scope="module")
def stack(shared_dir) -> np.ndarray:
    """(3, 128, 128) uint8: crops of three EM slices."""
    folder = shared_dir / "data/isbi2012_em_membranes/images"
    return np.stack([read_image(folder / f"slice_0{i}.png")[:128, :128] for i in range(3)])


def _same(a: ImageEmbedding, b: ImageEmbedding) -> None:
    assert a.geometry == b.geometry and a.model_name == b.model_name
    np.testing.assert_array_equal(a.features.numpy(), b.features.numpy())


def test_image_round_trip_records_provenance_and_reads_without_recomputing(
    tmp_path, predictor, nuclei
):
    image = nuclei[:128, :128]
    path = tmp_path / "img.zarr"
    before = predictor.runs
    first = EmbeddingCache(path, predictor).embedding(image)
    assert predictor.runs == before + 1
    reopened = EmbeddingCache(path, predictor)
    second = reopened.embedding(image)
    assert predictor.runs == before + 1  # read back, not recomputed
    assert isinstance(second, ImageEmbedding) and not reopened.repairs
    _same(first, second)
    _same(first, predictor.compute_embedding(image))  # what is stored is the real embedding

    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    assert attrs["model"]["name"] == "vit_t"
    assert attrs["model"]["weights_sha256"] == predictor.model.checkpoint_sha256
    assert attrs["data"] == {
        "kind": "image",
        "shape": [128, 128],
        "dtype": "|u1",
        "sha256": data_hash(image),
    }
    assert attrs["tiling"] is None
    assert attrs["preprocessing"] == {"channels": None, "normalization": "auto"}
    assert attrs["samscope_version"] and attrs["format"] == 1
    stored = zarr.open_group(str(path), mode="r")
    assert stored["original_hw"][0, 0].tolist() == [128, 128]
    assert stored["input_hw"][0, 0].tolist() == [1024, 1024]


def test_another_model_or_image_recomputes_or_errors(tmp_path, predictor, nuclei):
    image = nuclei[:128, :128]
    path = tmp_path / "img.zarr"
    EmbeddingCache(path, predictor).embedding(image)

    other = build_sam("vit_t")  # random weights
    other.name = "vit_t"
    other.checkpoint_sha256 = "0" * 64  # same name, other weights
    other_predictor = Predictor(other, device="cpu")
    with pytest.raises(EmbeddingError, match="model: stored"):
        EmbeddingCache(path, other_predictor, on_mismatch="error").embedding(image)
    recomputed = EmbeddingCache(path, other_predictor).embedding(image)
    _same(recomputed, other_predictor.compute_embedding(image))
    assert zarr.open_group(str(path), mode="r").attrs["model"]["weights_sha256"] == "0" * 64

    other_image = nuclei[128:, 128:]
    with pytest.raises(EmbeddingError, match="data"):
        EmbeddingCache(path, other_predictor, on_mismatch="error").embedding(other_image)
    before = predictor.runs
    fresh = EmbeddingCache(path, predictor).embedding(other_image)
    assert predictor.runs == before + 1
    _same(fresh, predictor.compute_embedding(other_image))


def test_stack_resumes_after_an_interruption_and_repairs_damage(tmp_path, predictor, stack):
    path = tmp_path / "stack.zarr"

    class Stop(Exception):
        pass

    def stop_after_first(done: int, total: int) -> None:
        if done == 1:
            raise Stop

    with pytest.raises(Stop):
        EmbeddingCache(path, predictor).compute_all(stack, progress=stop_after_first)
    seen = []
    before = predictor.runs
    cache = EmbeddingCache(path, predictor)
    assert cache.compute_all(stack, progress=lambda d, t: seen.append((d, t))) == 2
    assert predictor.runs == before + 2  # slice 0 was kept
    assert seen == [(1, 3), (2, 3), (3, 3)]
    originals = [EmbeddingCache(path, predictor).slice_embedding(stack, i) for i in range(3)]
    assert predictor.runs == before + 2
    _same(originals[2], predictor.compute_embedding(stack[2]))
    before = predictor.runs

    # a missing "done" flag: that slice is recomputed, the others are read
    (path / "done" / "c" / "1" / "0").unlink()
    cache = EmbeddingCache(path, predictor)
    assert cache.compute_all(stack) == 1

    # a truncated chunk of slice 2: detected, recomputed, equal to the original
    chunk = path / "features" / "c" / "2" / "0" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:1000])
    cache = EmbeddingCache(path, predictor)
    _same(cache.slice_embedding(stack, 2), originals[2])
    assert any("entry 2" in r for r in cache.repairs)

    # flipped bytes with the right length: the checksum catches them
    data = bytearray(chunk.read_bytes())
    data[5000:5008] = b"\x00\x00\x80\x7f" * 2
    chunk.write_bytes(bytes(data))
    cache = EmbeddingCache(path, predictor)
    _same(cache.slice_embedding(stack, 2), originals[2])
    assert any("checksum" in r for r in cache.repairs)
    assert predictor.runs == before + 3

    # garbage in the group's zarr.json: the whole store is rebuilt
    (path / "zarr.json").write_text("{ not json")
    cache = EmbeddingCache(path, predictor)
    assert cache.compute_all(stack) == 3
    assert cache.repairs and json.loads((path / "zarr.json").read_text())["attributes"]["data"]
    _same(EmbeddingCache(path, predictor).slice_embedding(stack, -1), originals[2])


def test_tiled_image_is_stored_per_tile(tmp_path, predictor, nuclei):
    image = nuclei[:128, :]  # 128 x 256: two tiles of 128² with a 32-pixel halo
    path = tmp_path / "tiled.zarr"
    first = EmbeddingCache(path, predictor, tile_shape=(128, 128), halo=(32, 32)).embedding(image)
    assert isinstance(first, TiledEmbedding) and len(first.embeddings) == 2
    assert first.embeddings[0].original_hw == (128, 160)
    before = predictor.runs
    again = EmbeddingCache(path, predictor, tile_shape=(128, 128), halo=(32, 32)).embedding(image)
    assert predictor.runs == before
    for a, b in zip(first.embeddings, again.embeddings, strict=True):
        _same(a, b)
    assert zarr.open_group(str(path), mode="r").attrs["tiling"] == {
        "tile_shape": [128, 128],
        "halo": [32, 32],
        "n_tiles": 2,
    }
    with pytest.raises(EmbeddingError, match="tiling"):
        EmbeddingCache(path, predictor, tile_shape=(64, 64), on_mismatch="error").embedding(image)


def test_bad_paths_and_inputs_are_refused(tmp_path, predictor, nuclei):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(EmbeddingError, match="does not look like an embedding cache"):
        EmbeddingCache(foreign, predictor).embedding(nuclei[:64, :64])
    assert (foreign / "holiday.jpg").exists()
    with pytest.raises(ImageError, match="stack"):
        EmbeddingCache(tmp_path / "a.zarr", predictor).embedding(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ImageError, match="stack must be"):
        EmbeddingCache(tmp_path / "b.zarr", predictor).compute_all(nuclei)
    with pytest.raises(ValueError, match="on_mismatch"):
        EmbeddingCache(tmp_path / "c.zarr", predictor, on_mismatch="ignore")
