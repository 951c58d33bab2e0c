"""halluguard.generation against plain ``model.generate``, and the benchmark runner's table (issue #8)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import load_benchmark
from omegaconf import OmegaConf

from halluguard import generation, models
from halluguard.config import ModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Mixed lengths, all different, in no particular order: batches are sorted by length inside generate.
PROMPTS = [
    "Refunds for unused prepaid credit are paid within 14 days to the original card. How long?",
    "Who",
    "The Orbit plan costs 25 euros a month and includes 40 GB of data. Roaming in the EU costs nothing extra",
    "The plan",
    "Question: How much does roaming cost? Passages: Roaming",
    "Phones bought from the shop carry a two-year",
    "Sorry, the passages do not say.",
    "What is the phone number of the mayor of Zxqerville? I do not know the answer to that question, sorry.",
    "Refunds",
]
ONEDNN = ["onednn"] if generation.onednn_usable(torch.nn.Linear(2, 2))[0] else []


@pytest.fixture(scope="module")
def tiny(tiny_policy, tmp_path_factory):
    """The tiny policy with its matrices drawn again at std 0.35: at the default init it repeats one token
    forever, which would test nothing about rows of different lengths or near-equal logits."""
    cfg = OmegaConf.structured(ModelConfig)
    cfg.name_or_path = str(tiny_policy)
    model, tok = models.load_policy(cfg, tmp_path_factory.mktemp("cache"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.35)
    return model, tok


def plain_generate(model, tok, prompts, batch_size, max_new_tokens, eos_id=None, **kwargs):
    """What generation.py did before: model.generate on length-sorted batches; new tokens through eos."""
    eos_id = tok.eos_token_id if eos_id is None else eos_id
    lengths = [len(tok(p, add_special_tokens=False).input_ids) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    out = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        enc = tok([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=eos_id, **kwargs)
        for i, row in zip(batch, ids[:, enc["input_ids"].shape[1]:].tolist()):
            out[i] = row[:row.index(eos_id) + 1] if eos_id in row else row
    return out


def common_mid_token(model, tok, prompts, max_new_tokens):
    """A token that greedy decoding produces at different steps in different prompts (used as eos, so rows
    finish at different times and leave the batch)."""
    rows = plain_generate(model, tok, prompts, len(prompts), max_new_tokens, do_sample=False)
    first_seen: dict[int, set[int]] = {}
    for row in rows:
        for token in row:
            first_seen.setdefault(token, set()).add(row.index(token))
    return max(first_seen, key=lambda t: (len(first_seen[t]), -t))


@pytest.mark.parametrize("matmul", ["aten", *ONEDNN])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 9])
def test_greedy_tokens_equal_plain_generate(tiny, batch_size, matmul):
    model, tok = tiny
    mine = generation.generate_ids(model, tok, PROMPTS, max_new_tokens=12, batch_size=batch_size, matmul=matmul)
    assert mine == plain_generate(model, tok, PROMPTS, batch_size, 12, do_sample=False)
    texts = generation.generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=batch_size, matmul=matmul)
    assert texts == [t.strip() for t in tok.batch_decode(mine, skip_special_tokens=True)]


@pytest.mark.parametrize("matmul", ["aten", *ONEDNN])
@pytest.mark.parametrize("batch_size", [2, 4, 9])
def test_rows_that_finish_early_and_tokens_stay_equal(tiny, batch_size, matmul, monkeypatch):
    model, tok = tiny
    eos = common_mid_token(model, tok, PROMPTS, 16)
    reference = plain_generate(model, tok, PROMPTS, batch_size, 16, eos_id=eos, do_sample=False)
    assert len({len(r) for r in reference}) > 2, "the chosen eos must end rows at different steps"
    calls = []  # (rows in the batch's prefill, rows in this forward)
    forward = model.forward

    def counting(*args, **kwargs):
        rows, width = kwargs["input_ids"].shape
        start = rows if width > 1 or not calls else calls[-1][0]
        calls.append((start, rows))
        return forward(*args, **kwargs)

    tok = copy.deepcopy(tok)
    tok.eos_token = tok.convert_ids_to_tokens(eos)
    assert tok.eos_token_id == eos
    monkeypatch.setattr(model, "forward", counting)
    mine = generation.generate_ids(model, tok, PROMPTS, max_new_tokens=16, batch_size=batch_size, matmul=matmul)
    assert mine == reference
    shrank = any(rows < start for start, rows in calls)
    # oneDNN gives a row the same bits for any number of rows: finished rows leave. MKL's sgemm does not, so
    # with the model's own products every row stays to the end, as in generate().
    assert shrank == (matmul == "onednn")


def test_aten_logits_are_bitwise_those_of_generate(tiny, monkeypatch):
    model, tok = tiny
    batch = PROMPTS[:5]
    ids, mask = generation.left_pad([tok(p, add_special_tokens=False).input_ids for p in batch], tok.pad_token_id)
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             return_dict_in_generate=True, output_logits=True)
    seen = []
    forward = model.forward

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen.append(out.logits[:, -1].float().clone())
        return out

    monkeypatch.setattr(model, "forward", recording)
    with torch.inference_mode():
        mine = generation.greedy_batch(model, ids, mask, 10, tok.eos_token_id, tok.pad_token_id, drop_finished=False)
    assert torch.equal(mine, ref.sequences[:, ids.shape[1]:])
    assert len(seen) == len(ref.logits)
    assert all(torch.equal(a, b) for a, b in zip(seen, ref.logits))


def test_unpadded_batch_and_left_pad_match_the_tokenizer(tiny):
    model, tok = tiny
    seqs = [tok(p, add_special_tokens=False).input_ids for p in PROMPTS[:4]]
    ids, mask = generation.left_pad(seqs, tok.pad_token_id)
    enc = tok(PROMPTS[:4], return_tensors="pt", padding=True, add_special_tokens=False)
    assert torch.equal(ids, enc["input_ids"]) and torch.equal(mask, enc["attention_mask"])
    same_length = [PROMPTS[1], PROMPTS[1]]  # no padding at all: generate() drops the mask, and so must we
    assert generation.generate_ids(model, tok, same_length, max_new_tokens=6, batch_size=2) == \
        plain_generate(model, tok, same_length, 2, 6, do_sample=False)


def test_outputs_come_back_in_the_callers_order(tiny):
    model, tok = tiny
    forward = generation.generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=4)
    backward = generation.generate(model, tok, PROMPTS[::-1], max_new_tokens=8, batch_size=4)
    assert backward == forward[::-1]
    alone = generation.generate(model, tok, [PROMPTS[2]], max_new_tokens=8, batch_size=4)
    assert alone == [forward[2]]
    assert generation.generate(model, tok, [], max_new_tokens=8) == []


@pytest.mark.parametrize("matmul", ["aten", *ONEDNN])
def test_sampling_is_seeded(tiny, matmul):
    model, tok = tiny
    kwargs = {"max_new_tokens": 10, "batch_size": 4, "temperature": 0.9, "top_p": 0.95, "matmul": matmul}
    first = generation.generate_ids(model, tok, PROMPTS, seed=7, **kwargs)
    assert generation.generate_ids(model, tok, PROMPTS, seed=7, **kwargs) == first
    assert generation.generate_ids(model, tok, PROMPTS, seed=8, **kwargs) != first
    texts = generation.generate(model, tok, PROMPTS, seed=7, **kwargs)
    assert texts == [t.strip() for t in tok.batch_decode(first, skip_special_tokens=True)]


def test_aten_sampling_draws_what_generate_draws_copies_included(tiny):
    model, tok = tiny
    kwargs = {"max_new_tokens": 10, "batch_size": 4, "temperature": 0.9, "top_p": 0.95, "matmul": "aten"}
    torch.manual_seed(7)
    expected = plain_generate(model, tok, PROMPTS, 4, 10, do_sample=True, temperature=0.9, top_p=0.95)
    assert generation.generate_ids(model, tok, PROMPTS, seed=7, **kwargs) == expected
    torch.manual_seed(7)  # copies=3 is the prompts three times side by side, as sampled evaluation sent them
    expected = plain_generate(model, tok, [p for p in PROMPTS for _ in range(3)], 4, 10, do_sample=True,
                              temperature=0.9, top_p=0.95)
    assert generation.generate_ids(model, tok, PROMPTS, seed=7, copies=3, **kwargs) == expected
    torch.manual_seed(7)  # top_k reaches generate
    expected = plain_generate(model, tok, PROMPTS, 4, 10, do_sample=True, temperature=0.9, top_p=0.95, top_k=0)
    assert generation.generate_ids(model, tok, PROMPTS, seed=7, top_k=0, **kwargs) == expected


@pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_copies_share_the_prompt_and_decode_as_if_alone(tiny, batch_size, monkeypatch):
    """At a temperature near 0 every draw is the argmax: each of the k copies must then be the greedy answer,
    through the shared prompt, the repeated cache and mask, and copies that finish early leaving the batch."""
    model, tok = tiny
    eos = common_mid_token(model, tok, PROMPTS, 16)
    tok = copy.deepcopy(tok)
    tok.eos_token = tok.convert_ids_to_tokens(eos)
    greedy = generation.generate_ids(model, tok, PROMPTS, max_new_tokens=16, batch_size=9, matmul="onednn")
    assert len({len(r) for r in greedy}) > 2, "the chosen eos must end rows at different steps"
    prefill_rows = []
    forward = model.forward

    def counting(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            prefill_rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    copies = generation.generate_ids(model, tok, PROMPTS, max_new_tokens=16, batch_size=batch_size, seed=0,
                                     temperature=1e-4, copies=3, matmul="onednn")
    assert copies == [row for row in greedy for _ in range(3)]
    assert sum(prefill_rows) == len(PROMPTS)  # each prompt computed once, not three times
    assert max(prefill_rows) == max(1, batch_size // 3)  # batch_size counts rows: copies included
    prefill_rows.clear()  # greedy copies are one answer repeated, whatever the products
    for matmul in ("aten", "onednn"):
        assert generation.generate_ids(model, tok, PROMPTS, max_new_tokens=16, batch_size=batch_size,
                                       copies=2, matmul=matmul) == [row for row in greedy for _ in range(2)]
    assert sum(prefill_rows) == 2 * len(PROMPTS)


@pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("top_k", [None, 0])
def test_a_sampled_token_follows_the_distribution_generate_samples_from(tiny, top_k):
    """4,000 first tokens of one prompt against softmax(logits / T) after top-k (generate's default 50, or none)
    and top-p, in total variation (seeded: the same figure every run). The bound is what sampling noise allows:
    with all ~200 tokens of the tiny vocabulary in play, torch.multinomial drawing from the exact probabilities
    itself lands at 0.07 at this n (0.058 here); with top-k 50 the noise is smaller and so is the bound."""
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    model, tok = tiny
    prompt, n, temperature, top_p = PROMPTS[0], 4000, 1.5, 0.97
    ids = torch.tensor([tok(prompt, add_special_tokens=False).input_ids])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[:, -1].float() / temperature
    if top_k is None:
        logits = TopKLogitsWarper(50)(None, logits)
    probs = torch.softmax(TopPLogitsWarper(top_p)(None, logits), -1)[0]
    support = int((probs > 0).sum())
    assert 5 < support <= 50 if top_k is None else support > 50  # the filters bite as they should
    rows = generation.generate_ids(model, tok, [prompt], max_new_tokens=1, batch_size=n, seed=3, top_k=top_k,
                                   temperature=temperature, top_p=top_p, copies=n, matmul="onednn")
    counts = torch.bincount(torch.tensor([r[0] for r in rows]), minlength=probs.numel()).float()
    assert counts[probs == 0].sum() == 0  # nothing outside top-k / top-p
    assert 0.5 * (counts / n - probs).abs().sum() < (0.05 if top_k is None else 0.09)


@pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN linear")
def test_packed_weights_follow_weight_changes_and_stay_off_the_model(tiny):
    model, tok = tiny
    model = copy.deepcopy(model)
    before = generation.generate_ids(model, tok, PROMPTS, max_new_tokens=8, matmul="onednn")
    keys = set(model.state_dict())
    clone = copy.deepcopy(model)  # packed (opaque) tensors must not be reachable from the module
    assert set(clone.state_dict()) == keys
    assert all(not any("onednn" in name for name in vars(m)) for m in model.modules())
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(1)))
        # in place: the same tensor at a new version, so it is packed again
    after = generation.generate_ids(model, tok, PROMPTS, max_new_tokens=8, matmul="onednn")
    assert after == generation.generate_ids(model, tok, PROMPTS, max_new_tokens=8, matmul="aten")
    assert after != before
    # outside generate the model multiplies with its own linears again
    assert all("forward" not in vars(m) for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_matmul_choice_is_checked_and_falls_back_where_onednn_cannot_run(tiny, monkeypatch):
    model, tok = tiny
    with pytest.raises(ValueError, match="matmul must be one of"):
        generation.generate(model, tok, PROMPTS[:1], max_new_tokens=2, matmul="fast")
    assert generation.resolve_matmul(model, "aten") == "aten"
    monkeypatch.setenv(generation.MATMUL_ENV, "aten")
    assert generation.resolve_matmul(model) == "aten"
    monkeypatch.delenv(generation.MATMUL_ENV)
    half = copy.deepcopy(model).to(torch.bfloat16)
    assert generation.resolve_matmul(half) == "aten"
    with pytest.raises(ValueError, match="not float32"):
        generation.resolve_matmul(half, "onednn")


def test_left_padding_is_required(tiny):
    model, tok = tiny
    tok = copy.deepcopy(tok)
    tok.padding_side = "right"
    with pytest.raises(ValueError, match="left padding"):
        generation.generate(model, tok, PROMPTS[:2], max_new_tokens=2)


# ---------------------------------------------------------------- benchmarks/run_all.py --collect-only

def test_collect_only_builds_the_table_from_json_files_without_running_anything(tmp_path, monkeypatch):
    run_all = load_benchmark("run_all")
    monkeypatch.setattr(run_all, "run_scripts", lambda only: pytest.fail("--collect-only must run no benchmark"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "build.json").write_text(json.dumps([{"questions": 1000, "passages": 540, "encode_only_s": 18.79,
                                                 "build_s": 36.77, "ratio_pq": 1.96, "ratio_all": 1.21,
                                                 "questions_per_s": 27.2}]))
    (out / "ppo_tiny.json").write_text(json.dumps({"model": "tiny", "batch": 8, "epochs": 2, "max_new_tokens": 48,
                                                   "threads": 1, "seconds_by_phase_median": {"generate": 0.069,
                                                                                              "step": 0.243},
                                                   "comparison": {"ratio_trl_over_ours": 3.353}}))
    (out / "generation.json").write_text(json.dumps({
        "benchmark": "generation", "finished_utc": "2026-11-26T04:00:00+00:00",
        "machine": {"cpu": "Some CPU", "cores": 2, "torch_threads": 2}, "load_average_before": [0.5, 0.4, 0.3],
        "matmul": {"size": 2048, "torch_matmul_gflops": 210.0, "onednn_gflops": 450.0},
        "batches": [{"batch_size": 8, "prompts": 32, "mean_prompt_tokens": 171.0, "max_new_tokens": 32,
                     "speedup": 1.9, "paths": [
                         {"path": "plain model.generate (caller order)", "new_tokens_per_s": 50.0,
                          "pct_of_torch_matmul_bound": 45.0, "identical_to_plain_generate": True,
                          "prompts_differing": 0},
                         {"path": "halluguard.generation.generate", "new_tokens_per_s": 95.0,
                          "pct_of_torch_matmul_bound": 85.0, "pct_of_onednn_bound": 40.0,
                          "identical_to_plain_generate": True, "prompts_differing": 0}]}],
        "variants": [{"path": "bfloat16 weights", "new_tokens_per_s": 120.0, "identical_to_plain_generate": False,
                      "prompts_differing": 3},
                     {"path": "torch.compile(forward)", "failed": "BackendCompilerFailed: boom"}]}))
    (out / "mystery.json").write_text(json.dumps({"a": {"b": 1.5, "flag": True}, "c": [2, "x"]}))
    (out / "broken.json").write_text("{not json")
    (out / "notes.txt").write_text("not a benchmark output")
    results_json, results_md = tmp_path / "results.json", tmp_path / "results.md"

    rc = run_all.main(["--collect-only", "--out-dir", str(out), "--results-json", str(results_json),
                       "--results-md", str(results_md)])

    assert rc == 0
    data = json.loads(results_json.read_text())
    rows = data["figures"]
    assert data["sources"] == ["broken.json", "build.json", "generation.json", "mystery.json", "ppo_tiny.json"]
    by_source = {s: [r for r in rows if r["source"] == s] for s in data["sources"]}
    build = by_source["build.json"]
    throughput = next(r for r in build if r["unit"] == "questions/s")
    assert (throughput["value"], throughput["ratio"]) == (27.2, 1.96)
    assert throughput["machine"] == "not recorded" and throughput["when"].startswith("file modified ")
    step = next(r for r in by_source["ppo_tiny.json"] if r["what"].startswith("PPO step"))
    assert (step["value"], step["ratio"], step["machine"]) == (0.243, 3.353, "1 torch threads")
    gen = by_source["generation.json"]
    assert {r["when"] for r in gen} == {"2026-11-26T04:00:00+00:00"}
    assert gen[0]["machine"].startswith("Some CPU, 2 cores, 2 torch threads")
    assert [r["value"] for r in gen if r["unit"] == "GFLOP/s"] == [210.0, 450.0]
    project = next(r for r in gen if r["unit"] == "new tokens/s" and "halluguard" in r["what"])
    assert (project["value"], project["ratio"]) == (95.0, 1.9)
    assert any(r["value"] == "identical" for r in gen)
    bf16 = next(r for r in gen if "bfloat16" in r["what"])
    assert (bf16["value"], bf16["what"].endswith("3 prompts differ")) == (120.0, True)
    assert any(r["value"] == "failed: BackendCompilerFailed: boom" for r in gen)
    # a file without a reader: its numeric fields by path, booleans and strings left out, nothing invented
    assert [(r["what"], r["value"]) for r in by_source["mystery.json"]] == [("a.b", 1.5), ("c[0]", 2)]
    assert by_source["broken.json"][0]["what"].startswith("unreadable")
    # every value in the table is one of the files' own numbers
    md = results_md.read_text()
    assert md.count("\n| ") == len(rows) + 1  # header + one line per figure
    assert "| 27.2 | questions/s | 1.96 (whole build ÷ encoding the passages and questions alone) |" in md
    assert "ppo_tiny.json" in md and "notes.txt" not in md


def test_collect_only_keeps_going_when_a_known_file_has_another_layout(tmp_path):
    run_all = load_benchmark("run_all")
    out = tmp_path / "out"
    out.mkdir()
    (out / "reward.json").write_text(json.dumps({"wall_seconds": 600.5, "rm_accuracy_by_kind": [0.9]}))
    rows = run_all.collect(out)
    assert any("layout not understood" in r["what"] for r in rows)
    assert ("wall_seconds", 600.5) in [(r["what"], r["value"]) for r in rows]


@pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN linear")
def test_onednn_gives_a_row_the_same_bits_whatever_the_number_of_rows():
    """What lets finished rows leave the batch without changing the others' tokens."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=generator)
    rows = torch.randn(12, 64, generator=generator)
    linear = torch.nn.Linear(64, 96, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    with generation.onednn_linears(linear):
        full = linear(rows)
        for n in range(1, 12):
            assert torch.equal(linear(rows[:n]), full[:n])
            assert torch.equal(linear(rows[n:n + 1]), full[n:n + 1])
    assert torch.allclose(linear(rows), full, atol=1e-5)  # the model's own product again, to rounding


def test_the_sampling_benchmark_is_tabled_and_checks_its_arguments():
    run_all = load_benchmark("run_all")
    data = {"prompts": 2, "mean_prompt_tokens": 150.4, "copies": 4, "max_new_tokens": 48, "temperature": 1.0,
            "batch_rows": 16, "speedup": 1.5,
            "paths": {"model.generate": {"answers_per_s": 1.0, "mean_answer_tokens": 40.0},
                      "halluguard": {"answers_per_s": 1.5, "mean_answer_tokens": 41.0}}}
    rows = run_all.reader_for("sampling")(data)
    setting = "2 prompts of 150 tokens x 4 answers, 48 new tokens, T 1, batch 16 rows"
    assert rows[0] == {"what": f"sampled answers, model.generate, {setting}", "value": 1.0, "unit": "answers/s"}
    assert rows[2]["value"] == 1.5 and rows[2]["ratio"] == 1.5 and "halluguard" in rows[2]["what"]
    bench = load_benchmark("bench_sampling")
    with pytest.raises(SystemExit):
        bench.main(["--copies", "0"])
