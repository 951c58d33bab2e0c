"""Stage outputs and their manifests.

Every stage writes ``runs/<exp>/<stage>/manifest.json``: the resolved config, its inputs with
sha256, its outputs with sha256, library versions, the git hash and its metrics. A later stage
finds its inputs through that manifest and refuses to run when a file is missing or was changed
after the manifest was written.

Writes are atomic. A stage builds its whole folder under a temporary name and renames it into
place only when everything succeeded, so an interrupted or failed stage never leaves a
half-written artifact - and the previous good output stays until the new one is complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from halluguard.errors import HalluguardError

MANIFEST = "manifest.json"
TRACKED_LIBRARIES = (
    "halluguard", "torch", "transformers", "peft", "trl", "accelerate", "sentence-transformers",
    "faiss-cpu", "datasets", "hydra-core", "omegaconf", "numpy",
)


# ---------------------------------------------------------------- atomic files

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), new_file_mode())  # mkstemp's 0600 would hide results from the user's group
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def write_jsonl(path: Path, rows) -> int:
    """Write rows as JSON Lines (atomically); returns the number written."""
    lines = [json.dumps(r, ensure_ascii=False, default=_json_default) for r in rows]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch arrays and scalars
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final`` in one rename.

    On any exception the temporary folder is removed and ``final`` (if it existed) is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- hashing

def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(b"\0")
        h.update(sha256_file(f).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- provenance

def library_versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> Optional[str]:
    """The project's git commit (``+dirty`` when the work tree has changes), or None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


# ---------------------------------------------------------------- manifest

@dataclass
class FileRecord:
    path: str
    sha256: str

    @classmethod
    def of(cls, path: Path) -> "FileRecord":
        return cls(path=str(Path(path).resolve()), sha256=sha256_path(path))


@dataclass
class Manifest:
    stage: str
    exp: str
    config: dict
    inputs: dict[str, FileRecord] = field(default_factory=dict)
    outputs: dict[str, FileRecord] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Optional[str]] = field(default_factory=library_versions)
    git: Optional[str] = field(default_factory=git_revision)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    duration_s: Optional[float] = None
    path: Path = field(default=Path(MANIFEST), compare=False)

    def add_input(self, name: str, path: Path) -> None:
        self.inputs[name] = FileRecord.of(path)

    def add_output(self, name: str, path: Path, stage_dir: Path) -> None:
        """Record an output by its path relative to the stage folder (the folder is renamed later)."""
        rel = Path(path).resolve().relative_to(Path(stage_dir).resolve())
        self.outputs[name] = FileRecord(path=rel.as_posix(), sha256=sha256_path(path))

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("path")
        return data

    def write(self, stage_dir: Path) -> Path:
        path = Path(stage_dir) / MANIFEST
        atomic_write_json(path, self.to_dict())
        self.path = path
        return path

    @classmethod
    def load(cls, stage_dir: Path) -> "Manifest":
        path = Path(stage_dir) / MANIFEST
        if not path.is_file():
            raise HalluguardError(
                f"no manifest at {path}: the '{Path(stage_dir).name}' stage has not run for this experiment "
                f"(run `halluguard {Path(stage_dir).name} exp={Path(stage_dir).parent.name}` first)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["inputs"] = {k: FileRecord(**v) for k, v in data.get("inputs", {}).items()}
            data["outputs"] = {k: FileRecord(**v) for k, v in data.get("outputs", {}).items()}
            manifest = cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise HalluguardError(f"manifest {path} is unreadable ({exc}); re-run that stage") from None
        manifest.path = path
        return manifest

    def output_path(self, name: str, verify: bool = True) -> Path:
        """Absolute path of output ``name``, checked against the sha256 the stage recorded."""
        if name not in self.outputs:
            raise HalluguardError(
                f"stage '{self.stage}' of experiment '{self.exp}' recorded no output '{name}' "
                f"(it has: {', '.join(self.outputs) or 'none'}); re-run `halluguard {self.stage}`"
            )
        record = self.outputs[name]
        path = self.path.parent / record.path
        if not path.exists():
            raise HalluguardError(f"input '{name}' of stage '{self.stage}' is missing: {path}; "
                                  f"re-run `halluguard {self.stage} exp={self.exp}`")
        if verify and sha256_path(path) != record.sha256:
            raise HalluguardError(
                f"input '{name}' at {path} does not match the sha256 in {self.path} (it changed after "
                f"the '{self.stage}' stage wrote it); re-run `halluguard {self.stage} exp={self.exp}`"
            )
        return path
