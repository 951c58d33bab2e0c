"""``halluguard ask``: one question through the whole system, before and after training.

``halluguard ask exp=demo 'ask.question="How do I ..."'`` (or ``halluguard ask "How do I ..." exp=demo``)
prints, for the question:

1. the passages retrieved from the build's index (``runs/<exp>/build``), with their cosine similarity;
2. the knowledge probe's verdict, ik / ook / ambiguous: the build's own rule
   (:func:`data_builders.probe.probe_question`, with the thresholds the build ran with), which decides from
   retrieval alone (top-1 similarity and the gap to the second hit; a typed question has no gold answer),
   and beside it the retrieval gate of the evaluation (top-1 vs ``eval.gate_max_top1``);
3. the answer of the reference (the untrained ``model.name_or_path``), then that of the trained policy
   (``ask.policy``: ``auto`` = ppo when its stage finished, else sft), each with the refusal detector's
   verdict and score. Without a trained policy only the reference answers, and it says so.

Both models see the training prompt (``prompt.*``: system message, the retrieved passages, the question),
are loaded the way ``halluguard eval`` loads them, and decode greedily (``ask.max_new_tokens``).
With ``ask.question=null`` (the default) questions are read from stdin, one a line, after a ``question> ``
prompt, until an empty line or end of input; the models load once. Nothing is written.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from dataclasses import dataclass
from typing import Any, Optional, TextIO

from omegaconf import DictConfig, OmegaConf

from halluguard.config import stage_dir
from halluguard.errors import HalluguardError

log = logging.getLogger("halluguard.ask")

PROMPT = "question> "
RULE = "-" * 78


@dataclass
class Speaker:
    """One model that answers: its name, what it is, and the loaded weights."""

    name: str
    title: str
    model: Any
    tokenizer: Any


@dataclass
class Reply:
    speaker: str
    answer: str
    score: float
    refused: bool


@dataclass
class Asked:
    """Everything printed for one question (returned for callers and tests)."""

    question: str
    hits: list
    probe: Any
    gate_refuses: bool
    replies: list[Reply]


class Session:
    """The index, encoder, refusal detector and models of one experiment, loaded once for many questions."""

    def __init__(self, cfg: DictConfig, out: TextIO = sys.stdout):
        import torch

        from halluguard.artifacts import Manifest
        from halluguard.retrieval import Encoder, KnowledgeIndex
        from halluguard.stages.eval import refusal_detector

        self.cfg, self.out = cfg, out
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            build = Manifest.load(stage_dir(cfg, "build"))
        except HalluguardError:
            raise HalluguardError(f"experiment '{cfg.exp}' has no build: {stage_dir(cfg, 'build')} holds no "
                                  f"manifest.json. Run `halluguard build exp={cfg.exp}` first (it builds the "
                                  "index the question is searched in)") from None
        self.build = build
        self.choice = self._choose()  # a missing or broken trained stage fails here, before anything loads
        self.index = KnowledgeIndex.load(build.output_path("index"), nprobe=cfg.retriever.nprobe)
        self.encoder = Encoder.from_config(cfg.retriever)
        self.detector = refusal_detector(cfg, self.encoder)
        self.probe_cfg, self.probe_from = probe_settings(cfg, build)
        self.speakers = self._load_speakers()

    # ------------------------------------------------------------ models

    def _choose(self):
        """``(name, why, source)`` of the trained policy (``name`` None when there is none) and the reference's."""
        from halluguard.evaluation.models import resolve_source
        from halluguard.trained import pick_policy, policy_source

        cfg = self.cfg
        name, why = pick_policy(cfg, cfg.ask.policy, "ask.policy")
        source = None if name is None else policy_source(cfg, name)  # names the folder and the command
        return name, why, source, resolve_source(cfg, "reference")

    def _load_speakers(self) -> list[Speaker]:
        from halluguard.trained import lineage, load_quietly

        cfg = self.cfg
        name, why, source, reference = self.choice
        model, tokenizer = load_quietly(reference, cfg, self.device)
        speakers = [Speaker("reference", f"reference: {cfg.model.name_or_path}, untrained", model, tokenizer)]
        if name is None:
            self.note = f"no trained policy, the reference answers alone: {why}"
        else:
            info = lineage(cfg, name, source)
            model, tokenizer = load_quietly(source, cfg, self.device)
            speakers.append(Speaker(name, f"{name}: trained, {info.chain} from {info.base_model} "
                                          f"({stage_dir(cfg, name)})", model, tokenizer))
            self.note = f"trained policy: {why}"
        return speakers

    # ------------------------------------------------------------ one question

    def ask(self, question: str) -> Asked:
        from halluguard.generation import generate
        from halluguard.kb import Question
        from halluguard.prompting import build_messages, render_prompt

        cfg, out = self.cfg, self.out
        question = " ".join(str(question).split())
        k = int(cfg.prompt.passages)
        hits = self.index.search([question], self.encoder, k)[0]
        probe = probe_verdict(Question(id="ask", question=question), hits, self.probe_cfg)
        top1 = hits[0].score if hits else 0.0
        max_top1 = float(cfg.eval.gate_max_top1)
        gate_refuses = bool(hits) and top1 < max_top1

        print(f"\nquestion: {question}", file=out)
        print(f"\nretrieved from {self.build.path.parent} ({len(self.index.passages)} passages), top {len(hits)}:",
              file=out)
        limit = int(cfg.ask.passage_chars)
        for rank, hit in enumerate(hits, start=1):
            p = hit.passage
            text = " ".join(p.text.split())
            text = text if len(text) <= limit else text[:limit].rstrip() + " ..."
            title = f"{p.title}: " if p.title else ""
            print(f"  {rank}. similarity {hit.score:.3f}  {p.id}  {title}{text}", file=out)
        if not hits:
            print("  (no passages)", file=out)
        gap = top1 - hits[1].score if len(hits) > 1 else top1  # the probe's own definition, unrounded
        print(f"\nknowledge probe ({self.probe_from}): {probe.probe_label.upper()}  "
              f"[score: top-1 similarity {top1:.3f}, gap to the 2nd {gap:.3f}; {probe.reason}]", file=out)
        print(f"retrieval gate (eval.gate_max_top1={max_top1:g}): "
              f"{'refuses' if gate_refuses else 'lets the model answer'} (top-1 {top1:.3f} "
              f"{'<' if gate_refuses else '>='} {max_top1:g})", file=out)

        mode = str(getattr(cfg.prompt.mode, "value", cfg.prompt.mode))
        shown = [h.passage for h in hits] if mode == "rag" else []
        messages = build_messages(question, shown, cfg.prompt, retrieval_score=top1)
        replies = []
        threshold = self.detector.threshold
        for speaker in self.speakers:
            prompt = render_prompt(speaker.tokenizer, messages)
            answer = generate(speaker.model, speaker.tokenizer, [prompt], max_new_tokens=int(cfg.ask.max_new_tokens),
                              batch_size=1)[0]
            score = float(self.detector.score([answer])[0])
            refused = bool(self.detector.is_refusal([answer])[0])
            replies.append(Reply(speaker.name, answer, score, refused))
            print(f"\n=== {speaker.title} ===", file=out)
            print(textwrap.fill(answer, width=100) if answer else "(empty answer)", file=out)
            if not answer:
                verdict = "EMPTY (not counted as a refusal)"
            elif refused:
                verdict = f"REFUSES (score {score:.3f} >= {threshold:g})"
            else:
                verdict = f"ANSWERS (score {score:.3f} < {threshold:g})"
            print(f"refusal detector: {verdict}", file=out)
        if len(self.speakers) == 1:
            print(f"\n(no trained policy for experiment '{cfg.exp}': only the reference answered; "
                  f"train one with `halluguard run exp={cfg.exp}`)", file=out)
        out.flush()
        return Asked(question, hits, probe, gate_refuses, replies)


def probe_settings(cfg, build) -> tuple[Any, str]:
    """The probe thresholds the build ran with (from its manifest), else the current ``builder.probe``."""
    recorded = ((build.config or {}).get("builder") or {}).get("probe")
    if recorded:
        merged = OmegaConf.merge(cfg.builder.probe, {k: v for k, v in recorded.items()
                                                     if k in cfg.builder.probe})
        return merged, "the build's rule and thresholds"
    return cfg.builder.probe, "the build's rule, builder.probe thresholds"


def probe_verdict(question, hits, probe_cfg):
    """The build's knowledge probe on one question (no gold answer, no dataset label): ik, ook or ambiguous."""
    from data_builders.probe import probe_question

    return probe_question(question, hits, probe_cfg)


def read_questions(stdin: TextIO, out: TextIO):
    """Questions from ``stdin`` after a ``question> `` prompt, until an empty line or end of input."""
    while True:
        out.write(PROMPT)
        out.flush()
        line = stdin.readline()
        if not line:  # end of input
            out.write("\n")
            out.flush()
            return
        if not line.strip():
            return
        yield line.strip()


def run(cfg: DictConfig, stdin: Optional[TextIO] = None, out: Optional[TextIO] = None) -> None:
    """Answer ``ask.question``, or every question read from stdin; prints, writes nothing, returns None."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    question = cfg.ask.question
    if question is not None and not str(question).strip():
        raise HalluguardError("ask.question is empty: give a question, or leave it out to type questions one by one")
    session = Session(cfg, out)
    names = " and ".join(s.name for s in session.speakers)
    print(f"halluguard ask: experiment '{cfg.exp}', answers by {names}; {session.note}", file=out)
    if question is not None:
        session.ask(str(question))
        return None
    print("type a question and press Enter; an empty line or end of input (Ctrl-D) ends", file=out)
    count = 0
    for line in read_questions(stdin, out):
        session.ask(line)
        count += 1
        print(RULE, file=out)
    print(f"{count} question{'s' if count != 1 else ''} answered", file=out)
    return None
