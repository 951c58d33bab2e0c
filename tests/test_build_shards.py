"""A knowledge base larger than retriever.shard_size: `halluguard build` encodes its passages in resumable
shards in the cache, and a second build reuses them."""

import json

from halluguard.stages import build


def _build(compose, tmp_path, exp, *extra):
    cfg = compose([f"paths.runs={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}", f"exp={exp}",
                   "builder.max_questions=60", *extra])
    manifest = build.run(cfg)
    return json.loads((manifest.path.parent / "stats.json").read_text())


def test_a_large_kb_is_encoded_in_shards_that_a_second_build_reuses(compose, tmp_path):
    plain = _build(compose, tmp_path, "plain")
    assert not (tmp_path / "cache" / "passage_shards").exists()  # 169 passages < 50,000: one pass, no shards

    sharded = _build(compose, tmp_path, "sharded", "retriever.shard_size=50")
    (folder,) = (tmp_path / "cache" / "passage_shards").iterdir()
    assert sorted(p.name for p in folder.glob("shard-*.npy")) == [f"shard-0000{i}.npy" for i in range(4)]
    assert folder.name.endswith("-50") and "all-MiniLM-L6-v2" in folder.name
    # The same knowledge base, whichever way it was encoded.
    assert sharded["final_label"] == plain["final_label"] and sharded["cases"] == plain["cases"]
    assert sharded["pairs"]["train"]["by_kind"] == plain["pairs"]["train"]["by_kind"]

    again = _build(compose, tmp_path, "again", "retriever.shard_size=50")
    assert again["encoder"]["texts"] == sharded["encoder"]["texts"] - 169  # no passage encoded twice
    assert again["pairs"] == sharded["pairs"]
