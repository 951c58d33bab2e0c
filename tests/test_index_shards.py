"""Sharded, resumable embedding and the index filled from it; recall@k against exact search; IVF-PQ settings."""

import hashlib
import json
import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from halluguard.config import RetrieverConfig
from halluguard.errors import ConfigError, HalluguardError
from halluguard.index_shards import SHARD_MANIFEST, build_sharded_index, encode_shards, shard_name
from halluguard.kb import Passage
from halluguard.retrieval import (KnowledgeIndex, build_faiss_index, exact_search, new_faiss_index, passage_text,
                                  recall_at_k, search_index)

DIM = 32


class FakeEncoder:
    """Unit vectors seeded by each text's hash: the same text always gives the same vector."""

    name, dim = "fake-encoder", DIM

    def __init__(self, fail_after_calls=None):
        self.calls, self.fail_after_calls = 0, fail_after_calls

    def encode(self, texts):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        out = np.stack([np.random.default_rng(s).standard_normal(DIM) for s in seeds]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def passages(n, salt=""):
    return [Passage(id=f"p{i}", text=f"passage {i}{salt}") for i in range(n)]


def retriever(kind="ivf", **overrides):
    cfg = OmegaConf.structured(RetrieverConfig)
    cfg.index, cfg.pq_m, cfg.recall_queries = kind, 8, 200
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def unit_vectors(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def outputs(folder):
    """Every file byte for byte, except the timings in index.json (they differ from run to run)."""
    found = files(folder)
    info = json.loads(found.pop("index.json"))
    for key in ("index_s", "exact_s", "speedup"):
        info["recall"].pop(key)
    return found, info


@pytest.mark.parametrize("kind,train_size", [("flat", 100_000), ("ivf", 100_000), ("ivf", 300), ("ivfpq", 400)])
def test_sharded_fill_equals_one_shot_build(tmp_path, kind, train_size):
    import faiss

    ps, cfg = passages(700), retriever(kind, train_size=train_size)
    sharded = build_sharded_index(FakeEncoder(), ps, tmp_path / "idx", cfg, shard_size=90, progress=False)
    vectors = FakeEncoder().encode([passage_text(p) for p in ps])
    one_shot = KnowledgeIndex.from_vectors(vectors, ps, FakeEncoder.name, cfg)
    queries = unit_vectors(50, DIM, 1)
    for got, want in zip(sharded.search_vectors(queries, 10), one_shot.search_vectors(queries, 10)):
        assert np.array_equal(got, want)
    assert bytes(faiss.serialize_index(sharded.index)) == bytes(faiss.serialize_index(one_shot.index))
    assert sharded.info.shards["count"] == 8 and sharded.info.kind == kind
    loaded = KnowledgeIndex.load(tmp_path / "idx")
    assert loaded.info == sharded.info and loaded.passages == ps
    assert np.array_equal(loaded.search_vectors(queries, 10)[1], sharded.search_vectors(queries, 10)[1])


def test_resume_after_an_interruption_gives_identical_vectors_and_index(tmp_path):
    ps, cfg = passages(500), retriever("ivf")
    build_sharded_index(FakeEncoder(), ps, tmp_path / "whole", cfg, shard_size=100, progress=False)
    want = outputs(tmp_path / "whole")

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_sharded_index(FakeEncoder(fail_after_calls=2), ps, out, cfg, shard_size=100, progress=False)
    # Only whole shards are left, and the manifest lists exactly those.
    assert sorted(p.name for p in (out / "shards").iterdir()) == [SHARD_MANIFEST, shard_name(0), shard_name(1)]
    assert sorted(json.loads((out / "shards" / SHARD_MANIFEST).read_text())["shards"]) == [shard_name(0), shard_name(1)]

    encoder = FakeEncoder()
    build_sharded_index(encoder, ps, out, cfg, shard_size=100, progress=False)
    assert encoder.calls == 3  # shards 2, 3 and 4 only
    assert outputs(out) == want

    (out / "shards" / shard_name(4)).unlink()  # a lost shard is encoded again, alone
    encoder = FakeEncoder()
    build_sharded_index(encoder, ps, out, cfg, shard_size=100, progress=False)
    assert encoder.calls == 1 and outputs(out) == want

    encoder = FakeEncoder()  # nothing left to encode: the index is rebuilt from the shards, byte for byte
    build_sharded_index(encoder, ps, out, cfg, shard_size=100, progress=False)
    assert encoder.calls == 0 and outputs(out) == want


def test_time_sliced_encoding_and_half_written_shards(tmp_path):
    ps, shard_dir = passages(250), tmp_path / "shards"
    assert not encode_shards(FakeEncoder(), ps, shard_dir, 50, progress=False, max_new_shards=2)
    (shard_dir / f".{shard_name(2)}.abc.tmp").write_bytes(b"half a shard")  # a killed run's temp file
    (shard_dir / shard_name(2)).write_bytes(b"not listed in the manifest")  # renamed, manifest not yet written
    encoder = FakeEncoder()
    assert encode_shards(encoder, ps, shard_dir, 50, progress=False)
    assert encoder.calls == 3 and not list(shard_dir.glob("*.tmp"))
    vectors = np.concatenate([np.load(shard_dir / shard_name(i)) for i in range(5)])
    assert np.array_equal(vectors, FakeEncoder().encode([passage_text(p) for p in ps]))


@pytest.mark.parametrize("change", ["text", "count", "shard_size", "encoder"])
def test_changed_inputs_are_refused_and_the_output_left_untouched(tmp_path, change):
    out, cfg = tmp_path / "idx", retriever("flat")
    build_sharded_index(FakeEncoder(), passages(300), out, cfg, shard_size=100, progress=False)
    before = files(out)
    ps, shard_size, encoder = passages(300), 100, FakeEncoder()
    if change == "text":
        ps[150] = Passage(id="p150", text="an edited passage")
    elif change == "count":
        ps = passages(301)
    elif change == "shard_size":
        shard_size = 60
    else:
        encoder.name = "another-encoder"
    with pytest.raises(HalluguardError, match=re.escape(str(out / "shards")) + ".*other inputs.*Delete"):
        build_sharded_index(encoder, ps, out, cfg, shard_size=shard_size, progress=False)
    assert encoder.calls == 0 and files(out) == before


def test_a_shard_changed_on_disk_is_an_error_naming_it(tmp_path):
    out, cfg = tmp_path / "idx", retriever("flat")
    build_sharded_index(FakeEncoder(), passages(200), out, cfg, shard_size=100, progress=False)
    shard = out / "shards" / shard_name(1)
    arr = np.load(shard)
    arr[0, 0] += 1
    np.save(shard, arr)
    with pytest.raises(HalluguardError, match=f"{shard_name(1)} changed after it was written"):
        build_sharded_index(FakeEncoder(), passages(200), out, cfg, shard_size=100, progress=False)


def test_exact_search_over_blocks_equals_a_full_sort():
    db, queries = unit_vectors(1000, DIM, 2), unit_vectors(30, DIM, 3)
    scores, ids = exact_search([db[:333], db[333:700], db[700:]], queries, 7, block_rows=100, query_batch=8)
    full = queries @ db.T
    want = np.argsort(-full, axis=1)[:, :7]
    assert np.array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), atol=1e-6)


def test_recall_is_one_for_flat_and_partial_for_a_tiny_nprobe():
    db, queries = unit_vectors(3000, DIM, 4), unit_vectors(100, DIM, 5)
    flat = recall_at_k(build_faiss_index(db, "flat"), queries, db, k=10)
    assert flat.recall == 1.0 and flat.k == 10 and flat.queries == 100 and flat.speedup > 0
    tiny_index = build_faiss_index(db, "ivf", nlist=64, nprobe=1)
    tiny = recall_at_k(tiny_index, queries, db, k=10)
    assert 0 < tiny.recall < 1
    reused = recall_at_k(tiny_index, queries, db, k=10, exact=exact_search(db, queries, 10))
    assert reused.recall == tiny.recall and reused.exact_s is None and reused.speedup is None
    wide = recall_at_k(build_faiss_index(db, "ivf", nlist=64, nprobe=64), queries, db, k=10)
    assert wide.recall == 1.0
    # Queries that are indexed rows: their own row is left out of both sides.
    rows = np.arange(0, 3000, 50)
    own = recall_at_k(build_faiss_index(db, "flat"), db[rows], [db[:1500], db[1500:]], k=5, own_rows=rows)
    assert own.recall == 1.0 and own.k == 5


def test_recall_counts_tied_results_as_found():
    db = np.repeat(unit_vectors(20, DIM, 6), 2, axis=0)  # every vector twice: the k-th result is a tie
    index = build_faiss_index(db[::-1].copy(), "flat")  # reversed, so ties are picked from the other copy
    report = recall_at_k(index, unit_vectors(20, DIM, 7), db[::-1].copy(), k=3)
    assert report.recall == 1.0


def test_sharded_build_records_recall_in_index_json(tmp_path):
    ps = passages(600)
    build_sharded_index(FakeEncoder(), ps, tmp_path / "flat", retriever("flat"), shard_size=200, progress=False)
    info = json.loads((tmp_path / "flat" / "index.json").read_text())
    assert info["recall"]["recall"] == 1.0 and info["recall"]["k"] == 10 and info["recall"]["queries"] == 200
    cfg = retriever("ivf", nlist=32, nprobe=1, recall_queries=0)
    kb_index = build_sharded_index(FakeEncoder(), ps, tmp_path / "ivf", cfg, shard_size=200, progress=False)
    assert kb_index.info.recall == {}
    cfg = retriever("ivf", nlist=32, nprobe=1)
    kb_index = build_sharded_index(FakeEncoder(), ps, tmp_path / "ivf2", cfg, shard_size=200, progress=False)
    assert 0 < kb_index.info.recall["recall"] < 1 and kb_index.info.recall["nprobe"] == 1


def test_pq_settings_that_cannot_work_name_the_key(compose, tmp_path):
    with pytest.raises(HalluguardError, match=r"retriever\.pq_m=50 must divide the encoder's dimension 384"):
        new_faiss_index("ivfpq", 384, 10_000, pq_m=50)
    with pytest.raises(HalluguardError, match=r"retriever\.pq_bits=8 needs at least 256 training vectors"):
        build_faiss_index(unit_vectors(200, DIM, 8), "ivfpq", nlist=4, pq_m=8)
    with pytest.raises(HalluguardError, match=r"retriever\.pq_m=5 must divide"):
        build_sharded_index(FakeEncoder(), passages(300), tmp_path, retriever("ivfpq", pq_m=5), progress=False)
    assert not list(tmp_path.iterdir())  # refused before any encoding
    with pytest.raises(ConfigError, match=r"retriever\.pq_bits.*1\.\.16"):
        compose(["retriever=minilm_ivfpq", "retriever.pq_bits=20"])
    for key in ("pq_m", "shard_size", "recall_k"):
        with pytest.raises(ConfigError, match=rf"retriever\.{key}.*positive"):
            compose([f"retriever.{key}=0"])
    with pytest.raises(ConfigError, match=r"retriever\.recall_queries"):
        compose(["retriever.recall_queries=-1"])
    cfg = compose(["retriever=minilm_ivfpq"])
    assert cfg.retriever.index == "ivfpq" and cfg.retriever.pq_m == 96 and cfg.retriever.pq_bits == 8


def test_ivfpq_through_the_regular_build_path():
    db = unit_vectors(2000, DIM, 9)
    kb_index = KnowledgeIndex.from_vectors(db, passages(2000), "fake-encoder", retriever("ivfpq"))
    assert (kb_index.info.kind, kb_index.info.pq_m, kb_index.info.pq_bits) == ("ivfpq", 8, 8)
    # Scores are approximate, but each vector's own row is still its best match nearly always.
    _, ids = search_index(kb_index.index, db[:200], 1)
    assert np.mean(ids[:, 0] == np.arange(200)) > 0.9
