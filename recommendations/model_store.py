"""Model artifacts on disk: joblib files named by content hash, loaded once per process.

No import-time side effects: nothing is read until bundle_load is called.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import joblib

from recommendations.scoring import ModelBundle


class ArtifactIntegrityError(RuntimeError):
    """The artifact on disk is not the one the ModelVersion row recorded."""


_CACHE: dict[tuple[int, str], ModelBundle] = {}
_LOCK = threading.Lock()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_save(bundle: ModelBundle, directory: str | Path) -> tuple[str, str]:
    """Write the bundle atomically; returns (path, sha256). The file name is its hash."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, suffix=".joblib.tmp")
    os.close(fd)
    try:
        joblib.dump(bundle, tmp_name, compress=3)
        sha = file_sha256(Path(tmp_name))
        final = directory / f"bundle-{sha[:16]}.joblib"
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return str(final), sha


def bundle_load(model_version_id: int, path: str | Path, sha256: str) -> ModelBundle:
    """The bundle of a model version, cached per process by (id, sha256).

    Raises ArtifactIntegrityError when the file's hash differs from the recorded one, and
    FileNotFoundError when the file is missing: a wrong model must never score silently.
    """
    key = (int(model_version_id), sha256)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        path = Path(path)
        actual = file_sha256(path)
        if actual != sha256:
            raise ArtifactIntegrityError(
                f"model version {model_version_id}: artifact {path} has sha256 {actual}, "
                f"expected {sha256}; refusing to load it"
            )
        bundle = joblib.load(path)
        if not isinstance(bundle, ModelBundle):
            raise ArtifactIntegrityError(f"{path} does not hold a ModelBundle")
        _CACHE[key] = bundle
        return bundle


def cache_clear() -> None:
    with _LOCK:
        _CACHE.clear()
