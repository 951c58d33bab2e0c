#!/usr/bin/env bash
# #5's held-out question on one GPU: one SFT reference, then PPO from it with several seeds, each evaluated on
# the same held-out questions (greedy and sampled), for benchmarks/compare_evals.py --pool.
#
#   benchmarks/boundary_seeds_gpu.sh OUT_DIR [SEEDS] [BUDGET_S]
#
# Needs `halluguard build +experiment=gpu_boundary $BOUNDARY_OVERRIDES` in runs/gpu_boundary/build (made on a CPU
# is fine) and a CUDA device. Steps, each only while BUDGET_S (default 540 s) allows:
#   1. `halluguard sft +experiment=gpu_boundary` (full fine-tuning, 3 epochs) unless runs/gpu_boundary/sft is
#      already there (FORCE_SFT=1 retrains it: on a GPU a retrained reference differs in the last digits);
#   2. for each seed (default "0 1 2"), in runs/gb6-s$SEED (the build copied, the SFT reference hard-linked):
#      PPO with that seed, the result the last checkpoint within the KL budget (no held-out question is spent on
#      choosing it), then eval of the PPO policy, and of the SFT reference for the first seed, greedy and with
#      4 sampled answers a question.
# BOUNDARY_OVERRIDES (default: the sixth GPU run's larger held-out split) are added to every call; they must
# match the build's. BOUNDARY_ALLOW_CPU=1 skips the CUDA check. Everything a person reads comes back in OUT_DIR: log.txt and results.tar.gz.
set -uo pipefail
OUT_DIR=${1:?usage: boundary_seeds_gpu.sh OUT_DIR [SEEDS] [BUDGET_S]}
SEEDS=${2:-0 1 2}
END=$(( $(date +%s) + ${3:-540} ))
START=$(date +%s)
read -r -a EXTRA <<< "${BOUNDARY_OVERRIDES-builder.split.heldout_fraction=0.4}"
Q=(+experiment=gpu_boundary "${EXTRA[@]}" eval.batch_size=64 eval.reward_audit=false eval.sampled.samples=4
   ppo.save_every=4)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT_DIR"
left() { echo $(( END - $(date +%s) )); }
say() { echo "[boundary_seeds +$(( $(date +%s) - START ))s, $(left)s left] $*" | tee -a "$OUT_DIR/log.txt"; }
collect() {  # the small files of every run, one archive (the loan returns at most 8 files)
  local files=() run f
  for run in runs/gb6-s*; do
    for f in eval/results.json eval/report.md eval/sampled.jsonl eval/samples.jsonl ppo/summary.md ppo/manifest.json \
             ppo/metrics.jsonl ppo/curves.png ppo/probes.jsonl console.log; do
      [ -f "$run/$f" ] && files+=("$run/$f")
    done
  done
  for f in runs/gpu_boundary/sft/manifest.json runs/gpu_boundary/sft/summary.md runs/gpu_boundary/build/manifest.json; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] && tar czf "$OUT_DIR/results.tar.gz.tmp" "${files[@]}" && \
    mv "$OUT_DIR/results.tar.gz.tmp" "$OUT_DIR/results.tar.gz"
}

[ -f runs/gpu_boundary/build/manifest.json ] || {
  echo "runs/gpu_boundary/build is missing: run halluguard build +experiment=gpu_boundary ${EXTRA[*]} first" >&2; exit 2; }
if [ "${BOUNDARY_ALLOW_CPU:-0}" != 1 ]; then  # 1: a dry run of the script's logic (its tests)
  python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
    | tee -a "$OUT_DIR/log.txt" || exit 2
fi
if [ "${FORCE_SFT:-0}" = 1 ] || [ ! -f runs/gpu_boundary/sft/manifest.json ]; then
  say "sft (full fine-tuning, 3 epochs)"
  timeout "$(left)" halluguard sft "${Q[@]}" 2>&1 | tr '\r' '\n' | grep -v "it/s\]$\|s/it\]$" | tail -8 \
    | tee -a "$OUT_DIR/log.txt"
  [ -f runs/gpu_boundary/sft/manifest.json ] || { say "sft failed"; exit 1; }
else
  say "sft: reusing runs/gpu_boundary/sft"
fi
collect
for seed in $SEEDS; do
  X=gb6-s$seed
  if [ "$seed" = "${SEEDS%% *}" ]; then M='eval.models=[sft,ppo]'; need=170; else M='eval.models=[ppo]'; need=130; fi
  [ "$(left)" -lt "$need" ] && { say "skip seed $seed: $(left)s left, it needs about ${need}s"; continue; }
  rm -rf "runs/$X" && mkdir -p "runs/$X" && cp -r runs/gpu_boundary/build "runs/$X/" && cp -al runs/gpu_boundary/sft "runs/$X/"
  say "seed $seed: ppo (the last checkpoint within the KL budget) + eval $M, 4 sampled answers a question"
  timeout "$(left)" halluguard run exp="$X" "${Q[@]}" 'run.stages=[ppo,eval]' seed="$seed" "$M" > "runs/$X/console.log" 2>&1
  say "seed $seed: exit $?"
  tr '\r' '\n' < "runs/$X/console.log" | grep "stage .* done in\|refus\|budget" | tail -12 | tee -a "$OUT_DIR/log.txt"
  collect
done
say done
collect
