"""Where the project lives on disk: repository root and its standard folders."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PROJECT_ENV = "VITEDIT_HOME"


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
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
