"""halluguard's reward as a TRL reward function (``GRPOTrainer``, ``RLOOTrainer``; ``trl grpo --reward_funcs``).

Use it with the prompt folder of ``halluguard export-rl export_rl.format=trl``::

    trl grpo --dataset_name <export>/prompts \\
        --reward_funcs halluguard.integrations.trl_reward.halluguard_reward --use_vllm ...

or in Python, ``GRPOTrainer(..., reward_funcs=[halluguard_reward], train_dataset=load_dataset(<export>/prompts)
["train"])``. TRL calls a reward function with ``prompts`` and ``completions`` and every other dataset column as a
keyword (here ``ground_truth``, halluguard's scoring record: :mod:`~halluguard.integrations.reward_bridge`) and takes
one float per completion back (``trl/trainer/grpo_trainer.py``, ``_calculate_rewards``).
"""

from __future__ import annotations

from typing import Any, Sequence

from halluguard.errors import HalluguardError
from halluguard.integrations.reward_bridge import clean_response, read_record, resolve_source, score


def halluguard_reward(completions: Sequence[Any], **kwargs) -> list[float]:
    """halluguard's score of each completion (higher is better)."""
    records = kwargs.get("ground_truth")
    if records is None:
        raise HalluguardError("halluguard_reward needs the dataset's ground_truth column (halluguard's scoring record): "
                              "train on the prompts folder `halluguard export-rl export_rl.format=trl` writes")
    if len(records) != len(completions):
        raise HalluguardError(f"halluguard_reward got {len(completions)} completions but {len(records)} ground_truth "
                              "values")
    responses = [clean_response(completion_text(c)) for c in completions]
    decoded = [read_record(r, where=f"ground_truth of completion {i}") for i, r in enumerate(records)]
    return score(responses, decoded, [resolve_source(r.get("scorer_config")) for r in decoded])


def completion_text(completion: Any) -> str:
    """The assistant's text of a conversational completion (a list of messages) or a plain one."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion
                       if isinstance(m, dict) and m.get("role", "assistant") == "assistant")
    return "" if completion is None else str(completion)
