import json

import pytest

from halluguard.artifacts import Manifest, atomic_dir, atomic_write_text, sha256_path, write_jsonl
from halluguard.errors import HalluguardError


def test_atomic_dir_replaces_the_old_folder_only_on_success(tmp_path):
    final = tmp_path / "stage"
    final.mkdir()
    (final / "old.txt").write_text("kept")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("partial")
            raise RuntimeError("crash mid-stage")
    assert (final / "old.txt").read_text() == "kept" and not (final / "half.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]  # no temp folder left behind

    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


def test_atomic_write_leaves_the_old_file_when_serialising_fails(tmp_path):
    path = tmp_path / "rows.jsonl"
    atomic_write_text(path, "old\n")
    with pytest.raises(TypeError):
        write_jsonl(path, [{"ok": 1}, {"bad": object()}])
    assert path.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_folder_hash_changes_with_content_and_names(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("1")
    h1 = sha256_path(tmp_path / "d")
    assert sha256_path(tmp_path / "d") == h1
    (tmp_path / "d" / "a").write_text("2")
    h2 = sha256_path(tmp_path / "d")
    (tmp_path / "d" / "a").rename(tmp_path / "d" / "b")
    assert len({h1, h2, sha256_path(tmp_path / "d")}) == 3


def make_manifest(tmp_path):
    stage = tmp_path / "runs" / "e" / "build"
    stage.mkdir(parents=True)
    (stage / "out.jsonl").write_text('{"a": 1}\n')
    source = tmp_path / "kb.jsonl"
    source.write_text("kb")
    m = Manifest(stage="build", exp="e", config={"seed": 0}, metrics={"n": 1})
    m.add_input("kb", source)
    m.add_output("rows", stage / "out.jsonl", stage)
    m.write(stage)
    return stage


def test_manifest_round_trip_records_provenance(tmp_path):
    stage = make_manifest(tmp_path)
    data = json.loads((stage / "manifest.json").read_text())
    assert set(data) >= {"stage", "config", "inputs", "outputs", "versions", "git", "metrics", "created"}
    assert data["versions"]["torch"] and data["inputs"]["kb"]["sha256"] == sha256_path(tmp_path / "kb.jsonl")
    loaded = Manifest.load(stage)
    assert loaded.metrics == {"n": 1} and loaded.output_path("rows") == stage / "out.jsonl"


def test_changed_output_is_refused_with_its_name(tmp_path):
    stage = make_manifest(tmp_path)
    (stage / "out.jsonl").write_text('{"a": 2}\n')
    with pytest.raises(HalluguardError, match="'rows'.*does not match"):
        Manifest.load(stage).output_path("rows")


def test_missing_output_and_missing_manifest_are_named(tmp_path):
    stage = make_manifest(tmp_path)
    with pytest.raises(HalluguardError, match="no output 'pairs'"):
        Manifest.load(stage).output_path("pairs")
    (stage / "out.jsonl").unlink()
    with pytest.raises(HalluguardError, match="'rows'.*missing"):
        Manifest.load(stage).output_path("rows")
    with pytest.raises(HalluguardError, match="halluguard sft exp=e"):
        Manifest.load(tmp_path / "runs" / "e" / "sft")


def test_atomic_writes_get_the_mode_a_plain_write_would(tmp_path):
    """mkstemp makes 0600 files: results a user's group could read with a plain write must stay readable."""
    import os

    from halluguard.artifacts import atomic_write_text, write_jsonl

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "results.json", "{}")
    write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
    expected = os.stat(plain).st_mode & 0o777
    for name in ("results.json", "rows.jsonl"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "private.json").st_mode & 0o777 == 0o600  # a stricter umask is honoured
