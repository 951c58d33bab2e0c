"""halluguard's reward as OpenRLHF's custom reward function (``--remote_rm_url <this file>``).

Use it with the prompt files of ``halluguard export-rl export_rl.format=openrlhf``::

    python3 -m openrlhf.cli.train_ppo_ray ... --prompt_data <export>/prompts_train.jsonl \\
        --input_key prompt --apply_chat_template --label_key ground_truth --remote_rm_url <this file>

OpenRLHF loads this file by path and calls ``reward_func(queries, prompts, labels)``: ``queries`` are the prompt
plus the generated response as text, ``prompts`` the chat-rendered prompts, ``labels`` the ``--label_key`` column,
here halluguard's scoring record (:mod:`~halluguard.integrations.reward_bridge`). It returns ``{"rewards",
"scores", "extra_logs"}`` (rewards for the advantages, scores for ``--dynamic_filtering``, extra logs for the
tracker), as in OpenRLHF's example https://github.com/OpenRLHF/OpenRLHF/blob/main/examples/python/reward_func.py;
a ``--remote_rm_url`` ending in ``.py`` is loaded with importlib and its ``reward_func`` called (the flags are those
of ``openrlhf/cli/train_ppo_ray.py``). halluguard must be installed in OpenRLHF's Python environment.

The score is halluguard's, not a 0-1 accuracy: set ``--dynamic_filtering_reward_range`` to the range of the rule
weights (by default -1.5 to 1) if you filter on it.
"""

from __future__ import annotations

from typing import Sequence

from halluguard.errors import HalluguardError
from halluguard.integrations.reward_bridge import clean_response, read_record, resolve_source, score


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[str], **kwargs) -> dict:
    """halluguard's score of each query's response (higher is better), in OpenRLHF's reward dict."""
    import torch

    if not len(queries) == len(prompts) == len(labels):
        raise HalluguardError(f"reward_func got {len(queries)} queries, {len(prompts)} prompts and {len(labels)} "
                              "labels; run OpenRLHF with --label_key ground_truth on halluguard's exported prompts")
    responses = [clean_response(response_of(q, p)) for q, p in zip(queries, prompts)]
    records = [read_record(label, where=f"label {i} (--label_key ground_truth)") for i, label in enumerate(labels)]
    sources = [resolve_source(r.get("scorer_config")) for r in records]
    rewards = torch.tensor(score(responses, records, sources), dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": {"halluguard_reward": rewards.clone()}}


def response_of(query: str, prompt: str) -> str:
    """The response part of ``query`` (prompt + response): the text after the prompt, which may follow padding."""
    at = query.find(prompt) if prompt else -1
    if at < 0:
        raise HalluguardError("an OpenRLHF query does not contain its prompt, so its response cannot be cut out "
                              f"(query starts {query[:80]!r}, prompt starts {prompt[:80]!r})")
    return query[at + len(prompt):]
