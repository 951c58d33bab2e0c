"""halluguard: train a language model *when* to answer.

Stages (one console command, ``halluguard <stage> [hydra overrides]``):

* ``build``  - FAISS index over the knowledge base (and, as the builders land, preference pairs)
* ``sft``    - supervised refusal training: the reference PPO is held to
* ``reward`` - reward model: calibrated refusal above confident fabrication
* ``ppo``    - PPO with a KL penalty to the SFT reference
* ``eval``   - abstention metrics on held-out questions, before and after
* ``run``    - every stage in order

This module stays import-light on purpose: ``halluguard --help`` must not pay for torch.
"""

__version__ = "0.1.0"
