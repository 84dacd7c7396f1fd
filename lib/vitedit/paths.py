"""Where the project lives on disk: repository root and its standard folders."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PROJECT_ENV = "VITEDIT_HOME"
_SYNC = threading.local()  # .deferred: inside synced_at_end(), atomic writes skip their fsync


def project_root() -> Path:
    """The repository root (``$VITEDIT_HOME`` if set, else the folder holding ``lib/``)."""
    env = os.environ.get(PROJECT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2]


def resolve(path: str | os.PathLike, base: Path | None = None) -> Path:
    """A user path made absolute: ``~`` expanded, relative paths taken from the project root."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (base or project_root()) / p
    return p


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if not getattr(_SYNC, "deferred", False):
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or an interrupt leaves no temporary file behind
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def synced_at_end() -> Iterator[None]:
    """Atomic writes inside skip their own fsync and are made durable together by one ``os.sync()``
    on the way out (also when the block fails). Each file still replaces its old version whole (a
    process that dies leaves the old or the new file, never a torn one). For a run folder's many
    small records: an in-process grid point writes ~20 files, whose 20 fsyncs cost more than its
    head edit (0.09 s a point on this disk)."""
    outer = getattr(_SYNC, "deferred", False)
    _SYNC.deferred = True
    try:
        yield
    finally:
        _SYNC.deferred = outer
        if not outer:
            os.sync()


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Rewrite an existing file's bytes where they are (no new file): what a full disk still allows
    when ``data`` is no longer than the file (a failure recorded over an 'ok' status)."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf: an undefined rate, a diverged number) as
    None, so the JSON written is standard (``NaN``/``Infinity`` are not JSON: browsers, ``jq`` and
    most readers refuse them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "ndim"):  # a numpy scalar or array
        return finite_json(obj.tolist())
    return obj


def json_text(obj: Any, indent: int | None = 2, default=str, **kw: Any) -> str:
    """The project's JSON outputs: standard JSON (no ``NaN``/``Infinity``: :func:`finite_json`)."""
    return json.dumps(finite_json(obj), indent=indent, default=default, allow_nan=False, **kw)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def git_commit() -> str:
    """The repository's HEAD commit, with "+changes" when lib/ or notebooks/ differ from it
    ("" outside a git checkout): what a recorded result was computed with."""
    import subprocess  # lazy: only provenance records call this

    def git(*args: str) -> str:
        try:
            r = subprocess.run(
                ["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return r.stdout.strip() if r.returncode == 0 else ""

    head = git("rev-parse", "HEAD")
    dirty = head and git("status", "--porcelain", "--", "lib", "notebooks")
    return f"{head}+changes" if dirty else head
