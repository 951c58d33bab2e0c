"""Structured-config schemas for every config group, and the validation that uses them.

The YAML in ``conf/`` holds the values; the dataclasses here say which keys exist and what type
each has. :func:`validate` runs before any model loads, so a typo fails in milliseconds with the
key's full path and, when one is close, the valid key it probably meant.
"""

from __future__ import annotations

import dataclasses
import typing
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from halluguard.errors import ConfigError, HalluguardError, did_you_mean
from halluguard.ppo.checkpoint_selection import SELECT_RULES
from halluguard.ppo.prompt_selection import PROMPT_CHOICES

EMBEDDED_POLICY = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_ENCODER = "embedded:all-MiniLM-L6-v2"


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class IndexKind(str, Enum):
    flat = "flat"  # exact inner product: right for up to a few hundred thousand passages
    ivf = "ivf"  # inverted lists: approximate, for millions of passages
    ivfpq = "ivfpq"  # inverted lists of product-quantised codes: approximate and ~30x smaller than ivf


class PromptMode(str, Enum):
    rag = "rag"  # retrieved passages go into the prompt
    closed_book = "closed_book"  # the question alone


@dataclass
class PathsConfig:
    runs: str = "runs"
    """Folder that holds one sub-folder per experiment (``runs/<exp>/<stage>``)."""
    cache: str = "~/.cache/halluguard"
    """Converted models and other reusable files (``HALLUGUARD_CACHE`` moves it)."""


@dataclass
class ModelConfig:
    name_or_path: str = EMBEDDED_POLICY
    """``embedded:SmolLM2-135M-Instruct``, a Hugging Face model id, or a local folder."""
    revision: Optional[str] = None
    trust_remote_code: bool = False
    """Run code shipped with the model. Off unless you trust its author."""
    dtype: DType = DType.float32
    pad_token: Optional[str] = "<|endoftext|>"
    """Padding token; must differ from eos. Added to the vocabulary when the tokenizer lacks it."""


@dataclass
class RetrieverConfig:
    encoder: str = EMBEDDED_ENCODER
    """Sentence-transformers model: ``embedded:all-MiniLM-L6-v2``, a hub id, or a local folder."""
    index: IndexKind = IndexKind.flat
    nlist: int = 0
    """IVF cells; 0 picks about 4*sqrt(passages)."""
    nprobe: int = 16
    """IVF cells searched per query (higher = closer to exact, slower)."""
    train_size: int = 100_000
    """IVF is trained on a random sample of at most this many passage vectors (seeded by ``seed``)."""
    pq_m: int = 96
    """IVF-PQ: sub-quantizers per vector, i.e. bytes stored per vector at ``pq_bits=8`` (96 for 384 dims:
    96 bytes instead of 1,536). Must divide the encoder's dimension; fewer is smaller but loses recall."""
    pq_bits: int = 8
    """IVF-PQ: bits per sub-quantizer code (1 to 16); training needs at least ``2**pq_bits`` vectors."""
    shard_size: int = 50_000
    """Sharded builds (``build_sharded_index``): passages encoded, saved and added to the index per shard;
    an interrupted run redoes at most one shard."""
    recall_k: int = 10
    """Sharded builds: the k of the recall@k against exact search recorded in ``index.json``."""
    recall_queries: int = 1000
    """Sharded builds: passage vectors sampled (seeded) as queries for that recall@k; 0 skips it."""
    batch_size: int = 64
    """Texts per encoder batch; also queries per FAISS search batch."""
    max_seq_length: int = 256
    device: str = "cpu"


@dataclass
class KBConfig:
    name: str = "demo"
    format: str = "jsonl"
    """Loader for the files below (``jsonl``: the project's own schema, see docs in README)."""
    passages: Optional[str] = MISSING
    """Knowledge-base file or folder (null for closed-book question sets)."""
    questions: Optional[str] = None
    """Question file (null: no questions, or the same file as passages for single-file formats)."""
    language: str = "en"
    """``en``, ``zh`` or ``auto`` (each question's language, detected from its text): picks the builders'
    refusal and answer templates and, with ``prompt.language: auto``, the prompt's."""
    chunk_words: int = 120
    """Folder-of-text knowledge bases: words per passage."""
    chunk_overlap: int = 20
    """Folder-of-text knowledge bases: words shared by consecutive passages of one file."""
    unindexed_fraction: float = 0.0
    """Leave this share of passages (or groups) out of the index; their questions become ook/unindexed."""
    unindexed_by: str = "passage"
    """``passage`` (HaluEval: half the knowledge) or ``group`` (SQuAD 2.0: whole articles)."""


@dataclass
class PromptConfig:
    mode: PromptMode = PromptMode.rag
    passages: int = 3
    """Retrieved passages shown to the model in RAG mode."""
    max_passage_chars: int = 700
    language: str = "auto"
    """``en``, ``zh``, or ``auto``: the prompt of each question is written in that question's language."""
    system: Any = ""
    """System message: one string for every language, or one per language (``{en: ..., zh: ...}``)."""
    retrieval_hint: bool = False
    """RAG mode: state in the prompt how well the shown passages match the question (``Retrieval match: weak
    (similarity 0.38)``), the retrieval gate's signal given to the model to learn from."""
    hint_threshold: float = 0.45
    """Similarity at or above which the hint says ``strong`` (conf: the gate's ``eval.gate_max_top1``)."""


@dataclass
class ProbeConfig:
    """Knowledge probe: in-knowledge (ik), out-of-knowledge (ook) or ambiguous, from retrieval."""

    ook_max_top1: float = 0.30
    """Top-1 similarity below this: nothing in the knowledge base is about the question -> ook."""
    ik_min_top1: float = 0.55
    """Questions without a gold answer: top-1 at or above this (and a clear gap) -> ik."""
    ik_min_gap: float = 0.05
    """...and the best passage must beat the second by this much (one clear source)."""
    use_model: bool = False
    """Also sample the reference model (R-Tuning style) and mark known/unknown (slow)."""
    model_samples: int = 4


@dataclass
class SynthesisConfig:
    """Out-of-knowledge cases made from in-knowledge questions, each verified before it is kept."""

    context_swap: bool = True
    """Same question, nearest passages that do not hold its answer (minimal pair)."""
    context_swap_pool: int = 12
    """Neighbours searched for swap evidence."""
    entity_swap: bool = True
    """Replace the question's key entity or number with one the knowledge base does not hold."""
    unstated_detail: bool = True
    """Ask for an attribute of the passage's subject that the passage does not state."""
    false_premise: bool = True
    """Presuppose something about the subject that the evidence does not support."""
    max_per_question: int = 2


@dataclass
class NegativesConfig:
    near_miss: bool = True
    """Fabrications with a same-type value (price, duration, name) from a neighbouring passage."""
    external: bool = True
    """Dataset-provided negatives (HaluEval hallucinated_answer, SQuAD 2.0 plausible_answers)."""
    evasive_quote: bool = False
    """For ook questions: a shown passage's sentence quoted as if it answered (``The section on X says: ...``), the
    answer PPO learned on the demo and the reward model scored like a grounded one (English prompts). Off by
    default: measured on the demo, a reward model trained with them preferred refusals to grounded answers."""
    on_policy: bool = False
    """Sample fabrications from the reference model itself (needs the policy; slower)."""
    on_policy_max_new_tokens: int = 48
    on_policy_temperature: float = 0.8
    needless_refusal: bool = True
    """For ik questions: a refusal where the evidence holds the answer."""
    wrong_answer: bool = True
    """For ik questions: an answer that contradicts the evidence."""


@dataclass
class FilterConfig:
    max_nll: float = 4.0
    """Too fake: mean per-token NLL of the rejected response under the reference model (needs nll=true).
    Measured on the demo KB with SmolLM2-135M: its own fabrications median 1.6 (p90 2.2) nats/token,
    near-miss fabrications median 2.8 (p90 4.1)."""
    nll: bool = False
    off_type: bool = True
    """Drop fabrications whose value type differs from the question's expected answer type."""
    near_duplicate_question: float = 0.95
    """Questions this similar with opposite labels are ambiguous: both leave training."""
    duplicate_pair: float = 0.98
    """Pairs whose prompt+rejected embeddings are this similar are near-duplicates: one is kept."""
    indistinguishable_margin: float = 0.0
    """Drop refusal-vs-fabrication pairs whose sides the refusal detector scores within this margin."""
    detector_prototypes: bool = True
    """Refusal detector with embedding prototypes (catches new phrasings) or patterns only (faster:
    the prototype pass encodes every generated response once)."""


@dataclass
class SplitConfig:
    heldout_fraction: float = 0.2
    """Share of groups (articles, handbook sections) held out from training."""
    seed: int = 0


@dataclass
class BuilderConfig:
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    refusals_per_case: int = 1
    max_questions: int = 0
    """Use at most this many questions (0 = all), sampled by seed: for quick trials."""
    num_proc: int = 1
    """Processes for the per-question builders (OOK synthesis and pairs), over shards of the questions with
    ``datasets`` ``map(num_proc=...)``. The output does not depend on it: each question has its own RNG."""


@dataclass
class RuleWeightsConfig:
    """Rule terms of the reward (see ``halluguard/reward/rules.py``). Each is added where it applies."""

    refuse_ook: float = 1.0
    """Bonus for refusing an out-of-knowledge prompt."""
    answer_ook: float = 2.7
    """Penalty for answering an out-of-knowledge prompt (a confident fabrication). Larger than
    ``refuse_ik`` because with ``scorer: hybrid`` the reward model itself scores answers above refusals
    on both labels (eval's reward audit): 2.7 is the weight that audit found to cancel that pull."""
    refuse_ik: float = 1.5
    """Penalty for refusing an in-knowledge prompt. With ``scorer: rules`` keep it at least ``answer_ook``:
    a trial where it cost 0.5 (against +1 / -1 for OOK) taught the policy to refuse everywhere."""
    support: float = 1.0
    """Weight of answer support on in-knowledge prompts (share of content tokens found in the evidence,
    or 1 when a gold answer appears in the response)."""


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    top_layers: int = 0
    """Adapters only in the last N transformer blocks (0 = every block). The blocks below get no
    gradient, so the backward pass stops early: the main speed lever on CPU."""


@dataclass
class RewardTrainConfig:
    init: str = "base"
    """Backbone the score head sits on: ``base`` (``model.name_or_path``) or ``sft`` (the ``sft`` stage's
    model, as InstructGPT initialises its reward model from the SFT model; run ``halluguard sft`` first)."""
    finetune: str = "lora"
    """``lora`` (peft adapter + trained score head) or ``full`` (every weight)."""
    keep_layers: int = 12
    """Keep only the backbone's first N transformer blocks (0 = all; more than it has = all): a cheaper reward model that still
    reads the policy's tokens."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: float = 1.0
    max_steps: int = 60
    """Stop after this many optimiser steps (-1: run ``epochs``)."""
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 1.0e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_length: int = 512
    """Tokens of prompt + response. Longer pairs are handled by ``overlong``."""
    overlong: str = "truncate"
    """``truncate``: cut the middle of the prompt (keeps the chat header and the question + response)
    or ``drop``: leave the pair out. Either way they are counted in the summary."""
    center_rewards_coefficient: Optional[float] = 0.01
    """TRL's reward centering (Eisenstein et al. 2023): pushes scores toward mean zero. null = off."""
    max_pairs: int = 0
    """Train on at most this many pairs (0 = all), sampled by seed: for quick trials."""
    norm_pairs: int = 64
    """Train pairs (chosen + rejected) whose scores give the saved mean/std (0 = every kept pair)."""
    logging_steps: int = 10
    use_cpu: Optional[bool] = None
    """null: CPU when no CUDA device is present."""


@dataclass
class RewardConfig:
    """``halluguard reward``: reward model on the build pairs, rule terms, hybrid score."""

    scorer: str = "hybrid"
    """What PPO / GRPO / evaluation call: ``rm`` (reward model), ``rules`` or ``hybrid``."""
    rm_weight: float = 1.0
    """Hybrid score: ``rm_weight * normalised RM score + rule terms``."""
    rules: RuleWeightsConfig = field(default_factory=RuleWeightsConfig)
    train: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    reward_model: Optional[str] = None
    """Use this already trained reward-model folder (from an earlier ``reward`` stage) instead of training."""
    eval_batch_size: int = 16
    refusal_threshold: float = 0.5


@dataclass
class SftConfig:
    """``halluguard sft``: supervised refusal training on the build's chosen responses (the SFT reference)."""

    finetune: str = "lora"
    """``lora`` (adapter, merged into the saved reference) or ``full``."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: float = 1.0
    max_steps: int = 40
    """Stop after this many optimiser steps (-1: run ``epochs``)."""
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 5.0e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_length: int = 512
    """Tokens of prompt + response; longer examples are dropped and counted."""
    max_examples: int = 0
    """Train on at most this many examples (0 = all), sampled by seed."""
    balance_labels: bool = True
    """Cut the larger of the in-knowledge / out-of-knowledge example sets to the size of the smaller, so
    refusals are not the majority of what SFT teaches."""
    reserve_ik_questions: int = 0
    """In-knowledge training questions (picked by seed) SFT leaves out, so that PPO (``ppo.prompts=unseen_by_sft``)
    trains on answerable questions the reference has not fitted, as every held-out one is."""
    logging_steps: int = 10
    samples: int = 6
    """Held-out prompts (half in-knowledge, half out-of-knowledge) answered greedily by the trained model
    and written to ``samples.jsonl`` beside the chosen response, for a person to read (0 = none)."""
    sample_max_new_tokens: int = 64
    use_cpu: Optional[bool] = None
    """null: CPU when no CUDA device is present."""


@dataclass
class KLConfig:
    """KL to the reference: penalty coefficient, its controller and the budget that stops training."""

    beta: float = 0.05
    """Initial KL coefficient (per-token penalty ``beta * kl``)."""
    adaptive: bool = True
    """Adaptive beta toward ``target`` (Ziegler et al. 2019); false keeps ``beta`` fixed."""
    target: float = 1.0
    """Target mean KL per response (nats, summed over its tokens) for the adaptive controller."""
    horizon: int = 1000
    """Controller horizon in samples (Ziegler et al.: ``beta *= 1 + clip(kl/target - 1, ±0.2) * n/horizon``)."""
    budget: float = 1.0
    """Stop when the batch mean KL per response passes this; the last checkpoint within budget is the result."""
    penalty: str = "k1"
    """Estimator in the per-token penalty: ``k1`` (log-ratio; its policy gradient is the KL's) or ``k3`` (never
    negative, but as a reward its gradient is biased and heavy-tailed: see ``halluguard/ppo/kl.py``); both are logged."""


@dataclass
class DpoSettings:
    """``ppo.algo=dpo``: TRL DPOTrainer on the build's train pairs, from the same start as PPO."""

    beta: float = 0.1
    """DPO's KL strength (higher stays closer to the reference)."""
    epochs: float = 1.0
    max_steps: int = 30
    batch_size: int = 8
    learning_rate: float = 2.0e-4
    max_length: int = 512


@dataclass
class GrpoSettings:
    """``ppo.algo=grpo``: TRL GRPOTrainer with the project's scorer as reward and a KL term (beta > 0)."""

    beta: float = 0.05
    """KL coefficient; TRL defaults to 0 (no KL), which this project never allows."""
    num_generations: int = 4
    max_steps: int = 30
    learning_rate: float = 5.0e-5


@dataclass
class CheckpointSelectConfig:
    """``ppo.select``: which saved checkpoint within the KL budget is PPO's result
    (:mod:`halluguard.ppo.checkpoint_selection`)."""

    by: str = "kl_budget"
    """``kl_budget``: the last checkpoint within ``ppo.kl.budget``. ``validation``: of the checkpoints within the
    budget (step 0, the reference, included), the one with the highest balanced accuracy on a validation split of
    the build's held-out questions; the evaluation then leaves that split out for every model."""
    validation_fraction: float = 0.3
    """Share of the held-out questions set aside for the choice (stratified by label, whole question groups)."""
    seed: int = 0
    """Which questions the validation split takes."""
    rule: str = "best"
    """``best``: the highest balanced accuracy. ``significant``: the highest among the checkpoints whose gain over
    step 0 has a 95% paired bootstrap interval above zero; when none has, step 0 - the reference is the result."""
    samples: int = 0
    """0: one greedy answer per question (as the evaluation decodes); k > 0: k answers sampled at
    ``ppo.temperature`` per question, each question's refusal rate the share refused (a smoother score)."""
    max_new_tokens: int = 48
    """The detector judges an answer's first sentence (``eval.sampled.max_new_tokens`` says how this was measured)."""


@dataclass
class PpoConfig:
    """``halluguard ppo``: PPO from the SFT reference with a KL penalty to it (or a DPO/GRPO baseline)."""

    algo: str = "ppo"
    """``ppo`` (halluguard's loop), ``dpo`` (TRL DPOTrainer) or ``grpo`` (TRL GRPOTrainer, beta > 0).
    Each writes to ``<paths.runs>/<exp>/<algo>/`` so they sit side by side for the evaluation."""
    start: str = "sft"
    """``sft``: start from (and hold KL to) the ``sft`` stage's model; ``base``: from ``model.name_or_path``
    (RL from the untrained model: the measured trap, kept for comparisons)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    steps: int = 20
    """PPO iterations (one rollout batch each)."""
    batch_size: int = 16
    """Prompts per rollout."""
    mini_batch_size: int = 8
    """Responses per gradient step inside an iteration; must divide ``batch_size``."""
    prompts: str = "all"
    """``all`` the build's PPO prompts, or ``unseen_by_sft``: only those the SFT reference did not train on (with
    ``sft.reserve_ik_questions`` > 0, in-knowledge questions as new to it as the held-out ones)."""
    balance_labels: bool = True
    """Each rollout batch half out-of-knowledge, half in-knowledge prompts (each kind shuffled on its own):
    batch rewards and both refusal rates then compare across steps."""
    balance_reward: bool = False
    """Before the first update, set ``reward.rules.answer_ook`` so that on the start policy's own samples answering
    and refusing earn the same on average (zero drift, :mod:`halluguard.ppo.balance`): PPO can then gain only by
    refusing where it should. Off by default until measured on a GPU run."""
    balance_prompts: int = 64
    """Training prompts (half per label) sampled for ``balance_reward``."""
    ppo_epochs: int = 2
    learning_rate: float = 3.0e-4
    max_grad_norm: float = 1.0
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_length: int = 512
    """Prompts longer than this (tokens) are an error before training starts."""
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    kl: KLConfig = field(default_factory=KLConfig)
    save_every: int = 2
    """Checkpoint (PEFT adapter + value head + optimiser + controller) every N steps."""
    probe_every: int = 5
    """Log completions of the fixed probe prompts every N steps."""
    probe_prompts: int = 6
    resume: bool = True
    """Continue an interrupted run from its last checkpoint (kept in ``<paths.runs>/<exp>/<algo>.work/``)."""
    report_to: list[str] = field(default_factory=list)
    """``tensorboard`` and/or ``wandb`` in addition to ``metrics.jsonl``."""
    use_cpu: Optional[bool] = None
    """null: CPU when no CUDA device is present."""
    generate_threads: int = 1
    """torch threads while sampling on CPU (0: torch's setting). Decoding is hundreds of tiny ops per token: a
    second thread buys little, and on a CPU shared with other processes its waiting cost 6x (tiny model)."""
    select: CheckpointSelectConfig = field(default_factory=CheckpointSelectConfig)
    dpo: DpoSettings = field(default_factory=DpoSettings)
    grpo: GrpoSettings = field(default_factory=GrpoSettings)


@dataclass
class SampledEvalConfig:
    """``eval.sampled``: each held-out question's refusal rate over several sampled answers
    (:mod:`halluguard.evaluation.sampled_refusal`), beside the greedy metrics."""

    samples: int = 0
    """Answers sampled per question and policy (0 = off). 8 on the demo's 247 questions: about 8 greedy passes."""
    temperature: float = 1.0
    """1.0 = PPO's rollout temperature (``ppo.temperature``)."""
    top_k: int = 50
    """Draw from the ``top_k`` most likely tokens (0 = all). 50 is ``model.generate``'s default, which every sampled
    figure so far was drawn with; PPO's rollouts sample from all tokens, so 0 measures exactly the distribution
    PPO trains. ``ppo.select.samples`` uses it too."""
    max_new_tokens: int = 48
    """The detector judges an answer's first sentence: cutting the greedy answers of two demo evaluations
    (4 x 247) to 48 tokens changed no verdict, to 32 tokens 14 (``benchmarks/refusal_lead_tokens.py``)."""
    permutations: int = 10000
    """Random sign flips for each paired change's p-value."""


@dataclass
class EvalConfig:
    """``halluguard eval``: abstention metrics of several models on the build's held-out questions."""

    models: list[str] = field(default_factory=lambda: ["auto"])
    """Models to evaluate, by name: ``reference``, ``prompt_only``, ``sft``, ``ppo``, ``dpo``, ``grpo``,
    ``gated_<name>`` (the retrieval gate refuses, otherwise that model answers), and the model-free
    ``always_refuse``, ``never_refuse``, ``gate``. ``[auto]``: every one whose stage output exists."""
    max_questions: int = 0
    """Evaluate at most this many held-out questions (0 = all), sampled by seed."""
    batch_size: int = 8
    """Prompts per generation batch."""
    max_new_tokens: int = 64
    greedy: bool = True
    """Greedy decoding (the default, repeatable); false samples at ``temperature``."""
    temperature: float = 0.7
    gate_max_top1: float = 0.45
    """The retrieval gate refuses when the top-1 similarity of question and evidence is below this
    (0.45: measured on SQuAD 2.0, it refused 2/40 answerable and 40/40 other-article questions)."""
    gate_refusal: Any = "I'm sorry, the documents I have do not contain the answer to that question."
    """What the gate (and ``always_refuse``) says; the refusal detector must call it a refusal. One string,
    or one per language (``{en: ..., zh: ...}``), chosen by each question's language."""
    prompt_only_system: Any = ("You are a customer-service assistant. Use the passages to answer the customer's "
                               "question. If the passages do not contain the answer, say that you do not know "
                               "instead of guessing.")
    """System message of the ``prompt_only`` baseline (the reference told to say it does not know)."""
    overlap: str = "error"
    """Held-out questions also in training (same question_id, or same normalised question with the same
    evidence): ``error`` refuses to evaluate, ``warn`` reports the count and flags them in samples.jsonl."""
    bootstrap: int = 1000
    """Resamples for the 95% percentile bootstrap intervals (0 = no intervals)."""
    seed: int = 0
    report_formats: list[str] = field(default_factory=lambda: ["html", "md"])
    """Report files to write: ``html`` (self-contained, charts embedded) and/or ``md`` (charts beside it)."""
    changed_rows: int = 50
    """Rows per model in the report's table of questions whose behaviour changed (all are in samples.jsonl)."""
    reward_audit: bool = True
    """Score each trained model's own answers with the reward (when ``halluguard reward`` has run): does the
    reward prefer answering the OOK questions it should refuse? (``halluguard.evaluation.reward_audit``)"""
    sampled: SampledEvalConfig = field(default_factory=SampledEvalConfig)


@dataclass
class DemoConfig:
    """The ``demo`` step of ``halluguard run`` (``run.stages=[build,demo]``): a few questions answered by the
    untrained policy with the retrieved passages beside them."""

    questions: int = 6
    """Demo questions answered (half in-knowledge, half out-of-knowledge, picked by seed)."""
    max_new_tokens: int = 64
    batch_size: int = 8


TRAINED_POLICY_CHOICES = ("auto", "sft", "ppo", "dpo", "grpo")
"""What ``export.policy`` and ``ask.policy`` accept: ``auto`` is ppo when its stage output exists, else sft."""


@dataclass
class ExportConfig:
    """``halluguard export``: the trained policy merged into one standalone Hugging Face model folder,
    ``<paths.runs>/<exp>/export/<policy>/`` (loads with plain ``AutoModelForCausalLM.from_pretrained``)."""

    policy: str = "auto"
    """``auto`` (ppo when ``runs/<exp>/ppo`` exists, else sft), ``sft``, ``ppo``, ``dpo`` or ``grpo``."""


EXPORT_RL_FORMATS = ("verl", "openrlhf", "trl")
"""What ``export_rl.format`` names (or ``all``): the RL engines whose data formats ``halluguard export-rl`` writes."""
EXPORT_RL_SCORERS = ("rules", "rm", "hybrid")


@dataclass
class ExportRlConfig:
    """``halluguard export-rl``: the build's prompts and preference pairs, and halluguard's reward, in the files an
    outside RL engine reads (veRL, OpenRLHF, TRL with vLLM), with the command lines that launch it, written to
    ``<paths.runs>/<exp>/export_rl/<format>/``. The engines are not installed or run by halluguard."""

    format: str = "verl"
    """``verl`` (parquet + ``compute_score``), ``openrlhf`` (JSONL + ``reward_func`` file), ``trl`` (JSONL dataset
    folders + a reward function for ``GRPOTrainer``/``RLOOTrainer``) or ``all`` (the three, one folder each)."""
    scorer: str = "rules"
    """What the exported reward functions call: ``rules`` (the refusal detector and the rule terms of
    ``reward.rules``: no GPU model), ``rm`` or ``hybrid`` (the trained reward model of ``halluguard reward``, which
    must have run; ``hybrid`` adds the rule terms, as ``reward.scorer=hybrid``)."""
    model: str = "auto"
    """The policy written into the launch commands: ``auto`` (the SFT reference merged by ``halluguard export
    export.policy=sft``, else another exported policy, else the ``sft`` stage's model, else ``model.name_or_path``;
    the choice is printed) or a model folder or hub id."""


@dataclass
class AskConfig:
    """``halluguard ask``: one question (or a stdin loop) answered by the reference and the trained policy,
    with the retrieved passages, the knowledge probe's verdict and the refusal detector's."""

    question: Optional[str] = None
    """The question; null reads questions from stdin (``question> ``; an empty line or EOF ends).
    ``halluguard ask "free text" [overrides]`` fills it in, quoted for Hydra."""
    policy: str = "auto"
    """The trained policy shown beside the reference: ``auto`` (ppo, else sft, else the reference alone),
    ``sft``, ``ppo``, ``dpo`` or ``grpo`` (an explicit one that is missing is an error)."""
    max_new_tokens: int = 96
    """Greedy decoding, at most this many new tokens per answer."""
    passage_chars: int = 200
    """Characters of each retrieved passage printed."""


RUN_ORDER = ("build", "demo", "sft", "reward", "ppo", "eval")
"""The order ``halluguard run`` runs its stages in, whatever order ``run.stages`` lists them in."""
RUN_BASELINES = ("dpo", "grpo")


@dataclass
class RunConfig:
    """``halluguard run`` (what ``make demo`` runs): several stages in pipeline order on one experiment."""

    stages: list[str] = field(default_factory=lambda: ["build", "sft", "reward", "ppo", "eval"])
    """Stages to run, always in the order build, demo, sft, reward, ppo, eval (the listed ones only).
    ``demo``: a few questions answered by the untrained policy with retrieval (settings in ``demo.*``)."""
    baselines: list[str] = field(default_factory=list)
    """``dpo`` and/or ``grpo``: the ppo stage again with ``ppo.algo`` set to each, after ppo and before eval,
    so the evaluation compares them with PPO."""


@dataclass
class RootConfig:
    stage: str = MISSING
    exp: str = "demo"
    """Experiment name: outputs go to ``<paths.runs>/<exp>/<stage>``."""
    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    kb: KBConfig = field(default_factory=KBConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    run: RunConfig = field(default_factory=RunConfig)
    builder: BuilderConfig = field(default_factory=BuilderConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    ppo: PpoConfig = field(default_factory=PpoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    export_rl: ExportRlConfig = field(default_factory=ExportRlConfig)
    ask: AskConfig = field(default_factory=AskConfig)


def _schema_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type (annotations are strings under ``from __future__ import annotations``)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_keys(cfg: Any, cls: type, path: str) -> None:
    """Reject keys the schema does not know, naming the full path and the closest valid key."""
    if not isinstance(cfg, DictConfig):
        return
    fields = _schema_fields(cls)
    for key in cfg.keys():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{where}'{did_you_mean(str(key), fields)}")
        sub = fields[key]
        sub_cls = _dataclass_of(sub)
        if sub_cls is not None:
            _check_keys(cfg._get_node(key), sub_cls, where)


def _dataclass_of(type_: Any) -> Optional[type]:
    return type_ if dataclasses.is_dataclass(type_) else None


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Return ``cfg`` merged onto the schema; raise :class:`ConfigError` naming the bad key."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    _check_keys(cfg, RootConfig, "")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RootConfig), cfg)
        # Resolve now so a broken interpolation or a wrong type behind one fails here, not mid-run.
        OmegaConf.to_container(merged, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"config key '{key}': {msg}") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"config keys with no value (set them on the command line): {', '.join(missing)}")
    _check_values(merged)
    return merged


def _check_values(cfg: DictConfig) -> None:
    positive = {
        "retriever.batch_size": cfg.retriever.batch_size,
        "retriever.nprobe": cfg.retriever.nprobe,
        "retriever.train_size": cfg.retriever.train_size,
        "retriever.pq_m": cfg.retriever.pq_m,
        "retriever.shard_size": cfg.retriever.shard_size,
        "retriever.recall_k": cfg.retriever.recall_k,
        "retriever.max_seq_length": cfg.retriever.max_seq_length,
        "prompt.passages": cfg.prompt.passages,
        "kb.chunk_words": cfg.kb.chunk_words,
        "demo.max_new_tokens": cfg.demo.max_new_tokens,
        "demo.batch_size": cfg.demo.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key '{key}' must be positive, got {value}")
    if not 0 <= cfg.kb.chunk_overlap < cfg.kb.chunk_words:
        raise ConfigError(f"config key 'kb.chunk_overlap' must be in [0, kb.chunk_words), got {cfg.kb.chunk_overlap}")
    if cfg.retriever.nlist < 0:
        raise ConfigError(f"config key 'retriever.nlist' must be >= 0 (0 = automatic), got {cfg.retriever.nlist}")
    if not 1 <= cfg.retriever.pq_bits <= 16:
        raise ConfigError(f"config key 'retriever.pq_bits' must be in 1..16 (8 is usual), got {cfg.retriever.pq_bits}")
    if cfg.retriever.recall_queries < 0:
        raise ConfigError("config key 'retriever.recall_queries' must be >= 0 (0 = no recall measurement), "
                          f"got {cfg.retriever.recall_queries}")
    _check_builder(cfg.builder)
    _check_run(cfg.run)
    _check_reward(cfg.reward, rebalanced=bool(cfg.ppo.balance_reward) and cfg.ppo.algo == "ppo")
    _check_sft(cfg.sft)
    _check_ppo(cfg.ppo)
    if cfg.ppo.balance_reward and cfg.reward.scorer == "rm":
        raise ConfigError("config key 'ppo.balance_reward' sets reward.rules.answer_ook, which reward.scorer=rm does "
                          "not use: set reward.scorer=hybrid (or rules), or ppo.balance_reward=false")
    _check_eval(cfg.eval)
    _check_use(cfg)
    _check_export_rl(cfg.export_rl)
    _check_languages(cfg)
    _check_prompt(cfg.prompt)


def _check_prompt(p: DictConfig) -> None:
    mode = str(getattr(p.mode, "value", p.mode))
    if p.retrieval_hint and mode != "rag":
        raise ConfigError(f"config key 'prompt.retrieval_hint' needs prompt.mode=rag (got {mode}): a closed-book "
                          "prompt shows no passages whose match could be stated")
    if not -1.0 <= p.hint_threshold <= 1.0:
        raise ConfigError(f"config key 'prompt.hint_threshold' is a cosine similarity in [-1, 1], got {p.hint_threshold}")


def _check_languages(cfg: DictConfig) -> None:
    """Language settings name a language with templates (or ``auto``); per-language texts name only those."""
    from halluguard.language import LANGUAGE_SETTINGS, check_localized

    _require_choices({"kb.language": (cfg.kb.language, LANGUAGE_SETTINGS),
                      "prompt.language": (cfg.prompt.language, LANGUAGE_SETTINGS)})
    for key, value in (("prompt.system", cfg.prompt.system), ("eval.gate_refusal", cfg.eval.gate_refusal),
                       ("eval.prompt_only_system", cfg.eval.prompt_only_system)):
        try:
            check_localized(value, key)
        except HalluguardError as exc:
            raise ConfigError(str(exc)) from None


def _require_choices(choices: dict[str, tuple[Any, Sequence[str]]]) -> None:
    """``{key: (value, allowed)}``: raise on the first value not allowed, naming the key and the closest choice.
    A list value (e.g. ``ppo.report_to``) has each of its items checked."""
    for key, (value, allowed) in choices.items():
        for item in (value if isinstance(value, (list, ListConfig)) else [value]):
            if item not in allowed:
                raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}, got '{item}'"
                                  f"{did_you_mean(str(item), allowed)}")


def _check_builder(b: DictConfig) -> None:
    """Builder values the schema's types cannot catch."""
    if b.num_proc < 1:
        raise ConfigError(f"config key 'builder.num_proc' must be an integer >= 1 (1 = no worker processes), "
                          f"got {b.num_proc}")


def _check_run(r: DictConfig) -> None:
    """``halluguard run``'s stage list: known names only, checked before the first stage starts."""
    if not r.stages and not r.baselines:
        raise ConfigError(f"config key 'run.stages' is empty: name the stages to run, out of {', '.join(RUN_ORDER)}")
    _require_choices({"run.stages": (r.stages, RUN_ORDER), "run.baselines": (r.baselines, RUN_BASELINES)})


def _check_reward(r: DictConfig, rebalanced: bool = False) -> None:
    _require_choices({"reward.scorer": (r.scorer, ("rm", "rules", "hybrid")),
                      "reward.train.finetune": (r.train.finetune, ("lora", "full")),
                      "reward.train.init": (r.train.init, ("base", "sft")),
                      "reward.train.overlong": (r.train.overlong, ("truncate", "drop"))})
    for key in ("refuse_ook", "answer_ook", "refuse_ik", "support"):
        if r.rules[key] < 0:
            raise ConfigError(f"config key 'reward.rules.{key}' is a magnitude and must be >= 0, got {r.rules[key]}")
    for key in ("batch_size", "max_length", "grad_accum", "logging_steps"):
        if r.train[key] <= 0:
            raise ConfigError(f"config key 'reward.train.{key}' must be positive, got {r.train[key]}")
    if r.eval_batch_size <= 0:
        raise ConfigError(f"config key 'reward.eval_batch_size' must be positive, got {r.eval_batch_size}")
    # Only the rule terms alone can be judged here; a hybrid's balance depends on its reward model (eval's audit).
    # With ppo.balance_reward, PPO sets answer_ook itself before training (measured ~1.45 on the demo build).
    if r.scorer == "rules" and r.rules.refuse_ik < r.rules.answer_ook and not rebalanced:
        import logging

        logging.getLogger("halluguard.config").warning(
            "reward.rules.refuse_ik (%s) is below reward.rules.answer_ook (%s) with reward.scorer=rules: refusing an "
            "answerable prompt is then cheaper than fabricating, and a policy learns to refuse everywhere",
            r.rules.refuse_ik, r.rules.answer_ook)


def _check_sft(s: DictConfig) -> None:
    _require_choices({"sft.finetune": (s.finetune, ("lora", "full"))})
    for key in ("batch_size", "grad_accum", "max_length", "logging_steps", "sample_max_new_tokens"):
        if s[key] <= 0:
            raise ConfigError(f"config key 'sft.{key}' must be positive, got {s[key]}")
    if s.epochs <= 0 and s.max_steps <= 0:
        raise ConfigError(f"config keys 'sft.epochs' ({s.epochs}) and 'sft.max_steps' ({s.max_steps}): "
                          "set a positive sft.epochs, or sft.max_steps > 0")
    if s.max_steps == 0 or s.max_steps < -1:
        raise ConfigError(f"config key 'sft.max_steps' must be -1 (run sft.epochs) or positive, got {s.max_steps}")
    for key in ("max_examples", "samples", "reserve_ik_questions"):
        if s[key] < 0:
            raise ConfigError(f"config key 'sft.{key}' must be >= 0 (0 = {'all' if key == 'max_examples' else 'none'}), "
                              f"got {s[key]}")
    if s.learning_rate <= 0:
        raise ConfigError(f"config key 'sft.learning_rate' must be positive, got {s.learning_rate}")
    if not 0 <= s.warmup_ratio < 1:
        raise ConfigError(f"config key 'sft.warmup_ratio' must be in [0, 1), got {s.warmup_ratio}")
    if s.lora.top_layers < 0:
        raise ConfigError(f"config key 'sft.lora.top_layers' must be >= 0 (0 = every block), got {s.lora.top_layers}")


PPO_ALGOS = ("ppo", "dpo", "grpo")
PPO_STARTS = ("sft", "base")
PPO_PROMPTS = PROMPT_CHOICES  # all | unseen_by_sft
KL_PENALTIES = ("k1", "k3")
SELECT_BY = ("kl_budget", "validation")
REPORT_TO = ("tensorboard", "wandb")


def _check_ppo(p: DictConfig) -> None:
    """PPO settings that would otherwise fail mid-run (or silently train something else)."""
    _require_choices({"ppo.algo": (p.algo, PPO_ALGOS), "ppo.start": (p.start, PPO_STARTS),
                      "ppo.prompts": (p.prompts, PPO_PROMPTS),
                      "ppo.kl.penalty": (p.kl.penalty, KL_PENALTIES), "ppo.report_to": (p.report_to, REPORT_TO),
                      "ppo.select.by": (p.select.by, SELECT_BY),
                      "ppo.select.rule": (p.select.rule, SELECT_RULES)})
    for key in ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens", "max_prompt_length",
                "save_every", "probe_every", "learning_rate", "max_grad_norm", "temperature", "cliprange",
                "cliprange_value"):
        if not p[key] > 0:
            raise ConfigError(f"config key 'ppo.{key}' must be positive, got {p[key]}")
    if p.prompts != "all" and p.algo != "ppo":
        raise ConfigError(f"config key 'ppo.prompts={p.prompts}' applies to ppo.algo=ppo only (dpo trains on the build's "
                          f"pairs, grpo on every PPO prompt); got ppo.algo={p.algo}")
    if p.balance_labels and p.batch_size < 2:
        raise ConfigError(f"config key 'ppo.batch_size' ({p.batch_size}) must be >= 2 with ppo.balance_labels=true: "
                          "each batch holds both ik and ook prompts")
    if p.batch_size % p.mini_batch_size:
        raise ConfigError(f"config key 'ppo.mini_batch_size' ({p.mini_batch_size}) must divide ppo.batch_size "
                          f"({p.batch_size}): each PPO epoch splits the rollout into equal minibatches")
    if not p.kl.budget > 0:
        raise ConfigError(f"config key 'ppo.kl.budget' must be positive (nats per response), got {p.kl.budget}: "
                          "a budget of zero would stop PPO before its first update")
    for key in ("target", "horizon"):
        if not p.kl[key] > 0:
            raise ConfigError(f"config key 'ppo.kl.{key}' must be positive, got {p.kl[key]}")
    if p.kl.beta < 0:
        raise ConfigError(f"config key 'ppo.kl.beta' must be >= 0, got {p.kl.beta}")
    for key in ("gamma", "lam"):
        if not 0 <= p[key] <= 1:
            raise ConfigError(f"config key 'ppo.{key}' must be in [0, 1], got {p[key]}")
    if not 0 < p.top_p <= 1:
        raise ConfigError(f"config key 'ppo.top_p' must be in (0, 1], got {p.top_p}")
    for key in ("probe_prompts", "vf_coef", "generate_threads"):
        if p[key] < 0:
            raise ConfigError(f"config key 'ppo.{key}' must be >= 0, got {p[key]}")
    if p.get("balance_reward") and p.balance_prompts < 2:
        raise ConfigError(f"config key 'ppo.balance_prompts' must be >= 2 with ppo.balance_reward=true (half IK, "
                          f"half OOK), got {p.balance_prompts}")
    if p.lora.top_layers < 0:
        raise ConfigError(f"config key 'ppo.lora.top_layers' must be >= 0 (0 = every block), got {p.lora.top_layers}")
    _check_select(p)


def _check_select(p: DictConfig) -> None:
    s = p.select
    if s.by == "validation" and p.algo != "ppo":
        raise ConfigError(f"config key 'ppo.select.by=validation' chooses among PPO's checkpoints; ppo.algo={p.algo} "
                          "saves none: set ppo.select.by=kl_budget")
    if not 0 < s.validation_fraction < 1:
        raise ConfigError(f"config key 'ppo.select.validation_fraction' must be in (0, 1), got {s.validation_fraction}")
    if s.samples < 0:
        raise ConfigError(f"config key 'ppo.select.samples' must be >= 0 (0 = greedy), got {s.samples}")
    if s.max_new_tokens <= 0:
        raise ConfigError(f"config key 'ppo.select.max_new_tokens' must be positive, got {s.max_new_tokens}")



def _check_eval(e: DictConfig) -> None:
    """Evaluation values the schema's types cannot catch, checked before anything loads."""
    _require_choices({"eval.overlap": (e.overlap, ("error", "warn")),
                      "eval.report_formats": (e.report_formats, ("html", "md"))})
    for key in ("batch_size", "max_new_tokens"):
        if e[key] <= 0:
            raise ConfigError(f"config key 'eval.{key}' must be positive, got {e[key]}")
    for key in ("max_questions", "bootstrap", "changed_rows"):
        if e[key] < 0:
            raise ConfigError(f"config key 'eval.{key}' must be >= 0, got {e[key]}")
    if not e.greedy and e.temperature <= 0:
        raise ConfigError(f"config key 'eval.temperature' must be positive when eval.greedy is false, "
                          f"got {e.temperature}")
    if e.sampled.samples < 0:
        raise ConfigError(f"config key 'eval.sampled.samples' must be >= 0 (0 = off), got {e.sampled.samples}")
    if e.sampled.top_k < 0:
        raise ConfigError(f"config key 'eval.sampled.top_k' must be >= 0 (0 = every token), got {e.sampled.top_k}")
    if e.sampled.samples > 0:
        for key in ("temperature", "max_new_tokens", "permutations"):
            if e.sampled[key] <= 0:
                raise ConfigError(f"config key 'eval.sampled.{key}' must be positive when eval.sampled.samples > 0, "
                                  f"got {e.sampled[key]}")


def _check_use(cfg: DictConfig) -> None:
    """``halluguard export`` and ``halluguard ask``: which trained policy, and the answer length."""
    _require_choices({"export.policy": (cfg.export.policy, TRAINED_POLICY_CHOICES),
                      "ask.policy": (cfg.ask.policy, TRAINED_POLICY_CHOICES)})
    if cfg.ask.max_new_tokens <= 0:
        raise ConfigError(f"config key 'ask.max_new_tokens' must be positive, got {cfg.ask.max_new_tokens}")
    if cfg.ask.passage_chars < 0:
        raise ConfigError(f"config key 'ask.passage_chars' must be >= 0, got {cfg.ask.passage_chars}")


def _check_export_rl(e: DictConfig) -> None:
    """``halluguard export-rl``: a known format and scorer, and a model when one is named."""
    _require_choices({"export_rl.format": (e.format, (*EXPORT_RL_FORMATS, "all")),
                      "export_rl.scorer": (e.scorer, EXPORT_RL_SCORERS)})
    if not str(e.model or "").strip():
        raise ConfigError("config key 'export_rl.model' is empty: give `auto` or a model folder / hub id")


def schema_paths() -> set[str]:
    """Every valid dotted key, e.g. ``model.name_or_path`` (for override checks and docs)."""
    out: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        for name, f in _schema_fields(cls).items():
            path = f"{prefix}{name}"
            out.add(path)
            sub = _dataclass_of(f)
            if sub is not None:
                walk(sub, path + ".")

    walk(RootConfig, "")
    return out


def check_overrides(overrides: Sequence[str], groups: Sequence[str] = ()) -> None:
    """Fail fast on a command-line override whose key is not in the schema.

    Hydra would also refuse it, but without suggesting the key that was meant. Appends (``+key=``),
    deletions (``~key``) and ``hydra.*`` keys are left to Hydra.
    """
    valid = schema_paths() | set(groups)
    for item in overrides:
        if item.startswith(("-", "+", "~")) or "=" not in item:
            continue
        key = item.split("=", 1)[0].split("@", 1)[0]
        if key.startswith("hydra") or key in valid:
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        siblings = [p for p in valid if p.rsplit(".", 1)[0] == parent] if parent else [p for p in valid if "." not in p]
        hint = did_you_mean(key, siblings)
        raise ConfigError(f"unknown config key '{key}' in override '{item}'{hint}")


def expand_path(path: str | os.PathLike) -> Path:
    """A user path made absolute (``~`` expanded), so every process and rank agrees on it."""
    return Path(os.path.expanduser(str(path))).resolve()


def resolve_cache_dir(cfg: DictConfig) -> Path:
    return expand_path(cfg.paths.cache)


def package_data(relative: str) -> str:
    """Absolute path of a file shipped inside the package (``${hg.data:demo_kb/passages.jsonl}``)."""
    return str(Path(__file__).resolve().parent / "data" / relative)


if not OmegaConf.has_resolver("hg.data"):
    OmegaConf.register_new_resolver("hg.data", package_data)


def stage_dir(cfg: DictConfig, stage: str) -> Path:
    return expand_path(cfg.paths.runs) / cfg.exp / stage


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain JSON-able data (for manifests)."""
    data = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(data, dict)
    return data


def plain_text(value: Any) -> str | dict:
    """A per-language config text (``prompt.system``, ``eval.gate_refusal``, ...) as plain data: a string,
    or ``{language: string}``."""
    return to_plain(value) if isinstance(value, DictConfig) else str(value)


def conf_dir() -> Path:
    """The project's ``conf/`` folder (``HALLUGUARD_CONF`` points elsewhere)."""
    env = os.environ.get("HALLUGUARD_CONF")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not (path / "config.yaml").is_file():
        raise HalluguardError(
            f"halluguard's config folder was not found at {path}. Install the project in editable mode "
            "(`pip install -e .` from the repository) or set HALLUGUARD_CONF to its conf/ folder."
        )
    return path
