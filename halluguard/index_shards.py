"""Knowledge bases too large to encode in one go: passages embedded in resumable shards, and a FAISS
index trained once on a sample and then filled shard by shard.

    from halluguard.index_shards import build_sharded_index
    kb_index = build_sharded_index(encoder, passages, "runs/big/index", cfg.retriever, seed=cfg.seed)

The output folder::

    <out>/shards/shard-00000.npy  float32 (rows, dim): passages [s*shard_size, (s+1)*shard_size)
    <out>/shards/manifest.json    what the shards encode (passage count and sha256, encoder, shard
                                  size) and, per finished shard, its rows and sha256
    <out>/index.faiss, passages.jsonl, index.json   what KnowledgeIndex.load reads; index.json also
                                  records the shards and the index's recall@k against exact search

Each shard is written to a temporary file and renamed into place, then listed in the manifest, so
an interrupted run leaves only whole shards; rerunning with the same inputs encodes only the
missing ones and gives byte-identical vectors and index. Shards of other inputs (passages, encoder,
shard size) are refused, never mixed in. Only one shard of vectors (plus the training sample) is
in memory at a time; the index itself still holds every vector (``ivf``) or its codes (``ivfpq``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from halluguard.artifacts import atomic_write_bytes, atomic_write_json, new_file_mode, write_jsonl
from halluguard.errors import HalluguardError
from halluguard.kb import Passage
from halluguard.retrieval import (INDEX_FILE, INFO_FILE, PASSAGES_FILE, Encoder, IndexInfo, KnowledgeIndex,
                                  gather_rows, new_faiss_index, passage_text, recall_at_k, train_faiss_index,
                                  training_rows)

log = logging.getLogger(__name__)

SHARDS_DIR, SHARD_MANIFEST = "shards", "manifest.json"
FORMAT = 1


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.npy"


def passages_sha256(passages: Sequence[Passage]) -> str:
    """One hash of what the encoder sees, in order: a changed, added or reordered passage changes it."""
    h = hashlib.sha256()
    for p in passages:
        h.update(p.id.encode("utf-8") + b"\0" + passage_text(p).encode("utf-8") + b"\n")
    return h.hexdigest()


def _fingerprint(encoder, passages: Sequence[Passage], shard_size: int) -> dict:
    """What the shards depend on; any difference from a folder's manifest means they are not reusable."""
    return {
        "format": FORMAT,
        "encoder": encoder.name,
        "dim": int(encoder.dim),
        "max_seq_length": getattr(getattr(encoder, "model", None), "max_seq_length", None),
        "passages": len(passages),
        "passages_sha256": passages_sha256(passages),
        "shard_size": int(shard_size),
    }


def _open_manifest(shard_dir: Path, fingerprint: dict) -> dict:
    """The folder's manifest when it matches ``fingerprint`` (a new one when there is none); else an error
    that names the folder and every setting that differs. Raises before anything is written."""
    path = shard_dir / SHARD_MANIFEST
    if not path.is_file():
        if any(shard_dir.glob("shard-*.npy")):
            raise HalluguardError(f"{shard_dir} holds shard files but no {SHARD_MANIFEST}, so what they encode is "
                                  "unknown: delete the folder to encode the passages again")
        return {**fingerprint, "shards": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise HalluguardError(f"{path} is not valid JSON ({exc}): delete {shard_dir} to encode again") from None
    def show(key, value):  # hashes cut to 12 characters: enough to see that they differ
        return f"{value[:12]}..." if key.endswith("sha256") and isinstance(value, str) else repr(value)

    changed = [f"{key} {show(key, manifest.get(key))} -> {show(key, value)}" for key, value in fingerprint.items()
               if manifest.get(key) != value]
    if changed:
        raise HalluguardError(
            f"{shard_dir} holds vectors of other inputs ({'; '.join(changed)}): the passages, encoder or shard "
            f"size changed since it was written. Delete {shard_dir} to encode again, or build into another folder")
    return manifest


def _save_shard(path: Path, vectors: np.ndarray) -> str:
    """Write one shard atomically (temp file, fsync, rename); returns the file's sha256."""
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _shard_is_whole(path: Path, rows: int, dim: int) -> bool:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return arr.shape == (rows, dim) and arr.dtype == np.float32


def encode_shards(encoder, passages: Sequence[Passage], shard_dir: Path, shard_size: int, progress: bool = True,
                  max_new_shards: Optional[int] = None) -> bool:
    """Encode the passages into ``shard_dir`` shard by shard, skipping shards already done.

    ``max_new_shards``: encode at most this many missing shards now (a time-sliced job; the next call goes
    on). Returns True when every shard is done. Refuses, with the folder named, shards of other inputs."""
    return _encode_shards(encoder, passages, shard_dir, shard_size, progress, max_new_shards)[0]


def _encode_shards(encoder, passages, shard_dir, shard_size, progress, max_new_shards) -> tuple[bool, dict]:
    if shard_size <= 0:
        raise HalluguardError(f"retriever.shard_size must be positive, got {shard_size}")
    if not passages:
        raise HalluguardError("the knowledge base has no passages to encode")
    shard_dir = Path(shard_dir)
    manifest = _open_manifest(shard_dir, _fingerprint(encoder, passages, shard_size))
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stale in shard_dir.glob(".shard-*.tmp"):  # left by a killed run; never listed in the manifest
        stale.unlink()
    atomic_write_json(shard_dir / SHARD_MANIFEST, manifest)

    n, dim = len(passages), int(encoder.dim)
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    todo = [i for i, (a, b) in enumerate(bounds)
            if not (shard_name(i) in manifest["shards"] and _shard_is_whole(shard_dir / shard_name(i), b - a, dim))]
    if len(todo) < len(bounds):
        log.info("%s: %d of %d shards already encoded", shard_dir, len(bounds) - len(todo), len(bounds))
    budget = len(todo) if max_new_shards is None else max(0, max_new_shards)
    done_rows = n - sum(bounds[i][1] - bounds[i][0] for i in todo)
    with tqdm(total=n, initial=done_rows, desc="encoding shards", unit="passage", disable=not progress) as bar:
        for i in todo[:budget]:
            a, b = bounds[i]
            texts = [passage_text(p) for p in passages[a:b]]
            if isinstance(encoder, Encoder):
                vectors = encoder.encode(texts, progress=progress, desc=shard_name(i))
            else:
                vectors = encoder.encode(texts)
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            if vectors.shape != (b - a, dim):
                raise HalluguardError(f"encoder '{encoder.name}' returned shape {vectors.shape} for {b - a} texts; "
                                      f"expected ({b - a}, {dim})")
            sha = _save_shard(shard_dir / shard_name(i), vectors)
            manifest["shards"][shard_name(i)] = {"rows": b - a, "sha256": sha}
            atomic_write_json(shard_dir / SHARD_MANIFEST, manifest)
            bar.update(b - a)
    return budget >= len(todo), manifest


class ShardFile:
    """One finished shard as a block of :data:`halluguard.retrieval.Vectors`: read whole when indexed and
    dropped after use. Not memory-mapped: mapped pages would stay resident (and count in RSS) until the
    kernel needs them, so reading every shard would look like holding every vector."""

    def __init__(self, path: Path, rows: int, dim: int, sha256: str):
        self.path, self.shape, self.sha256 = Path(path), (rows, dim), sha256

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return self.load()[key]

    def load(self, verify: bool = False) -> np.ndarray:
        """The vectors; ``verify`` checks them against the sha256 the manifest recorded when they were written."""
        data = self.path.read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != self.sha256:
            raise HalluguardError(f"{self.path} changed after it was written (sha256 differs from {SHARD_MANIFEST}): "
                                  "delete it and rerun to encode that shard again")
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.shape != self.shape:
            raise HalluguardError(f"{self.path} holds {arr.shape} vectors, {SHARD_MANIFEST} says {self.shape}: "
                                  "delete it and rerun to encode that shard again")
        return arr


def encode_resumable(encoder, passages: Sequence[Passage], cache_dir: Path, shard_size: int,
                     progress: bool = True) -> np.ndarray:
    """Every passage vector, encoded in resumable shards under ``cache_dir/passage_shards/<inputs>/``: a build
    of a large knowledge base that is interrupted re-encodes only the shards it had not finished. The folder
    is named after the encoder, the passages' sha256 and the shard size, so other inputs never meet it."""
    passages = list(passages)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(encoder.name)).strip("_")[:60]
    shard_dir = Path(cache_dir) / "passage_shards" / f"{slug}-{passages_sha256(passages)[:16]}-{int(shard_size)}"
    _, manifest = _encode_shards(encoder, passages, shard_dir, int(shard_size), progress, None)
    names = [shard_name(i) for i in range(math.ceil(len(passages) / int(shard_size)))]
    dim = int(encoder.dim)
    return np.concatenate([ShardFile(shard_dir / n, manifest["shards"][n]["rows"], dim,
                                     manifest["shards"][n]["sha256"]).load(verify=True) for n in names])


def build_sharded_index(encoder, passages: Sequence[Passage], out_dir: Path, retriever_cfg,
                        shard_size: Optional[int] = None, seed: int = 0, progress: bool = True) -> KnowledgeIndex:
    """Encode ``passages`` in resumable shards under ``out_dir/shards``, train the index kind of
    ``retriever_cfg.index`` once on a seeded sample of ``retriever_cfg.train_size`` vectors, fill it shard by
    shard, measure its recall@k against exact search, and save it in ``out_dir`` (``KnowledgeIndex.load``).

    ``encoder``: anything with ``.encode(texts) -> (n, dim) float32 unit vectors``, ``.name`` and ``.dim``.
    ``shard_size`` defaults to ``retriever_cfg.shard_size``."""
    out_dir = Path(out_dir)
    shard_dir = out_dir / SHARDS_DIR
    shard_size = int(shard_size or retriever_cfg.shard_size)
    passages = list(passages)
    n, dim = len(passages), int(encoder.dim)
    if not n:
        raise HalluguardError("the knowledge base has no passages to index")
    # Made first, so settings that cannot work (pq_m, nlist) fail before hours of encoding.
    index = new_faiss_index(retriever_cfg.index, dim, n, nlist=retriever_cfg.nlist, nprobe=retriever_cfg.nprobe,
                            pq_m=retriever_cfg.pq_m, pq_bits=retriever_cfg.pq_bits)
    _, manifest = _encode_shards(encoder, passages, shard_dir, shard_size, progress, None)
    names = [shard_name(i) for i in range(math.ceil(n / shard_size))]

    shards = [ShardFile(shard_dir / name, manifest["shards"][name]["rows"], dim, manifest["shards"][name]["sha256"])
              for name in names]

    # 1. train once, on a seeded sample gathered shard by shard
    if not index.is_trained:
        rows = training_rows(n, retriever_cfg.train_size, seed)
        train_faiss_index(index, gather_rows(shards, np.arange(n) if rows is None else rows))

    # 2. fill shard by shard: one shard of vectors in memory at a time
    for shard in tqdm(shards, desc="filling index", unit="shard", disable=not progress, leave=False):
        index.add(shard.load(verify=True))

    # 3. recall@k against exact search, on passage vectors as queries (their own row left out)
    recall = {}
    if retriever_cfg.recall_queries > 0 and n > 1:
        q_rows = np.random.default_rng(seed + 1).choice(n, size=min(retriever_cfg.recall_queries, n), replace=False)
        report = recall_at_k(index, gather_rows(shards, q_rows), shards, k=retriever_cfg.recall_k, own_rows=q_rows)
        recall = {**report.to_dict(), "query_source": "passage vectors, own row left out",
                  "nprobe": getattr(index, "nprobe", 0)}
        log.info("index %s: recall@%d %.3f against exact search, %.1fx faster", out_dir, report.k, report.recall,
                 report.speedup)

    info = IndexInfo.describe(index, encoder.name, n, recall=recall, shards={
        "folder": SHARDS_DIR, "count": len(names), "size": shard_size, "passages_sha256": manifest["passages_sha256"]})
    kb_index = KnowledgeIndex(index, passages, info)
    _save_atomically(kb_index, out_dir)
    return kb_index


def _save_atomically(kb_index: KnowledgeIndex, folder: Path) -> None:
    """Like ``KnowledgeIndex.save``, but each file replaced in one rename (the folder also holds the shards,
    so it cannot be swapped whole). ``index.json`` goes last: it describes the other two."""
    import faiss

    fd, tmp = tempfile.mkstemp(prefix=f".{INDEX_FILE}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        faiss.write_index(kb_index.index, tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp's 0600, as a plain write would not leave it
        os.replace(tmp, folder / INDEX_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    write_jsonl(folder / PASSAGES_FILE, (p.to_dict() for p in kb_index.passages))
    atomic_write_json(folder / INFO_FILE, asdict(kb_index.info))
