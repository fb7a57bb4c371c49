"""``samscope fiftyone-install``: make the installed FiftyOne plugin visible to FiftyOne.

FiftyOne loads plugins from folders in its plugins directory (``FIFTYONE_PLUGINS_DIR``, else
``fo.config.plugins_dir``, by default ``~/fiftyone/__plugins__``). The plugin ships inside the
installed package ``samscope_fiftyone`` (``fiftyone.yml`` + ``__init__.py``); this command
links that package folder there as ``samscope-sam`` (or copies it with ``--copy``, or where
links are not allowed). Running it again changes nothing when the link or copy is current.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import SamscopeError

PLUGIN_FOLDER = "samscope-sam"
PLUGIN_NAME = "@samscope/sam"
PLUGINS_ENV = "FIFTYONE_PLUGINS_DIR"


class PluginInstallError(SamscopeError):
    """FiftyOne or the plugin package is missing, or the target folder is not ours."""


def add_fiftyone_install_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "fiftyone-install",
        help="make samscope's FiftyOne plugin visible to FiftyOne (link into its plugins dir)",
        description="Link (or copy) the installed samscope_fiftyone package folder into "
        f"FiftyOne's plugins directory as {PLUGIN_FOLDER}/: ${PLUGINS_ENV} if set, else "
        "fo.config.plugins_dir. Idempotent.",
    )
    parser.add_argument(
        "--plugins-dir",
        type=Path,
        help=f"plugins directory to use instead of ${PLUGINS_ENV} / fo.config.plugins_dir",
    )
    parser.add_argument(
        "--copy",
        action="store_true",
        help="copy the folder instead of linking it (copies must be refreshed after upgrades)",
    )
    parser.set_defaults(run=run_fiftyone_install)


def run_fiftyone_install(args: argparse.Namespace) -> int:
    source = plugin_source()
    plugins_dir, origin = plugins_directory(args.plugins_dir)
    print(install_plugin(source, plugins_dir, copy=args.copy))
    print(f"plugin {PLUGIN_NAME} is in {plugins_dir} ({origin})")
    if origin == "--plugins-dir" and os.environ.get(PLUGINS_ENV) != str(plugins_dir):
        print(f"FiftyOne looks there only with {PLUGINS_ENV}={plugins_dir}")
    print("check with: fiftyone plugins list; fiftyone operators list")
    return 0


def plugin_source() -> Path:
    """Folder of the installed ``samscope_fiftyone`` package (the one holding fiftyone.yml);
    raises PluginInstallError when FiftyOne or the package is missing."""
    if importlib.util.find_spec("fiftyone") is None:
        raise PluginInstallError(
            "FiftyOne is not installed in this environment; install it first, e.g. "
            "pip install 'samscope[fiftyone]'"
        )
    spec = importlib.util.find_spec("samscope_fiftyone")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in map(Path, folders):
        if (folder / "fiftyone.yml").is_file() and (folder / "__init__.py").is_file():
            return folder.resolve()
    raise PluginInstallError(
        "the samscope_fiftyone package (with fiftyone.yml) is not installed here; "
        "reinstall samscope"
    )


def plugins_directory(explicit: Path | None = None) -> tuple[Path, str]:
    """(FiftyOne's plugins directory, where that came from): the explicit folder, else
    $FIFTYONE_PLUGINS_DIR, else ``fo.config.plugins_dir`` (imports FiftyOne)."""
    if explicit is not None:
        return explicit.expanduser().absolute(), "--plugins-dir"
    if os.environ.get(PLUGINS_ENV):
        return Path(os.environ[PLUGINS_ENV]).expanduser().absolute(), f"${PLUGINS_ENV}"
    import fiftyone as fo

    return Path(fo.config.plugins_dir).expanduser().absolute(), "fo.config.plugins_dir"


def install_plugin(source: Path, plugins_dir: Path, copy: bool = False) -> str:
    """Link or copy `source` to ``plugins_dir/samscope-sam``; returns one line saying what
    was done. A current link or copy is left alone; a link elsewhere or an older copy of this
    plugin is replaced; anything else at that path is refused (PluginInstallError)."""
    target = plugins_dir / PLUGIN_FOLDER
    try:
        plugins_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PluginInstallError(f"cannot create plugins directory {plugins_dir}: {exc}") from None
    replaced = ""
    if target.is_symlink():
        if not copy and target.resolve() == source:
            return f"already linked: {target} -> {source}"
        replaced = f" (replaced a link to {os.readlink(target)})"
        target.unlink()
    elif target.exists():
        if not _is_our_plugin(target):
            raise PluginInstallError(
                f"{target} exists and is not samscope's plugin ({PLUGIN_NAME}); move it away "
                "or pass another --plugins-dir"
            )
        if copy and _same_files(source, target):
            return f"already copied (up to date): {target}"
        replaced = " (replaced an older copy)"
        shutil.rmtree(target)
    if not copy:
        try:
            target.symlink_to(source, target_is_directory=True)
            return f"linked {target} -> {source}{replaced}"
        except OSError:  # e.g. Windows without the right to create links: copy instead
            pass
    _copy_folder(source, target)
    return f"copied {source} to {target}{replaced}"


def _is_our_plugin(folder: Path) -> bool:
    """Whether `folder` holds a fiftyone.yml whose top-level name is PLUGIN_NAME."""
    manifest = folder / "fiftyone.yml"
    if not manifest.is_file():
        return False
    for line in manifest.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(":")
        if key == "name":
            return value.split("#")[0].strip().strip("\"'") == PLUGIN_NAME
    return False


def _plugin_files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def _same_files(a: Path, b: Path) -> bool:
    return _plugin_files(a) == _plugin_files(b)


def _copy_folder(source: Path, target: Path) -> None:
    """Copy into a temporary sibling, then rename: no half-copied plugin is ever visible."""
    staging = Path(tempfile.mkdtemp(prefix=f".{PLUGIN_FOLDER}-", dir=target.parent))
    try:
        shutil.copytree(
            source, staging / "plugin", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        (staging / "plugin").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
