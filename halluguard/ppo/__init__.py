"""halluguard's own PPO (TRL removed its PPOTrainer; this is written from the papers, not from that code).

One role per module, in the order a step runs them:

* :mod:`~halluguard.ppo.prompts` - the prompt set: rendering, the length check, which prompts a step uses
* :mod:`~halluguard.ppo.prompt_selection` - which of the build's prompts PPO trains on (``ppo.prompts``)
* :mod:`~halluguard.ppo.rollout` - sampling responses that stop at eos (left-padded prompts, KV cache)
* :mod:`~halluguard.ppo.value_head` - the policy and its value head: one forward gives logits and values
* :mod:`~halluguard.ppo.logprobs` - per-token log-probs of the sampled tokens (policy, reference)
* :mod:`~halluguard.ppo.kl` - KL estimators k1/k3, fixed and adaptive beta, the KL budget
* :mod:`~halluguard.ppo.advantages` - per-token rewards, GAE, whitening
* :mod:`~halluguard.ppo.losses` - clipped policy and value losses, entropy, clip fraction, approx KL
* :mod:`~halluguard.ppo.trainer` - the loop, each phase a named function
* :mod:`~halluguard.ppo.checkpoint`, :mod:`~halluguard.ppo.tracking`, :mod:`~halluguard.ppo.plots` - what
  survives an interruption and what a person watches
* :mod:`~halluguard.ppo.distributed` - several processes (``accelerate launch``): which one writes, the
  barrier, the DeepSpeed check; shared with the sft and reward stages

References: Schulman et al. 2017 (PPO, clipped objective), Schulman et al. 2016 (GAE), Ziegler et al.
2019 (KL-penalised reward, adaptive beta), Schulman 2020 "Approximating KL Divergence" (k1, k3).

Kept free of imports: ``halluguard --help`` and config validation must not load torch.
"""
