"""Dense retrieval: a sentence-transformers encoder and a FAISS index with its passages beside it.

Vectors are L2-normalised, so inner product = cosine similarity and scores read the same in
every index kind. ``flat`` (``IndexFlatIP``) is exact; ``ivf`` (``IndexIVFFlat``) is trained once
on a sample and searches ``nprobe`` of ``nlist`` cells, for knowledge bases too large to scan.

On disk (one folder): ``index.faiss``, ``passages.jsonl`` (row i of the index = line i),
``index.json`` (encoder, dimension, kind, sizes).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

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


def build_faiss_index(vectors: np.ndarray, kind: str = "flat", nlist: int = 0, nprobe: int = 16,
                      train_size: int = 100_000, batch_size: int = 65_536, seed: int = 0,
                      progress: bool = False):
    """An inner-product FAISS index over ``vectors`` (n, d), filled in batches."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if n == 0:
        raise HalluguardError("cannot build an index over zero vectors")
    kind = str(getattr(kind, "value", kind))
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = nlist or auto_nlist(n)
        if nlist > n:
            raise HalluguardError(f"retriever.nlist={nlist} is larger than the number of passages ({n})")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors if n <= train_size else vectors[rng.choice(n, size=train_size, replace=False)]
        index.train(sample)
        index.nprobe = min(nprobe, nlist)
    else:
        raise HalluguardError(f"unknown index kind '{kind}' (retriever.index: flat or ivf)")
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
                                  train_size=retriever_cfg.train_size, seed=seed, progress=progress)
        info = IndexInfo(encoder=encoder_name, dim=int(vectors.shape[1]), kind=kind, count=len(passages),
                         nlist=getattr(index, "nlist", 0), nprobe=getattr(index, "nprobe", 0))
        return cls(index, passages, info)

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
