"""Stage registry: subcommand -> module with ``run(cfg) -> Manifest`` (``None`` for a stage that writes
nothing, like ``ask``).

Stages that are not built yet map to ``None``; the CLI answers them with a clear error.
"""

from __future__ import annotations

STAGES: dict[str, str | None] = {
    "build": "halluguard.stages.build",
    "sft": "halluguard.stages.sft",
    "reward": "halluguard.stages.reward",
    "ppo": "halluguard.stages.ppo",
    "eval": "halluguard.stages.eval",
    "run": "halluguard.stages.run",
    "export": "halluguard.stages.export",
    "ask": "halluguard.stages.ask",
}

DESCRIPTIONS = {
    "build": "FAISS index, IK/OOK probe and preference pairs from the knowledge base",
    "sft": "supervised refusal training on the build's chosen responses (the SFT reference)",
    "reward": "reward model: calibrated refusal above confident fabrication",
    "ppo": "PPO with a KL penalty to the SFT reference",
    "eval": "abstention metrics on held-out questions, before and after",
    "run": "every stage in order on one experiment (what `make demo` runs)",
    "export": "the trained policy merged into a standalone Hugging Face model folder",
    "ask": "one question: retrieval, probe verdict, reference and trained answers",
}
