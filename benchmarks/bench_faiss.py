"""FAISS search against brute force, and IVF / IVF-PQ against exact search, for 10k, 100k and 1M passages.

For each size, in its own process (so each size's peak memory is its own):
* numpy brute force (``queries @ vectors.T`` + ``argpartition``) against FAISS ``IndexFlatIP``: the same
  top-k on every query (ids wherever the scores are not tied, scores within 1e-4), and the speed ratio;
* ``ivf`` and ``ivfpq`` built as halluguard builds them (``new_faiss_index`` + ``train_faiss_index``
  with the settings of conf/retriever/minilm_flat.yaml: nlist about 4*sqrt(n), train_size 100,000
  sampled with seed 0, pq_m 96, pq_bits 8): train and fill time, recall@10 against exact search
  (``recall_at_k``) and the speed ratio against flat, at the configured nprobe (16) and at 4x that;
* stored index size and the process's peak RSS.
Every search timing is the median of ``--repeats`` runs after one warm-up; ratios come from the same run.

Data: ``--real`` (the default when ../shared/data is there) makes the 10k case real: 10,000 HaluEval
knowledge paragraphs and HaluEval questions as queries, encoded by the embedded all-MiniLM-L6-v2 through
halluguard's resumable shards (cached under the halluguard cache, so only the first run encodes).
Larger sizes are synthetic 384-dim unit vectors, seed 0: ``clustered`` (default; n/100 random unit
centres, each vector its centre plus Gaussian noise of the same norm, so cluster-mates have cosine ~0.5
and queries are drawn the same way) or ``uniform`` (no structure at all: the worst case for IVF; by
default 100k is also run this way).

Usage: python benchmarks/bench_faiss.py [--sizes 10000,100000,1000000] [--queries 1000] [--repeats 3]
                                        [--data clustered|uniform] [--uniform 100000] [--no-real]
                                        [--out benchmarks/out/faiss.json]
       python benchmarks/bench_faiss.py --sharded 1000000 [--shard-size 50000]

``--sharded`` measures ``build_sharded_index`` instead (a synthetic clustered encoder stands in for the
model): the whole build's time and peak RSS for ivf and ivfpq, and a rerun with every shard done, which
must write the same index bytes. Its figures are added to ``--out`` under "sharded".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
HALUEVAL = ROOT.parent / "shared" / "data" / "halueval" / "qa_data.json"
DIM, K, SEED = 384, 10, 0
RETRIEVER = ROOT / "conf" / "retriever" / "minilm_flat.yaml"  # the IVF settings halluguard uses by default
TIE_TOL = 1e-4
REAL_SHARD = 2000


# ---------------------------------------------------------------- data

def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def synthetic(n: int, nq: int, kind: str) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(SEED)
    if kind == "uniform":
        return (unit(rng.standard_normal((n, DIM), dtype=np.float32)),
                unit(rng.standard_normal((nq, DIM), dtype=np.float32)), "synthetic uniform")
    centres = unit(rng.standard_normal((max(10, n // 100), DIM), dtype=np.float32))

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, DIM), dtype=np.float32)
        for start in range(0, m, 100_000):  # in chunks: one full-size noise array would double peak memory
            rows = min(100_000, m - start)
            noise = rng.standard_normal((rows, DIM), dtype=np.float32) / np.sqrt(DIM, dtype=np.float32)
            out[start:start + rows] = unit(centres[rng.integers(len(centres), size=rows)] + noise)
        return out

    return draw(n), draw(nq), "synthetic clustered"


def halueval_texts(n: int, nq: int) -> dict[str, list]:
    """HaluEval knowledge split into its paragraphs (joined without a space in the file), and its questions,
    as passages for halluguard's shard encoder."""
    from halluguard.kb import Passage

    records = [json.loads(line) for line in HALUEVAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    paragraphs: dict[str, None] = {}
    for r in records:
        for part in re.split(r"(?<=[.!?])(?=[A-Z])", r["knowledge"].strip()):
            if part.strip():
                paragraphs[part.strip()] = None
    texts = list(paragraphs)[:n]
    if len(texts) < n:
        raise SystemExit(f"HaluEval has {len(texts)} paragraphs, fewer than {n}: use --no-real")
    questions = list(dict.fromkeys(r["question"].strip() for r in records))[:nq]
    return {name: [Passage(id=str(i), text=t) for i, t in enumerate(items)]
            for name, items in (("passages", texts), ("questions", questions))}


def real_cache(name: str, count: int) -> Path:
    from halluguard.config import expand_path

    cache = expand_path(os.environ.get("HALLUGUARD_CACHE", "~/.cache/halluguard"))
    return cache / "bench_faiss" / f"halueval-{name}-{count}"


def encode_real(n: int, nq: int) -> None:
    """Encode (or resume encoding) the real texts once, in the parent: the size's own process then loads the
    vectors without the encoder, so its peak memory is the search's, not the model's."""
    from halluguard.index_shards import encode_shards
    from halluguard.retrieval import Encoder

    encoder = None
    for name, items in halueval_texts(n, nq).items():
        folder = real_cache(name, len(items))
        if not _cached(folder, items):
            encoder = encoder or Encoder("embedded:all-MiniLM-L6-v2")
            encode_shards(encoder, items, folder, REAL_SHARD)


def _cached(folder: Path, items) -> bool:
    from halluguard.index_shards import SHARD_MANIFEST, passages_sha256

    try:
        manifest = json.loads((folder / SHARD_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (manifest.get("passages_sha256") == passages_sha256(items)
            and len(manifest["shards"]) == -(-len(items) // REAL_SHARD))


def load_real(n: int, nq: int) -> tuple[np.ndarray, np.ndarray, str]:
    from halluguard.index_shards import shard_name

    out = []
    for name, items in halueval_texts(n, nq).items():
        folder = real_cache(name, len(items))
        if not _cached(folder, items):
            raise SystemExit(f"{folder} is not complete: run without --one to encode it")
        out.append(np.concatenate([np.load(folder / shard_name(i)) for i in range(-(-len(items) // REAL_SHARD))]))
    return out[0], out[1], "HaluEval paragraphs, MiniLM"


# ---------------------------------------------------------------- measuring

def timed(fn, repeats: int):
    """(median seconds over ``repeats`` after one warm-up, the last result)."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int, batch: int = 128):
    """Top-k by numpy: one matrix product per batch of queries, argpartition, then sort the k."""
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch):
        s = queries[start:start + batch] @ vectors.T
        top = np.argpartition(s, s.shape[1] - k, axis=1)[:, -k:]
        top_s = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        scores[start:start + batch] = np.take_along_axis(top_s, order, axis=1)
        ids[start:start + batch] = np.take_along_axis(top, order, axis=1)
    return scores, ids


def equal_topk(want_s, want_i, got_s, got_i) -> np.ndarray:
    """Per query: scores agree within TIE_TOL everywhere, and ids agree wherever the exact score is not tied
    with a neighbour (``want`` holds k+1 results, so a tie at the k-th place is seen)."""
    k = got_i.shape[1]
    gap_prev = np.abs(np.diff(want_s, axis=1, prepend=np.inf))[:, :k]
    gap_next = np.abs(np.diff(want_s, axis=1))[:, :k]
    untied = (gap_prev > TIE_TOL) & (gap_next > TIE_TOL)
    scores_ok = np.all(np.abs(want_s[:, :k] - got_s) <= TIE_TOL, axis=1)
    ids_ok = np.all((want_i[:, :k] == got_i) | ~untied, axis=1)
    return scores_ok & ids_ok


def stored_bytes(index) -> int:
    """Bytes the index keeps per its layout: codes (+ 8-byte ids and coarse centroids for IVF, + PQ codebooks)."""
    size = index.ntotal * index.code_size
    if hasattr(index, "nlist"):
        size += index.ntotal * 8 + index.nlist * index.d * 4
        if hasattr(index, "pq"):
            size += index.pq.M * index.pq.ksub * index.pq.dsub * 4
    return int(size)


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return float("nan")


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the address space, so it starts afresh at exec; ru_maxrss
    would also count the parent's memory at fork time (Linux keeps it across execve)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_size(n: int, nq: int, repeats: int, data: str, real: bool) -> dict:
    import faiss

    from halluguard.retrieval import (exact_search, new_faiss_index, recall_at_k, search_index, train_faiss_index,
                                      training_rows)

    cfg = OmegaConf.load(RETRIEVER)
    start = time.perf_counter()
    vectors, queries, source = load_real(n, nq) if real else synthetic(n, nq, data)
    nq = len(queries)
    res = {"n": n, "dim": DIM, "k": K, "queries": nq, "repeats": repeats, "data": source,
           "data_s": round(time.perf_counter() - start, 2), "rss_after_data_mb": round(rss_mb(), 1)}

    # 1. numpy brute force against FAISS flat
    np_s, (bf_s, bf_i) = timed(lambda: brute_force(vectors, queries, K + 1), repeats)
    start = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    flat_build = time.perf_counter() - start
    flat_s, (f_s, f_i) = timed(lambda: search_index(flat, queries, K), repeats)
    equal = equal_topk(bf_s, bf_i, f_s, f_i)
    single = queries[:20]
    flat_1q, _ = timed(lambda: [search_index(flat, q[None], K) for q in single], repeats)
    res["numpy"] = {"search_s": np_s, "ms_per_query": 1e3 * np_s / nq}
    res["flat"] = {"build_s": flat_build, "search_s": flat_s, "ms_per_query": 1e3 * flat_s / nq,
                   "ms_single_query": 1e3 * flat_1q / len(single), "speedup_vs_numpy": np_s / flat_s,
                   "equal_queries": int(equal.sum()), "checked_queries": len(equal),
                   "index_mb": stored_bytes(flat) / 2**20}
    flat = None  # frees its copy of the vectors before the IVF indexes are built

    # 2. IVF and IVF-PQ, built the way halluguard builds them; recall@10 against halluguard's exact search
    start = time.perf_counter()
    exact = exact_search(vectors, queries, K)
    res["exact_search_s"] = time.perf_counter() - start
    res["exact_equals_brute_force"] = int(equal_topk(bf_s, bf_i, *exact).sum())
    for kind in ("ivf", "ivfpq"):
        index = new_faiss_index(kind, DIM, n, nlist=cfg.nlist, pq_m=cfg.pq_m, pq_bits=cfg.pq_bits)
        start = time.perf_counter()
        rows = training_rows(n, cfg.train_size, SEED)
        train_faiss_index(index, vectors if rows is None else vectors[rows])
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        for b in range(0, n, 65_536):
            index.add(vectors[b:b + 65_536])
        add_s = time.perf_counter() - start
        entry = {"nlist": int(index.nlist), "train_s": train_s, "add_s": add_s, "build_s": train_s + add_s,
                 "index_mb": stored_bytes(index) / 2**20, "by_nprobe": []}
        for nprobe in (cfg.nprobe, 4 * cfg.nprobe):
            index.nprobe = min(nprobe, index.nlist)
            search_s, _ = timed(lambda ix=index: search_index(ix, queries, K), repeats)
            one_s, _ = timed(lambda ix=index: [search_index(ix, q[None], K) for q in single], repeats)
            recall = recall_at_k(index, queries, vectors, k=K, exact=exact)
            entry["by_nprobe"].append({
                "nprobe": int(index.nprobe), "search_s": search_s, "ms_per_query": 1e3 * search_s / nq,
                "ms_single_query": 1e3 * one_s / len(single), "speedup_vs_flat": flat_s / search_s,
                "speedup_vs_numpy": np_s / search_s, "recall_at_10": recall.recall})
        res[kind] = entry
        index = None
    res["peak_rss_mb"] = peak_rss_mb()
    return res


class ClusteredEncoder:
    """Stands in for a sentence encoder in the sharded build: each call (one shard) draws clustered unit
    vectors, seeded by its first text, so reruns give the same vectors."""

    name, dim = "synthetic-clustered", DIM

    def __init__(self, n: int):
        self.centres = unit(np.random.default_rng(SEED).standard_normal((max(10, n // 100), DIM), dtype=np.float32))

    def encode(self, texts):
        import hashlib

        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(texts[0].encode()).digest()[:8], "little"))
        noise = rng.standard_normal((len(texts), DIM), dtype=np.float32) / np.sqrt(DIM, dtype=np.float32)
        return unit(self.centres[rng.integers(len(self.centres), size=len(texts))] + noise)


def one_sharded(n: int, kind: str, shard_size: int) -> dict:
    """``build_sharded_index`` on n passages: time and peak memory of the whole build (encoding, training,
    filling, recall@k), then a rerun with every shard done, which must give the same index file."""
    import shutil
    import tempfile

    from halluguard.artifacts import sha256_file
    from halluguard.config import RetrieverConfig
    from halluguard.index_shards import build_sharded_index
    from halluguard.kb import Passage
    from halluguard.retrieval import INDEX_FILE

    cfg = OmegaConf.merge(OmegaConf.structured(RetrieverConfig), OmegaConf.load(RETRIEVER))
    cfg.index = kind
    passages = [Passage(id=f"p{i}", text=f"passage {i}") for i in range(n)]
    res = {"n": n, "kind": kind, "shard_size": shard_size, "rss_after_passages_mb": peak_rss_mb(),
           "vectors_mb": n * DIM * 4 / 2**20}
    out = Path(tempfile.mkdtemp(prefix="bench-faiss-shards-"))
    try:
        start = time.perf_counter()
        built = build_sharded_index(ClusteredEncoder(n), passages, out, cfg, shard_size=shard_size, seed=SEED,
                                    progress=False)
        res["build_s"] = time.perf_counter() - start
        res["peak_rss_mb"] = peak_rss_mb()
        res["recall"] = built.info.recall
        first = sha256_file(out / INDEX_FILE)
        start = time.perf_counter()
        build_sharded_index(ClusteredEncoder(n), passages, out, cfg, shard_size=shard_size, seed=SEED, progress=False)
        res["rerun_s"] = time.perf_counter() - start
        res["rerun_same_index_bytes"] = sha256_file(out / INDEX_FILE) == first
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return res


def sharded_table(rows: list[dict]) -> str:
    head = (f"{'passages':>9}  {'index':<6} {'shard':>7} {'build s':>8} {'rerun s':>8} {'same bytes':>10} "
            f"{'recall@10':>9} {'peak RSS MB':>11} {'passage list MB':>15} {'vectors MB':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['n']:>9,}  {r['kind']:<6} {r['shard_size']:>7,} {r['build_s']:>8.1f} {r['rerun_s']:>8.1f} "
                     f"{r['rerun_same_index_bytes']!s:>10} {r['recall'].get('recall', float('nan')):>9.3f} "
                     f"{r['peak_rss_mb']:>11,.0f} {r['rss_after_passages_mb']:>15,.0f} {r['vectors_mb']:>10,.0f}")
    return "\n".join(lines)


def run_sharded(args) -> int:
    """``--sharded``: only the sharded builds, added to ``--out`` under "sharded" (its other results are kept)."""
    rows = []
    for n in (int(x) for x in args.sharded.split(",") if x):
        for kind in ("ivf", "ivfpq"):
            print(f"== sharded build, {n:,} passages, {kind} ==", flush=True)
            cmd = [sys.executable, __file__, "--one-sharded", str(n), "--kind", kind, "--shard-size",
                   str(args.shard_size)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
            if proc.returncode:
                print(proc.stdout)
                raise SystemExit(f"the sharded {n:,} {kind} case failed (exit {proc.returncode})")
            rows.append(json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT "))))
    report = sharded_table(rows)
    print("\n" + report)
    path = Path(args.out)
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"benchmark": "faiss"}
    data["sharded"] = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": rows, "table": report,
                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average": os.getloadavg()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path} (key 'sharded')")
    return 0 if all(r["rerun_same_index_bytes"] for r in rows) else 1


# ---------------------------------------------------------------- report

def table(results: list[dict]) -> str:
    head = (f"{'passages':>9}  {'data':<27} {'index':<17} {'nprobe':>6} {'build s':>8} {'ms/q batch':>10} "
            f"{'ms/q one':>9} {'vs numpy':>9} {'vs flat':>8} {'recall@10':>10} {'index MB':>9} {'peak RSS MB':>11}")
    lines = [head, "-" * len(head)]
    for r in results:
        first = f"{r['n']:>9,}  {r['data']:<27}"
        pad = " " * len(first)
        f = r["flat"]
        lines.append(f"{first} {'numpy brute force':<17} {'-':>6} {'-':>8} {r['numpy']['ms_per_query']:>10.3f} "
                     f"{'':>9} {'1.0x':>9} {'':>8} {'exact':>10} {'':>9} {r['peak_rss_mb']:>11,.0f}")
        lines.append(f"{pad} {'faiss flat':<17} {'-':>6} {f['build_s']:>8.2f} {f['ms_per_query']:>10.3f} "
                     f"{f['ms_single_query']:>9.3f} {f['speedup_vs_numpy']:>8.1f}x {'1.0x':>8} "
                     f"{'exact':>10} {f['index_mb']:>9.1f}")
        lines.append(f"{pad} {'':<17} same top-{r['k']} as brute force: faiss flat on {f['equal_queries']}/"
                     f"{f['checked_queries']} queries, halluguard exact_search (recall's reference) on "
                     f"{r['exact_equals_brute_force']}/{f['checked_queries']}")
        for kind in ("ivf", "ivfpq"):
            e = r[kind]
            for j, p in enumerate(e["by_nprobe"]):
                name = f"{kind} (nlist {e['nlist']})" if j == 0 else ""
                build = f"{e['build_s']:>8.2f}" if j == 0 else f"{'':>8}"
                size = f"{e['index_mb']:>9.1f}" if j == 0 else f"{'':>9}"
                lines.append(f"{pad} {name:<17} {p['nprobe']:>6} {build} {p['ms_per_query']:>10.3f} "
                             f"{p['ms_single_query']:>9.3f} {p['speedup_vs_numpy']:>8.1f}x "
                             f"{p['speedup_vs_flat']:>7.1f}x {p['recall_at_10']:>10.3f} {size}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", choices=("clustered", "uniform"), default="clustered")
    parser.add_argument("--uniform", default="100000",
                        help="also run these sizes on uniform vectors, the worst case for IVF ('' for none)")
    parser.add_argument("--real", dest="real", action="store_true", default=HALUEVAL.is_file(),
                        help="the 10k case on real HaluEval paragraphs (default when ../shared/data is there)")
    parser.add_argument("--no-real", dest="real", action="store_false")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "faiss.json"))
    parser.add_argument("--sharded", default="", help="instead: build_sharded_index on this many synthetic "
                        "passages (ivf and ivfpq), added to --out under 'sharded'")
    parser.add_argument("--shard-size", type=int, default=50_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print its JSON
    parser.add_argument("--one-sharded", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="ivfpq", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        res = one_size(args.one, args.queries, args.repeats, args.data, args.real and args.one == 10_000)
        print("RESULT " + json.dumps(res))
        return 0
    if args.one_sharded:
        print("RESULT " + json.dumps(one_sharded(args.one_sharded, args.kind, args.shard_size)))
        return 0
    if args.sharded:
        return run_sharded(args)

    import faiss

    cfg = OmegaConf.load(RETRIEVER)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.real and 10_000 in sizes:
        encode_real(10_000, args.queries)
    cases = [(n, args.data, args.real) for n in sizes]
    cases += [(int(n), "uniform", False) for n in args.uniform.split(",") if n]
    results = []
    for n, data, real in cases:
        print(f"== {n:,} passages ({'real 10k' if real and n == 10_000 else data}) ==", flush=True)
        cmd = [sys.executable, __file__, "--one", str(n), "--queries", str(args.queries), "--repeats",
               str(args.repeats), "--data", data, "--real" if real else "--no-real"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode:
            print(proc.stdout)
            raise SystemExit(f"the {n:,} case failed (exit {proc.returncode})")
        res = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
        res["wall_s"] = round(time.perf_counter() - start, 1)
        results.append(res)
        print(f"   done in {res['wall_s']} s", flush=True)

    report = table(results)
    print("\n" + report)
    all_equal = all(r["flat"]["equal_queries"] == r["flat"]["checked_queries"] == r["exact_equals_brute_force"]
                    for r in results)
    print(f"\nFAISS flat equals numpy brute force on every query checked: {all_equal}")
    out = {
        "benchmark": "faiss", "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results,
        "flat_equals_brute_force": all_equal,
        "settings": {"k": K, "tie_tolerance": TIE_TOL, "seed": SEED, "data": args.data, "real_10k": args.real,
                     "retriever": {key: cfg[key] for key in ("nlist", "nprobe", "train_size", "pq_m", "pq_bits")}},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average": os.getloadavg()},
        "table": report,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())
