"""halluguard's reward behind the reward hooks of outside RL engines (written by ``halluguard export-rl``).

* :mod:`~halluguard.integrations.verl_reward` - veRL's ``custom_reward_function``: ``compute_score(data_source,
  solution_str, ground_truth, extra_info)`` and ``compute_score_batch(...)`` for ``reward_model.reward_manager=batch``.
* :mod:`~halluguard.integrations.openrlhf_reward` - OpenRLHF's ``--remote_rm_url <file.py>``:
  ``reward_func(queries, prompts, labels)``.
* :mod:`~halluguard.integrations.trl_reward` - TRL's ``reward_funcs`` (``GRPOTrainer``, ``RLOOTrainer``):
  ``halluguard_reward(completions, **kwargs) -> list[float]``.

Each turns the engine's arguments into one call of halluguard's scoring interface,
``Scorer.score(prompts, responses, meta)`` (:mod:`halluguard.reward.scoring`), through
:mod:`~halluguard.integrations.reward_bridge`: the reward an engine trains on is the one ``halluguard ppo``
trains on. The engines are not dependencies: these modules import none of them.
"""
