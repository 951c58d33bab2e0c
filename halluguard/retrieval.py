"""Dense retrieval: a sentence-transformers encoder and a FAISS index with its passages beside it.

Vectors are L2-normalised, so inner product = cosine similarity and scores read the same in
every index kind. ``flat`` (``IndexFlatIP``) is exact; ``ivf`` (``IndexIVFFlat``) is trained once
on a sample and searches ``nprobe`` of ``nlist`` cells, for knowledge bases too large to scan;
``ivfpq`` (``IndexIVFPQ``) stores each vector as ``pq_m`` codes of ``pq_bits`` bits instead of
``dim`` floats, so its scores are approximate too. :func:`recall_at_k` measures how much of the
exact top-k an approximate index finds. Knowledge bases too large to encode in one go are built
by :func:`halluguard.index_shards.build_sharded_index`.

On disk (one folder): ``index.faiss``, ``passages.jsonl`` (row i of the index = line i),
``index.json`` (encoder, dimension, kind, sizes; for sharded builds also the shards and recall@k).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from tqdm.auto import tqdm

from halluguard.artifacts import atomic_write_json, write_jsonl
from halluguard.errors import HalluguardError
from halluguard.kb import Passage, iter_jsonl

log = logging.getLogger(__name__)

INDEX_FILE, PASSAGES_FILE, INFO_FILE = "index.faiss", "passages.jsonl", "index.json"


class Encoder:
    """Turns texts into unit-length float32 vectors with a sentence-transformers model."""

    def __init__(self, name_or_path: str, device: str = "cpu", max_seq_length: int = 256, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        from halluguard.models import resolve_encoder_source

        hf_logging.disable_progress_bar()
        self.name = name_or_path
        source = resolve_encoder_source(name_or_path)
        try:
            self.model = SentenceTransformer(source, device=device)
        except (OSError, ValueError) as exc:
            raise HalluguardError(f"could not load the encoder '{name_or_path}' ({exc}); give a local "
                                  "sentence-transformers folder or the embedded default embedded:all-MiniLM-L6-v2") from None
        self.model.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())

    @classmethod
    def from_config(cls, retriever_cfg) -> "Encoder":
        return cls(retriever_cfg.encoder, device=retriever_cfg.device,
                   max_seq_length=retriever_cfg.max_seq_length, batch_size=retriever_cfg.batch_size)

    def enable_cache(self, max_items: int = 200_000) -> None:
        """Remember vectors by text: the builders encode the same questions and responses in several
        steps (probe, filters, the refusal detector), and each distinct text then costs one pass."""
        self._cache: Optional[dict[str, np.ndarray]] = {}
        self._cache_max = max_items

    def encode(self, texts: Sequence[str], progress: bool = False, desc: str = "encoding") -> np.ndarray:
        cache = getattr(self, "_cache", None)
        if cache is None:
            return self._encode(texts, progress, desc)
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            if len(cache) + len(missing) > self._cache_max:
                cache.clear()
            cache.update(zip(missing, self._encode(missing, progress, desc)))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = cache[t]
        return out

    def _encode(self, texts: Sequence[str], progress: bool, desc: str) -> np.ndarray:
        import time

        start = time.perf_counter()
        try:
            return self._encode_batches(texts, progress, desc)
        finally:
            # What a build spends inside the encoder, to compare with everything else it does.
            self.texts_encoded = getattr(self, "texts_encoded", 0) + len(texts)
            self.encode_seconds = getattr(self, "encode_seconds", 0.0) + time.perf_counter() - start

    def _encode_batches(self, texts: Sequence[str], progress: bool, desc: str) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Chunks of several batches: the model sorts each chunk by length, and the bar still moves.
        chunk = self.batch_size * 8
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, leave=False) as bar:
            for start in range(0, len(texts), chunk):
                part = list(texts[start:start + chunk])
                out[start:start + len(part)] = self.model.encode(
                    part, batch_size=self.batch_size, convert_to_numpy=True,
                    normalize_embeddings=True, show_progress_bar=False,
                )
                bar.update(len(part))
        return out


# ---------------------------------------------------------------- FAISS

def auto_nlist(n: int) -> int:
    """About 4*sqrt(n) cells, but never fewer than 39 training points a cell (FAISS's minimum)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


INDEX_KINDS = ("flat", "ivf", "ivfpq")


def new_faiss_index(kind: str, dim: int, n: int, nlist: int = 0, nprobe: int = 16, pq_m: int = 48,
                    pq_bits: int = 8):
    """An empty inner-product index of ``kind`` for ``n`` vectors of ``dim`` (IVF kinds still need training).

    Settings that cannot work fail here with the config key to change, before any training."""
    import faiss

    kind = str(getattr(kind, "value", kind))
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind not in INDEX_KINDS:
        raise HalluguardError(f"unknown index kind '{kind}' (retriever.index: {', '.join(INDEX_KINDS)})")
    nlist = nlist or auto_nlist(n)
    if nlist > n:
        raise HalluguardError(f"retriever.nlist={nlist} is larger than the number of passages ({n})")
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        check_pq(dim, pq_m, pq_bits)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, pq_bits, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = min(nprobe, nlist)
    return index


def check_pq(dim: int, pq_m: int, pq_bits: int) -> None:
    """IVF-PQ splits each vector into ``pq_m`` equal sub-vectors of ``pq_bits``-bit codes."""
    if pq_m <= 0 or dim % pq_m:
        divisors = [m for m in range(1, dim + 1) if dim % m == 0 and m <= 96]
        raise HalluguardError(f"retriever.pq_m={pq_m} must divide the encoder's dimension {dim} "
                              f"(e.g. {', '.join(map(str, divisors[-6:]))})")
    if not 1 <= pq_bits <= 16:
        raise HalluguardError(f"retriever.pq_bits={pq_bits} must be in 1..16 (8 is usual)")


def training_rows(n: int, train_size: int, seed: int) -> Optional[np.ndarray]:
    """Rows an IVF index is trained on: None (all of them) when ``n <= train_size``, else a seeded sample.

    The row order matters to k-means, so one-shot and sharded builds share this to train identically."""
    if n <= train_size:
        return None
    return np.random.default_rng(seed).choice(n, size=train_size, replace=False)


def train_faiss_index(index, sample: np.ndarray) -> None:
    """Train an IVF index on ``sample``; too small a sample for PQ's codebooks names the key to change."""
    if index.is_trained:
        return
    pq = getattr(index, "pq", None)
    if pq is not None and len(sample) < 2 ** pq.nbits:
        raise HalluguardError(
            f"retriever.pq_bits={pq.nbits} needs at least {2 ** pq.nbits} training vectors, got {len(sample)} "
            "(the passages, or retriever.train_size): lower retriever.pq_bits or use retriever.index=ivf")
    index.train(np.ascontiguousarray(sample, dtype=np.float32))


def build_faiss_index(vectors: np.ndarray, kind: str = "flat", nlist: int = 0, nprobe: int = 16,
                      train_size: int = 100_000, batch_size: int = 65_536, seed: int = 0,
                      progress: bool = False, pq_m: int = 48, pq_bits: int = 8):
    """An inner-product FAISS index over ``vectors`` (n, d), filled in batches."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if n == 0:
        raise HalluguardError("cannot build an index over zero vectors")
    index = new_faiss_index(kind, dim, n, nlist=nlist, nprobe=nprobe, pq_m=pq_m, pq_bits=pq_bits)
    if not index.is_trained:
        rows = training_rows(n, train_size, seed)
        train_faiss_index(index, vectors if rows is None else vectors[rows])
    for start in tqdm(range(0, n, batch_size), desc="indexing", unit="batch", disable=not progress, leave=False):
        index.add(vectors[start:start + batch_size])
    return index


def search_index(index, queries: np.ndarray, k: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, row ids) for each query, searched in batches. Missing hits have id -1."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch_size):
        s, i = index.search(queries[start:start + batch_size], k)
        scores[start:start + len(s)], ids[start:start + len(i)] = s, i
    return scores, ids


Vectors = Union[np.ndarray, Sequence[np.ndarray]]
"""Passage vectors as one (n, d) array, or as consecutive blocks of rows: arrays, or anything with ``len``,
``shape`` and indexing (e.g. :class:`halluguard.index_shards.ShardFile`, read from disk when indexed)."""


def _parts(vectors: Vectors) -> list[np.ndarray]:
    return [vectors] if isinstance(vectors, np.ndarray) else list(vectors)


def gather_rows(vectors: Vectors, rows: np.ndarray) -> np.ndarray:
    """``vectors[rows]`` as float32, in the order of ``rows``, touching only the blocks that hold them."""
    rows = np.asarray(rows, dtype=np.int64)
    parts = _parts(vectors)
    starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    if rows.size and (rows.min() < 0 or rows.max() >= starts[-1]):
        raise HalluguardError(f"row ids must be in [0, {starts[-1]}), got {rows.min()}..{rows.max()}")
    out = np.empty((len(rows), parts[0].shape[1]), dtype=np.float32)
    which = np.searchsorted(starts, rows, side="right") - 1
    for part in np.unique(which):
        sel = np.flatnonzero(which == part)
        out[sel] = parts[part][rows[sel] - starts[part]]
    return out


def exact_search(vectors: Vectors, queries: np.ndarray, k: int, block_rows: int = 32_768,
                 query_batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` (scores, row ids) by numpy: the reference approximate indexes are measured
    against. Reads ``vectors`` once, block by block, so shards need not all be in memory."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    parts = _parts(vectors)
    k = min(k, sum(len(p) for p in parts))
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    offset = 0
    for part in parts:
        part = part[:]  # a shard on disk is read once here (a view for arrays in memory)
        for start in range(0, len(part), block_rows):
            block = np.asarray(part[start:start + block_rows], dtype=np.float32)
            for q0 in range(0, len(queries), query_batch):
                q1 = q0 + query_batch
                scores = queries[q0:q1] @ block.T
                if scores.shape[1] > k:
                    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
                else:
                    top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
                cand_s = np.concatenate([best_s[q0:q1], np.take_along_axis(scores, top, axis=1)], axis=1)
                cand_i = np.concatenate([best_i[q0:q1], top + offset + start], axis=1)
                keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
                best_s[q0:q1] = np.take_along_axis(cand_s, keep, axis=1)
                best_i[q0:q1] = np.take_along_axis(cand_i, keep, axis=1)
        offset += len(part)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


@dataclass
class RecallReport:
    """How an approximate index compares with exact search on the same queries."""

    k: int
    queries: int
    recall: float
    """Share of the index's top-k whose exact score reaches the exact k-th score: |index ∩ exact| / k, except
    that a hit tied with the exact k-th result counts (ties are an arbitrary pick, not a miss)."""
    index_s: float
    """Seconds the index took for all queries (after a warm-up)."""
    exact_s: Optional[float]
    """Seconds exact numpy search took for the same queries (None when the caller passed ``exact``)."""
    speedup: Optional[float]
    """exact_s / index_s."""

    def to_dict(self) -> dict:
        return {key: (round(v, 6) if isinstance(v, float) else v) for key, v in asdict(self).items()}


def _drop_own_row(scores: np.ndarray, ids: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's results without id ``own[row]`` (a query that is itself an indexed vector), cut to ``k``."""
    order = np.argsort(ids == own[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def recall_at_k(index, queries: np.ndarray, vectors: Vectors, k: int = 10, own_rows: Optional[np.ndarray] = None,
                tol: float = 1e-5, exact: Optional[tuple[np.ndarray, np.ndarray]] = None) -> RecallReport:
    """recall@k of ``index`` against exact inner-product search over ``vectors`` (the rows it indexes).

    ``own_rows``: when the queries are indexed vectors themselves, their row ids; each query's own row is
    left out of both result lists, since finding a vector itself says nothing about its neighbours.
    ``exact``: :func:`exact_search`'s (scores, ids) for these queries with k (+1 with ``own_rows``) results,
    when several indexes are compared on the same queries; it is then not searched (nor timed) again."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not len(queries):
        raise HalluguardError("recall@k needs at least one query vector")
    extra = 0 if own_rows is None else 1
    kk = min(k + extra, index.ntotal)
    k = kk - extra
    if k <= 0:
        raise HalluguardError(f"recall@k needs an index of more than {extra} vectors")
    search_index(index, queries[:8], kk)  # warm-up
    start = time.perf_counter()
    got_s, got_i = search_index(index, queries, kk)
    index_s = time.perf_counter() - start
    exact_s = None
    if exact is None:
        exact_search(vectors, queries[:8], kk)
        start = time.perf_counter()
        want_s, want_i = exact_search(vectors, queries, kk)
        exact_s = time.perf_counter() - start
    else:
        want_s, want_i = exact
        if want_i.shape != (len(queries), kk):
            raise HalluguardError(f"exact results have shape {want_i.shape}, expected {(len(queries), kk)}")
    if own_rows is not None:
        own = np.asarray(own_rows, dtype=np.int64)
        (got_s, got_i), (want_s, want_i) = _drop_own_row(got_s, got_i, own, k), _drop_own_row(want_s, want_i, own, k)
    # Exact scores of what the index returned (PQ scores are approximate), compared with the exact k-th.
    found = got_i >= 0
    true = np.full(got_i.shape, -np.inf, dtype=np.float32)
    q_rep = np.broadcast_to(queries[:, None, :], (*got_i.shape, queries.shape[1]))[found]
    true[found] = np.einsum("ij,ij->i", gather_rows(vectors, got_i[found]), q_rep)
    hits = found & (true >= want_s[:, k - 1:k] - tol)
    return RecallReport(k=k, queries=len(queries), recall=float(hits.mean()), index_s=index_s, exact_s=exact_s,
                        speedup=None if exact_s is None else exact_s / max(index_s, 1e-12))


@dataclass
class Hit:
    passage: Passage
    score: float
    rank: int


@dataclass
class IndexInfo:
    encoder: str
    dim: int
    kind: str
    count: int
    nlist: int = 0
    nprobe: int = 0
    metric: str = "inner_product (cosine on unit vectors)"
    pq_m: int = 0
    pq_bits: int = 0
    shards: dict = field(default_factory=dict)
    """Sharded builds: the shard folder, shard count and size, and the sha256 of the passages they encode."""
    recall: dict = field(default_factory=dict)
    """Sharded builds: :class:`RecallReport` of the index against exact search."""

    @classmethod
    def describe(cls, index, encoder: str, count: int, **extra) -> "IndexInfo":
        """The info of a built FAISS ``index``: its kind and settings read from the index itself."""
        pq = getattr(index, "pq", None)
        kind = "flat" if not hasattr(index, "nlist") else ("ivfpq" if pq is not None else "ivf")
        return cls(encoder=encoder, dim=int(index.d), kind=kind, count=count, nlist=getattr(index, "nlist", 0),
                   nprobe=getattr(index, "nprobe", 0), pq_m=int(pq.M) if pq is not None else 0,
                   pq_bits=int(pq.nbits) if pq is not None else 0, **extra)


class KnowledgeIndex:
    """A FAISS index plus the passages its rows stand for."""

    def __init__(self, index, passages: list[Passage], info: IndexInfo):
        if index.ntotal != len(passages):
            raise HalluguardError(f"index has {index.ntotal} vectors but {len(passages)} passages")
        self.index, self.passages, self.info = index, passages, info

    @classmethod
    def build(cls, passages: list[Passage], encoder: Encoder, retriever_cfg, seed: int = 0,
              progress: bool = True) -> "KnowledgeIndex":
        if not passages:
            raise HalluguardError("the knowledge base has no passages to index")
        vectors = encoder.encode([passage_text(p) for p in passages], progress=progress, desc="encoding passages")
        return cls.from_vectors(vectors, passages, encoder.name, retriever_cfg, seed=seed, progress=progress)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, passages: list[Passage], encoder_name: str, retriever_cfg,
                     seed: int = 0, progress: bool = False) -> "KnowledgeIndex":
        """Index already-encoded passages (e.g. a subset of a knowledge base, without re-encoding)."""
        if not passages:
            raise HalluguardError("the knowledge base has no passages to index")
        kind = str(getattr(retriever_cfg.index, "value", retriever_cfg.index))
        index = build_faiss_index(vectors, kind=kind, nlist=retriever_cfg.nlist, nprobe=retriever_cfg.nprobe,
                                  train_size=retriever_cfg.train_size, seed=seed, progress=progress,
                                  pq_m=retriever_cfg.pq_m, pq_bits=retriever_cfg.pq_bits)
        return cls(index, passages, IndexInfo.describe(index, encoder_name, len(passages)))

    def hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
        """Turn ``search_vectors`` output into Hit lists (dropping FAISS's -1 padding)."""
        return [[Hit(self.passages[j], float(s), r) for r, (s, j) in enumerate(zip(row_s, row_i)) if j >= 0]
                for row_s, row_i in zip(scores, ids)]

    def search_vectors(self, queries: np.ndarray, k: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        return search_index(self.index, queries, k, batch_size)

    def search(self, questions: Sequence[str], encoder: Encoder, k: int) -> list[list[Hit]]:
        if encoder.name != self.info.encoder:
            raise HalluguardError(f"the index was built with encoder '{self.info.encoder}' but queries use "
                                  f"'{encoder.name}'; rebuild the index or set retriever.encoder to match")
        return self.hits(*self.search_vectors(encoder.encode(questions), k, encoder.batch_size))

    def save(self, folder: Path) -> None:
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        write_jsonl(folder / PASSAGES_FILE, (p.to_dict() for p in self.passages))
        atomic_write_json(folder / INFO_FILE, asdict(self.info))

    @classmethod
    def load(cls, folder: Path, nprobe: Optional[int] = None) -> "KnowledgeIndex":
        import faiss

        folder = Path(folder)
        for name in (INDEX_FILE, PASSAGES_FILE, INFO_FILE):
            if not (folder / name).is_file():
                raise HalluguardError(f"index folder {folder} has no {name}; rebuild it with `halluguard build`")
        info = IndexInfo(**json.loads((folder / INFO_FILE).read_text(encoding="utf-8")))
        index = faiss.read_index(str(folder / INDEX_FILE))
        if nprobe is not None and hasattr(index, "nprobe"):
            index.nprobe = min(nprobe, index.nlist)
        passages = [Passage(**obj) for _, obj in iter_jsonl(folder / PASSAGES_FILE)]
        return cls(index, passages, info)


def passage_text(p: Passage) -> str:
    """What the encoder sees of a passage: its title (context for short chunks), then its text."""
    return f"{p.title}\n{p.text}" if p.title else p.text
