"""The SFT reference: example selection and counts, the completion-only loss mask, that training teaches,
and the stage end to end on a small knowledge base (build -> sft -> reference_source)."""

import json

import pytest
import torch

from halluguard.errors import ConfigError, HalluguardError
from halluguard.sft import IGNORE_INDEX, prepare_examples, tokenize_example

from conftest import TINY_PASSAGES, write_jsonl

REFUSAL = "Sorry, the passages do not say."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def conv(text):
    return [{"role": "assistant", "content": text}]


def prompt(passage: str, question: str):
    return [{"role": "system", "content": "Answer only from the passages."},
            {"role": "user", "content": f"Passages:\n[1] {passage}\n\nQuestion: {question}"}]


@pytest.fixture(scope="module")
def tokenizer(tiny_policy):
    from omegaconf import OmegaConf

    from halluguard.config import ModelConfig
    from halluguard.models import load_tokenizer

    return load_tokenizer(str(tiny_policy), OmegaConf.structured(ModelConfig))


# ---------------------------------------------------------------- examples and the loss mask

def _rows():
    a = prompt("The Orbit plan costs 25 euros a month.", "How much is the Orbit plan?")
    b = prompt("Refunds are paid within 14 days.", "Who founded the company?")
    c = prompt("Roaming in the EU costs nothing extra.", "Is roaming free in the EU?")
    return [
        {"prompt": a, "chosen": conv("It costs 25 euros a month."), "rejected": conv("I don't know."), "label": "ik",
         "case_id": "c1", "question_id": "q1"},
        {"prompt": a, "chosen": conv("It costs 25 euros a month."), "rejected": conv("It costs 9 euros."),
         "label": "ik", "case_id": "c1", "question_id": "q1"},  # a second pair of the same prompt
        {"prompt": b, "chosen": conv(REFUSAL), "rejected": conv("Anna Berg founded it."), "label": "ook",
         "case_id": "c2", "question_id": "q2"},
        {"prompt": b, "chosen": conv("I cannot tell."), "rejected": conv("Tom did."), "label": "ook",
         "case_id": "c2", "question_id": "q2"},  # same prompt, another chosen: the first is kept
        {"prompt": c, "chosen": conv("   "), "rejected": conv("Yes."), "label": "ik", "case_id": "c3",
         "question_id": "q3"},
        {"prompt": prompt("word " * 300, "What?"), "chosen": conv("Yes."), "rejected": conv("No."), "label": "ik",
         "case_id": "c4", "question_id": "q4"},
    ]


def test_one_example_per_prompt_and_every_left_out_row_counted(tokenizer):
    ex = prepare_examples(_rows(), tokenizer, max_length=200)
    c = ex.counts
    assert (c["rows_seen"], c["duplicate_prompt"], c["duplicate_prompt_other_chosen"], c["empty_chosen"],
            c["dropped_too_long"], c["used"]) == (6, 2, 1, 1, 1, 2)
    assert ex.by_label() == {"ik": 1, "ook": 1}
    assert [r["question_id"] for r in ex.rows] == ["q1", "q2"]
    refusal = ex.rows[1]
    assert tokenizer.decode([t for t in refusal["labels"] if t != IGNORE_INDEX]) == REFUSAL + "<|im_end|>"
    sampled = prepare_examples(_rows(), tokenizer, max_length=200, max_examples=1, seed=3)
    assert sampled.counts["used"] == 1 and sampled.counts["not_sampled"] == 1


def test_balance_labels_cuts_the_larger_label_set_and_counts_it(tokenizer):
    rows = []
    for i in range(5):
        label = "ook" if i < 4 else "ik"
        rows.append({"prompt": [{"role": "user", "content": f"Passages: p{i}\nQuestion: q{i}?"}],
                     "chosen": [{"role": "assistant", "content": REFUSAL if label == "ook" else "Yes."}],
                     "rejected": [{"role": "assistant", "content": "No."}], "label": label,
                     "case_id": f"c{i}", "question_id": f"q{i}"})
    plain = prepare_examples(rows, tokenizer, max_length=200)
    assert plain.by_label() == {"ook": 4, "ik": 1} and plain.counts["not_balanced"] == 0
    balanced = prepare_examples(rows, tokenizer, max_length=200, seed=1, balance_labels=True)
    assert balanced.by_label() == {"ook": 1, "ik": 1}
    assert balanced.counts["not_balanced"] == 3 and balanced.counts["used"] == 2


def _labelled_rows(n_ik: int, n_ook: int) -> list[dict]:
    rows = []
    for i in range(n_ik + n_ook):
        label = "ik" if i < n_ik else "ook"
        rows.append({"prompt": [{"role": "user", "content": f"Passages: p{i}\nQuestion: q{i}?"}],
                     "chosen": [{"role": "assistant", "content": "Yes." if label == "ik" else REFUSAL}],
                     "rejected": [{"role": "assistant", "content": "No."}], "label": label,
                     "case_id": f"c{i}", "question_id": f"q{i}"})
    return rows


def test_reserved_ik_questions_are_left_out_by_seed_and_counted(tokenizer):
    from halluguard.sft import reserved_questions

    rows = _labelled_rows(6, 6)
    rows.append(dict(rows[0]))  # a second pair of a question: counted once, as a duplicate
    # an out-of-knowledge variant of in-knowledge question q0 (the builders' context swap): same question_id
    rows.append({**rows[6], "prompt": [{"role": "user", "content": "Passages: other\nQuestion: q0?"}],
                 "case_id": "c0~swap", "question_id": "q0"})
    ex = prepare_examples(rows, tokenizer, max_length=200, seed=4, balance_labels=True, reserve_ik_questions=2)
    reserved = reserved_questions(rows, 2, seed=4)
    assert len(reserved) == 2 and all(int(q[1:]) < 6 for q in reserved)  # in-knowledge questions only
    used = {r["question_id"] for r in ex.rows}
    assert not used & reserved  # no prompt of a reserved question, its variant included
    assert "q0" in reserved and ex.counts["reserved_for_ppo"] == 3 and ex.counts["duplicate_prompt"] == 1
    # balancing then cuts the out-of-knowledge side to the 4 in-knowledge questions left
    assert ex.by_label() == {"ik": 4, "ook": 4}
    assert reserved_questions(rows, 2, seed=4) == reserved  # the same seed picks the same questions
    assert {frozenset(reserved_questions(rows, 2, seed=s)) for s in range(6)} != {frozenset(reserved)}
    assert reserved_questions(rows, 0, seed=4) == set()
    assert prepare_examples(rows, tokenizer, max_length=200, seed=4).counts["reserved_for_ppo"] == 0


def test_reserving_every_ik_question_is_a_clear_error(tokenizer):
    with pytest.raises(HalluguardError, match=r"sft.reserve_ik_questions=3 .* has 3"):
        prepare_examples(_labelled_rows(3, 3), tokenizer, max_length=200, reserve_ik_questions=3)


def test_loss_is_on_the_response_and_its_end_of_turn_only(tokenizer):
    from halluguard.prompting import render_prompt

    p = _rows()[0]["prompt"]
    ids, labels = tokenize_example(tokenizer, p, "It costs 25 euros a month.")
    head = tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
    # The prompt is tokenized exactly as generation sees it, and masked; the response + eos are trained.
    assert ids[:len(head)] == head and labels[:len(head)] == [IGNORE_INDEX] * len(head)
    assert labels[len(head):] == ids[len(head):]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[len(head):]) == "It costs 25 euros a month.<|im_end|>"


def test_the_trainer_batches_keep_our_labels_and_mask_padding(tiny_policy, tokenizer, tmp_path):
    """What reaches the loss: TRL's collator pads on the right with -100 and keeps the prompt masked."""
    from omegaconf import OmegaConf

    from halluguard.config import RootConfig
    from halluguard.sft import load_policy_for_training, make_trainer

    cfg = OmegaConf.structured(RootConfig)
    cfg.sft.batch_size = 2
    ex = prepare_examples(_rows(), tokenizer, max_length=200)
    model, tok = load_policy_for_training(str(tiny_policy), cfg.model)
    trainer = make_trainer(model, tok, ex, cfg.sft, str(tmp_path), seed=0)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 2
    expected = {tuple(r["input_ids"]): r["labels"] for r in ex.rows}
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n = int(mask.sum())
        want = expected[tuple(ids[:n].tolist())]
        assert labels[:n].tolist() == want
        assert (labels[n:] == IGNORE_INDEX).all() and (ids[n:] == tok.pad_token_id).all()
        assert int((labels != IGNORE_INDEX).sum()) == sum(1 for x in want if x != IGNORE_INDEX)


# ---------------------------------------------------------------- training teaches

TOPICS = ["refund", "roaming", "plan", "warranty", "SIM card", "eSIM", "invoice", "contract", "data pass",
          "voicemail", "porting", "top-up", "hotspot", "5G", "insurance", "repair"]


def _teaching_rows():
    rows = []
    for t in TOPICS:
        passage = f"{t.title()}\nThe {t} costs {len(t)} euros."
        rows.append({"prompt": prompt(passage, f"How much does the {t} cost?"),
                     "chosen": conv(f"The {t} costs {len(t)} euros."), "label": "ik"})
        rows.append({"prompt": prompt(passage, f"Who founded the company that sells the {t}?"),
                     "chosen": conv(REFUSAL), "label": "ook"})
    return rows[:24], rows[24:]  # 12 topics to train on, 4 unseen topics to test


def _refusal_nll(model, tokenizer, prompts) -> float:
    losses = []
    for p in prompts:
        ids, labels = tokenize_example(tokenizer, p, REFUSAL)
        with torch.no_grad():
            losses.append(model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item())
    return sum(losses) / len(losses)


def test_sft_teaches_the_refusal_on_unseen_out_of_knowledge_prompts(tmp_path):
    """A few dozen LoRA steps: the refusal sentence becomes the greedy answer to OOK prompts about unseen topics."""
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from halluguard.config import RootConfig
    from halluguard.generation import generate
    from halluguard.models import configure_padding
    from halluguard.prompting import render_prompt
    from halluguard.sft import load_policy_for_training, train_sft
    from halluguard.tiny import make_tiny_policy

    train, test = _teaching_rows()
    texts = [r["prompt"][1]["content"] for r in train + test] + [REFUSAL] * 4
    policy = make_tiny_policy(tmp_path / "policy", texts=texts)
    cfg = OmegaConf.structured(RootConfig)
    cfg.model.name_or_path = str(policy)
    cfg.sft.max_steps, cfg.sft.batch_size, cfg.sft.learning_rate, cfg.sft.logging_steps = 60, 8, 1e-2, 20
    # The tiny random model needs adapters on the MLP too to learn within 60 steps.
    cfg.sft.lora.target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    base, tok = load_policy_for_training(str(policy), cfg.model)
    ook_test = [r["prompt"] for r in test if r["label"] == "ook"]
    before = _refusal_nll(base, tok, ook_test)

    info = train_sft(prepare_examples(train, tok, 512), str(policy), cfg.model, cfg.sft, tmp_path / "out")
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    configure_padding(tuned, tok, cfg.model.pad_token)
    after = _refusal_nll(tuned, tok, ook_test)
    answers = generate(tuned, tok, [render_prompt(tok, p) for p in ook_test], max_new_tokens=16)
    assert info["steps"] == 60 and info["final_loss"] < info["log_history"][0]["loss"]
    assert after < before - 0.5, (before, after)
    assert answers == [REFUSAL] * len(ook_test), answers
    assert generate(base, tok, [render_prompt(tok, ook_test[0])], max_new_tokens=16) != [REFUSAL]


# ---------------------------------------------------------------- the stage

# The conftest KB plus four sections, so that both splits hold in- and out-of-knowledge prompts.
PASSAGES = TINY_PASSAGES + [
    {"id": "a5", "title": "SIM cards", "section": "sim",
     "text": "A replacement SIM card costs 5 euros and arrives within 3 working days."},
    {"id": "a6", "title": "Invoices", "section": "billing",
     "text": "Invoices are sent by email on the first day of each month."},
    {"id": "a7", "title": "Voicemail", "section": "voicemail",
     "text": "Voicemail is reached by calling 121 from your own phone."},
    {"id": "a8", "title": "Hotspot", "section": "hotspot",
     "text": "Hotspot tethering is allowed on every plan at no extra cost."},
]
IK = [("How long does a refund take?", "14 days"), ("How much is a roaming day pass outside the EU?", "6 euros"),
      ("How much is the Orbit plan each month?", "25 euros"), ("How long is the phone warranty?", "two-year"),
      ("How much does a replacement SIM card cost?", "5 euros"), ("When are invoices sent?", "first day"),
      ("Which number reaches voicemail?", "121"), ("Does hotspot tethering cost extra?", "no extra cost")]
OOK = ["Who won the 1998 football World Cup?", "What is the phone number of the mayor of Zxqerville?",
       "What is the capital of Mongolia?", "How tall is the tallest giraffe ever recorded?"]
QUESTIONS = (
    [{"id": f"q{i}", "question": q, "label": "ik", "kind": "in_knowledge", "answers": [a], "passage_id": f"a{i}"}
     for i, (q, a) in enumerate(IK, start=1)]
    + [{"id": f"q{i}", "question": q, "label": "ook", "kind": "off_topic", "answers": [], "passage_id": None}
       for i, q in enumerate(OOK, start=len(IK) + 1)]
)


@pytest.fixture
def overrides(tmp_path, tiny_policy):
    kb = tmp_path / "kb"
    kb.mkdir()
    return ["kb=jsonl", f"kb.passages={write_jsonl(kb / 'p.jsonl', PASSAGES)}",
            f"kb.questions={write_jsonl(kb / 'q.jsonl', QUESTIONS)}", f"model.name_or_path={tiny_policy}",
            f"paths.runs={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}", "exp=t",
            "builder.split.heldout_fraction=0.4", "sft.max_steps=3", "sft.batch_size=4", "sft.learning_rate=1e-2",
            # every OOK case gets a pair (a 12-question KB has few near-miss values; which synthetic questions
            # get one depends on the random draws), so both labels reach SFT and balancing is exercised
            "builder.negatives.evasive_quote=true",
            "sft.samples=4", "sft.sample_max_new_tokens=4"]


def _outputs_differ(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return any(not torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


def test_stage_end_to_end_lora_then_full(compose, overrides, tiny_policy, capsys):
    from datasets import load_from_disk
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from halluguard.artifacts import Manifest
    from halluguard.sft import reference_source
    from halluguard.stages import build, sft

    build_manifest = build.run(compose(overrides, stage="build"))
    cfg = compose(overrides, stage="sft")
    with pytest.raises(HalluguardError, match="run `halluguard sft exp=t`"):
        reference_source(cfg)

    manifest = sft.run(cfg)
    folder = manifest.path.parent
    assert {"model", "adapter", "examples", "metrics", "loss", "samples", "summary"} <= set(manifest.outputs)
    m = Manifest.load(folder).metrics
    assert m["steps"] == 3 and m["seconds_per_step"] > 0 and m["final_loss"] > 0 and m["train_seconds"] > 0

    # Train split only, one example per distinct prompt, counts that add up.
    pairs = load_from_disk(str(build_manifest.output_path("pairs")))
    train_prompts = {json.dumps(r["prompt"]) for r in pairs["train"]}
    heldout_ids = set(pairs["heldout"]["question_id"])
    used = [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]
    assert len(used) == m["examples"]["used"] == len(train_prompts) - m["examples"]["not_balanced"]
    labels = [u["label"] for u in used]
    assert labels.count("ik") == labels.count("ook")  # sft.balance_labels (default): as many of each
    assert m["examples"]["rows_seen"] == len(pairs["train"])
    assert m["examples"]["duplicate_prompt"] == len(pairs["train"]) - len(train_prompts)
    assert not {u["question_id"] for u in used} & heldout_ids
    by_label = {}
    for u in used:
        by_label[u["label"]] = by_label.get(u["label"], 0) + 1
    assert m["examples_by_label"] == by_label and set(by_label) == {"ik", "ook"}

    # The merged reference loads as a plain model, differs from the base, and equals base + adapter.
    base = AutoModelForCausalLM.from_pretrained(tiny_policy)
    merged = AutoModelForCausalLM.from_pretrained(folder / "model")
    assert _outputs_differ(base, merged)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_policy), folder / "adapter")
    x = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(x).logits, with_adapter(x).logits, atol=1e-4)
    assert reference_source(cfg) == str(folder / "model")

    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {s["label"] for s in samples} == {"ik", "ook"}
    assert {s["question_id"] for s in samples} <= heldout_ids and all(s["chosen"] for s in samples)
    assert (folder / "loss.png").stat().st_size > 1000
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in logged if "loss" in h] == [1, 3]  # the first and the last step, whatever logging_steps
    assert m["final_loss"] == [h["loss"] for h in logged if "loss" in h][-1]
    summary = (folder / "summary.md").read_text()
    assert "duplicate pairs removed" in summary and "Held-out samples" in summary
    assert "reference model:" in capsys.readouterr().out

    # Full fine-tuning replaces the folder: a reference model, no adapter.
    full = sft.run(compose([*overrides, "sft.finetune=full"], stage="sft"))
    assert "adapter" not in full.outputs and not (folder / "adapter").exists()
    assert _outputs_differ(base, AutoModelForCausalLM.from_pretrained(folder / "model"))

    # The reference belongs to the model it was trained from.
    other = compose([*overrides, f"model.name_or_path={folder / 'model'}"], stage="sft")
    with pytest.raises(HalluguardError, match="was trained from model"):
        reference_source(other)


def test_missing_build_manifest_is_a_clear_error(compose, overrides):
    from halluguard.stages import sft

    with pytest.raises(HalluguardError, match=r"no manifest .*build.*halluguard build exp=t"):
        sft.run(compose(overrides, stage="sft"))


@pytest.mark.parametrize("override, message", [
    ("sft.finetune=qlora", "'sft.finetune' must be one of lora, full"),
    ("sft.batch_size=0", "'sft.batch_size' must be positive"),
    ("sft.max_steps=0", "'sft.max_steps' must be -1"),
    ("sft.lora.top_layers=-1", "'sft.lora.top_layers' must be >= 0"),
])
def test_bad_sft_settings_fail_before_anything_loads(compose, override, message):
    with pytest.raises(ConfigError, match=message):
        compose([override], stage="sft")
