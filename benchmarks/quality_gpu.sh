#!/usr/bin/env bash
# The longer quality experiment for one GPU: the chain the CPU demo cannot afford, on the demo build.
#
#   benchmarks/quality_gpu.sh OUT_DIR [EXP]
#
# Needs a finished `halluguard build exp=EXP` (default EXP=gpu) in runs/EXP/build and a CUDA device.
# Runs, each step only while the time budget allows (QUALITY_BUDGET_S, default 480 s; the device
# loans here are 15 minutes in all):
#   A. sft (3 epochs instead of the CPU demo's 0.65, with QUALITY_SFT: by default full fine-tuning at lr 5e-5,
#      which on the third GPU run drew the boundary LoRA did not), reward (1 epoch), ppo (KL budget 1.0), eval
#      of every model: the question of issues #5/#7 with an SFT reference trained to convergence;
#   B. ppo again from the same SFT reference and reward with KL budget and target 3.0, eval of ppo and gated_ppo:
#      a second point on the trade-off curve;
#   C. the DPO baseline (1 epoch) on the same SFT reference, eval of dpo.
#   D. (only when listed in QUALITY_STEPS) ppo again from A's SFT reference and reward with QUALITY_D_OVERRIDES in
#      place of QUALITY_OVERRIDES, eval of ppo and gated_ppo: an ablation of one setting on the same reference.
#   R. (only when listed) A's sft and reward stages alone, the shared start of P.
#   P. (only when listed) the QUALITY_P variants, one after another, each in its own folder runs/EXP-NAME
#      holding A's build, SFT reference and reward. QUALITY_P_PARALLEL=1 runs them at once instead, which
#      measured *slower*: five at once on one H100 made a PPO step 17-35 s against 2.5-3.3 s alone.
#      QUALITY_P is ';'-separated NAME|STAGES|OVERRIDES, e.g.
#      "bal|ppo,eval|ppo.balance_reward=true 'eval.models=[sft,ppo]';full|sft,eval|sft.finetune=full"
#      (a stage a variant reruns is not copied from A). QUALITY_OVERRIDES is added to each.
# QUALITY_OVERRIDES (space-separated Hydra overrides) is added to every halluguard call, e.g. a prompt or reward
# setting under test (QUALITY_OVERRIDES="+experiment=gpu_boundary" QUALITY_PPO_STEPS=20: the fourth GPU run's PPO,
# the rule reward at 64 prompts a batch; the script's own exp= and ppo.steps= win over the experiment's;
# add eval.sampled.samples=8 for each question's sampled refusal rate beside the greedy table); the build
# in runs/EXP/build must have been made with the same build-time settings.
# QUALITY_STEPS picks and orders the steps (default "A B C"; B, C and D need A's outputs, from this call or an
# earlier one); QUALITY_A_MODELS is A's eval.models (default [auto]: every model); QUALITY_PPO_STEPS caps PPO's
# steps (default 40); QUALITY_ALLOW_CPU=1 skips the CUDA check (a dry run of the script logic with tiny
# overrides); QUALITY_A_NEED is the budget A needs left to start (default 240 s).
# Everything a person reads comes back under OUT_DIR: log.txt (the printed tables), and results.tar.gz
# (each run's eval results/report/samples, PPO metrics and curves, stage manifests), refreshed after each step.
set -uo pipefail

OUT_DIR=${1:?usage: quality_gpu.sh OUT_DIR [EXP]}
EXP=${2:-gpu}
BUDGET=${QUALITY_BUDGET_S:-480}
read -r -a EXTRA <<< "${QUALITY_OVERRIDES:-}"
read -r -a EXTRA_D <<< "${QUALITY_D_OVERRIDES:-}"
read -r -a STEPS <<< "${QUALITY_STEPS:-A B C}"
# QUALITY_SFT="" keeps conf/sft's LoRA; "+experiment=boundary" is the LoRA (r64, attention + MLP) that drew the
# boundary on CPU (AUC 0.727), not yet run on a GPU
read -r -a SFT <<< "${QUALITY_SFT-sft.finetune=full sft.learning_rate=5e-5}"
# the reference and reward model of steps A and R
TRAIN=(sft.max_steps=-1 sft.epochs=3 "${SFT[@]}" reward.train.max_steps=-1 reward.train.epochs=1)
A_MODELS=${QUALITY_A_MODELS:-[auto]}
A_NEED=${QUALITY_A_NEED:-240}       # seconds of budget A must have left to start
PPO_STEPS=${QUALITY_PPO_STEPS:-40}  # the KL budget usually stops PPO first (step 9 and 16 on the first run)
START=$(date +%s)
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/log.txt"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[quality_gpu +$(elapsed)s] $*" | tee -a "$LOG"; }

collect() {  # the small files of every run so far, one archive (the loan returns at most 8 files)
    local files=()
    for run in runs/"$EXP" runs/"$EXP"-*; do
        for f in eval/results.json eval/report.md eval/samples.jsonl eval/sampled.jsonl eval/ppo_curves.png ppo/metrics.jsonl \
                 ppo/curves.png ppo/manifest.json ppo/probes.jsonl dpo/manifest.json dpo/metrics.jsonl \
                 sft/manifest.json sft/samples.jsonl sft/metrics.jsonl reward/manifest.json reward/eval.json \
                 ppo/summary.md dpo/summary.md run/manifest.json console.log; do
            [ -f "$run/$f" ] && files+=("$run/$f")
        done
    done
    [ ${#files[@]} -gt 0 ] && tar czf "$OUT_DIR/results.tar.gz.tmp" "${files[@]}" && \
        mv "$OUT_DIR/results.tar.gz.tmp" "$OUT_DIR/results.tar.gz"
}

step() {  # step NAME MIN_SECONDS_LEFT command...: skipped when less than MIN_SECONDS_LEFT of the budget is left
    local name=$1 need=$2; shift 2
    local left=$(( BUDGET - $(elapsed) ))
    if [ "$left" -lt "$need" ]; then
        say "skip $name: ${left}s of the budget left, it needs about ${need}s"
        return 1
    fi
    say "start $name: $*"
    timeout "$left" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    say "end $name: exit $rc"
    collect
    return "$rc"
}

[ -f "runs/$EXP/build/manifest.json" ] || { echo "runs/$EXP/build is missing: run halluguard build exp=$EXP first" >&2; exit 2; }
if [ "${QUALITY_ALLOW_CPU:-0}" != 1 ]; then
    python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
        | tee -a "$LOG" || exit 2
fi

step_A() {  # the chain with a converged SFT reference
    step "A (sft 3 epochs, reward, ppo, eval)" "$A_NEED" \
        halluguard run exp="$EXP" 'run.stages=[sft,reward,ppo,eval]' "${TRAIN[@]}" \
            ppo.steps="$PPO_STEPS" eval.batch_size=64 "eval.models=$A_MODELS" "${EXTRA[@]}" || { say "A failed"; exit 1; }
}

fork() {  # fork NAME [STAGE...]: a new experiment folder holding A's build, SFT reference and reward, less the stages listed
    local name=$1; shift
    [ -d "runs/$EXP/sft" ] && [ -d "runs/$EXP/reward" ] || { say "runs/$EXP has no sft/reward: run step A first"; exit 2; }
    rm -rf "runs/$name" && mkdir -p "runs/$name" && cp -r "runs/$EXP/build" "runs/$name/"
    local stage
    for stage in sft reward; do
        [[ " $* " == *" $stage "* ]] || cp -r "runs/$EXP/$stage" "runs/$name/"
    done
}

step_B() {  # a looser KL budget on the same reference and reward
    fork "$EXP-b3"
    step "B (ppo, KL budget 3)" 120 \
        halluguard run exp="$EXP-b3" 'run.stages=[ppo,eval]' ppo.steps="$PPO_STEPS" ppo.kl.budget=3.0 ppo.kl.target=3.0 \
            'eval.models=[ppo,gated_ppo]' eval.batch_size=64 "${EXTRA[@]}"
}
step_C() {  # DPO on the same pairs from the same reference (its own folder: eval would overwrite A's)
    fork "$EXP-dpo"
    step "C (dpo baseline, 1 epoch)" 90 \
        halluguard run exp="$EXP-dpo" 'run.stages=[ppo,eval]' ppo.algo=dpo ppo.dpo.max_steps=-1 ppo.dpo.epochs=1 \
            'eval.models=[dpo,gated_dpo]' eval.batch_size=64 "${EXTRA[@]}"
}
step_D() {  # ppo with QUALITY_D_OVERRIDES instead of QUALITY_OVERRIDES
    fork "$EXP-d"
    step "D (ppo with ${QUALITY_D_OVERRIDES:-no overrides})" 90 \
        halluguard run exp="$EXP-d" 'run.stages=[ppo,eval]' ppo.steps="$PPO_STEPS" \
            'eval.models=[ppo,gated_ppo]' eval.batch_size=64 "${EXTRA_D[@]}"
}
step_R() {  # A's sft and reward only: the shared start of the P variants
    step "R (sft 3 epochs, reward)" 120 \
        halluguard run exp="$EXP" 'run.stages=[sft,reward]' "${TRAIN[@]}" "${EXTRA[@]}" \
        || { say "R failed"; exit 1; }
}
step_P() {  # the QUALITY_P variants, each from A's (or R's) reference in runs/EXP-NAME
    local specs variant name stages overrides left pids=() names=() i
    IFS=';' read -r -a specs <<< "${QUALITY_P:?QUALITY_P lists the variants of step P: NAME|STAGES|OVERRIDES;...}"
    for variant in "${specs[@]}"; do  # every entry checked before the first one runs
        IFS='|' read -r name stages overrides <<< "$variant"
        [ -n "$name" ] && [ -n "$stages" ] || { say "bad QUALITY_P entry '$variant': NAME|STAGES|OVERRIDES"; exit 2; }
    done
    for variant in "${specs[@]}"; do
        IFS='|' read -r name stages overrides <<< "$variant"
        left=$(( BUDGET - $(elapsed) ))
        if [ "$left" -lt 60 ]; then say "skip P/$name: ${left}s of the budget left"; continue; fi
        fork "$EXP-$name" ${stages//,/ }
        local -a vo=()
        eval "vo=($overrides)"  # the overrides keep their shell quoting, e.g. 'eval.models=[sft,ppo]'
        say "start P/$name: stages [$stages] ${vo[*]}"
        ( timeout "$left" halluguard run exp="$EXP-$name" "run.stages=[$stages]" \
              ppo.steps="$PPO_STEPS" eval.batch_size=64 "${EXTRA[@]}" "${vo[@]}" > "runs/$EXP-$name.log" 2>&1 ) &
        pids+=($!); names+=("$name")
        [ "${QUALITY_P_PARALLEL:-0}" = 1 ] || p_wait "${pids[-1]}" "$name"
    done
    if [ "${QUALITY_P_PARALLEL:-0}" = 1 ]; then
        for i in "${!pids[@]}"; do p_wait "${pids[$i]}" "${names[$i]}"; done
    fi
}
p_wait() {  # p_wait PID NAME: wait for one P variant, log its last lines, gather its files
    wait "$1"; local rc=$?
    say "end P/$2: exit $rc; its last lines:"
    tr '\r' '\n' < "runs/$EXP-$2.log" | grep -v '^ppo:\|^eval ' | tail -n 40 | tee -a "$LOG"
    cp "runs/$EXP-$2.log" "runs/$EXP-$2/console.log" 2>/dev/null
    collect
}
for s in "${STEPS[@]}"; do
    case "$s" in
        A|B|C|D|R|P) "step_$s" ;;
        *) say "unknown step '$s' in QUALITY_STEPS (A, B, C, D, R or P)"; exit 2 ;;
    esac
done

say "done"
collect
