"""``halluguard <stage> [hydra overrides]``: the one console command.

Kept free of heavy imports (torch, transformers, sentence-transformers): ``halluguard --help``
must answer at once. Hydra is only imported once a stage is chosen, and the stage's own module
imports what it needs when it runs.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import time
from typing import Optional, Sequence

from halluguard import __version__
from halluguard.errors import HalluguardError, did_you_mean
from halluguard.stages import DESCRIPTIONS, STAGES

# `export-rl` is registered here, beside the registry in halluguard.stages (whose set of stages the tests pin):
# it runs through the same path as every stage (validated config, `run(cfg) -> Manifest`).
STAGES = {**STAGES, "export-rl": "halluguard.stages.export_rl"}
DESCRIPTIONS = {**DESCRIPTIONS,
                "export-rl": "the build's prompts, pairs and reward as veRL / OpenRLHF / TRL files, with launch commands"}

GROUPS = ("model", "retriever", "kb", "prompt", "builder", "reward", "sft", "ppo", "eval")

USAGE = """usage: halluguard <stage> [key=value ...] [hydra flags]

Train a language model *when* to answer: refuse where the knowledge base has no answer.

stages:
""" + "\n".join(
    f"  {name:<9} {DESCRIPTIONS[name]}{'' if STAGES[name] else '  [not implemented yet]'}" for name in STAGES
) + """

examples:
  halluguard run                               the whole pipeline on the embedded defaults
  halluguard build --cfg job                   print the composed config and exit
  halluguard build exp=mine retriever=minilm_ivf
  halluguard build -m seed=0,1                 Hydra multirun
  halluguard build --help                      config groups and Hydra's own flags
  halluguard ask "Is roaming free?" exp=demo   retrieval, probe verdict, untrained and trained answers
  halluguard ask exp=demo                      the same for questions typed one by one (stdin)
  halluguard export exp=demo                   runs/demo/export/<policy>/: a standalone HF model folder
  halluguard export-rl exp=demo export_rl.format=verl   runs/demo/export_rl/verl/: veRL parquet + reward

Outputs go to runs/<exp>/<stage>/ with a manifest.json. See README.md.
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if args[0] in ("-V", "--version"):
        print(f"halluguard {__version__}")
        return 0
    stage, rest = args[0], args[1:]
    if stage not in STAGES:
        _error(f"unknown stage '{stage}'{did_you_mean(stage, STAGES)}; stages: {', '.join(STAGES)}")
        return 2
    if STAGES[stage] is None:
        _error(f"stage '{stage}' is not implemented yet ({DESCRIPTIONS[stage]}). Available: "
               + ", ".join(s for s, m in STAGES.items() if m))
        return 2
    try:
        from halluguard.config import check_overrides

        if stage == "ask":
            rest = question_override(rest)
        check_overrides(rest, GROUPS)
    except HalluguardError as exc:
        _error(str(exc))
        return 2
    return _run_hydra(stage, rest)


_OVERRIDE_KEY = re.compile(r"^[+~]{0,2}[A-Za-z_][\w.@/-]*$")


def question_override(args: Sequence[str]) -> list[str]:
    """``halluguard ask "free text" [overrides]``: the one argument that is neither a Hydra flag (or a flag's
    value) nor a ``key=value`` override is the question, passed on as ``ask.question=<quoted>`` in its place.
    A question containing ``=`` after a key-like word must be given as ``ask.question=...``."""
    args = list(args)
    free = [i for i in _positional_indexes(args) if not _is_override(args[i])]
    if not free:
        return args
    if len(free) > 1:
        words = " ".join(args[i] for i in free)
        raise HalluguardError(f"halluguard ask takes one question, as one argument: quote it, e.g. "
                              f"halluguard ask \"{words}\" (these arguments are not key=value overrides: "
                              f"{', '.join(repr(args[i]) for i in free)})")
    i = free[0]
    return [*args[:i], f"ask.question={hydra_quote(args[i])}", *args[i + 1:]]


def _is_override(arg: str) -> bool:
    """``key=value``, ``+key=value``, ``~key``: a key-like word before any ``=``."""
    key = arg.split("=", 1)[0]
    return ("=" in arg or arg.startswith("~")) and bool(_OVERRIDE_KEY.match(key))


def hydra_quote(text: str) -> str:
    r"""``text`` as one single-quoted Hydra override value that Hydra and OmegaConf give back unchanged.

    Hydra's quoted strings: a quote is escaped with a backslash, and backslashes are literal except
    a run of them right before a quote or at the end, which must be doubled. OmegaConf would resolve
    ``${...}`` inside the value, so ``${`` is escaped as ``\${``. Commas, colons, brackets, ``=`` and
    double quotes need nothing inside single quotes.
    """
    text = text.replace("${", "\\${")
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def _run_hydra(stage: str, overrides: list[str]) -> int:
    import hydra

    from halluguard.config import conf_dir

    try:
        config_path = str(conf_dir())
    except HalluguardError as exc:
        _error(str(exc))
        return 2

    @hydra.main(config_path=config_path, config_name="config", version_base="1.3")
    def hydra_entry(cfg) -> None:
        code = run_stage(stage, cfg)
        if code:
            sys.exit(code)

    saved = sys.argv
    flags, plain = split_hydra_flags(overrides)
    # Hydra's parser wants its flags before the positional overrides (argparse does not intermix).
    sys.argv = [f"halluguard {stage}", *flags, f"stage={stage}", *plain]
    try:
        hydra_entry()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = saved
    return 0


_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_hydra_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra's own flags (with their values) from ``key=value`` overrides."""
    positional = set(_positional_indexes(args))
    flags = [a for i, a in enumerate(args) if i not in positional]
    plain = [a for i, a in enumerate(args) if i in positional]
    return flags, plain


def _positional_indexes(args: Sequence[str]) -> list[int]:
    """Indexes of the arguments that are not Hydra flags or a flag's value."""
    out: list[int] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):
            takes_value = arg in _VALUE_FLAGS or (arg in ("--info", "-i") and i + 1 < len(args)
                                                  and args[i + 1] in _INFO_CHOICES)
            if takes_value and i + 1 < len(args):
                i += 1
        else:
            out.append(i)
        i += 1
    return out


def run_stage(stage: str, cfg) -> int:
    """Validate ``cfg``, run the stage, report. Returns the process exit code."""
    from halluguard.config import validate

    log = logging.getLogger("halluguard")
    # Hydra's job logging sets the root logger to INFO; libraries (faiss's loader, sentence-transformers)
    # would narrate every load. halluguard's own messages stay at INFO.
    logging.getLogger().setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    try:
        cfg = validate(cfg)
        module = importlib.import_module(STAGES[stage])  # type: ignore[arg-type]
        start = time.perf_counter()
        manifest = module.run(cfg)
        if manifest is not None:  # ``ask`` writes nothing
            log.info("%s finished in %.1f s -> %s", stage, time.perf_counter() - start, manifest.path.parent)
    except HalluguardError as exc:
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        _error("interrupted; no partial output was kept")
        return 130
    return 0


def _error(message: str) -> None:
    print(f"halluguard: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
