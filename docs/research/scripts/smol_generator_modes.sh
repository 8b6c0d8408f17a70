#!/usr/bin/env bash
# Issue 45: which part of SmolLM2-135M the generator should train, measured side by side (one arm at a time,
# alone on 2 threads): all weights, the top 4 of 30 layers, or a LoRA adapter of rank 16 on every decoder
# linear layer (lr 1e-3, 10x the others, as LoRA is usually run). Each arm: the synth-smol-gen recipe on the
# first 400 train problems, one epoch (25 steps of 16), val loss over the 500 val problems at the end; then
# greedy accuracy on the first 200 val problems. Val only. Wall time: the finetune stage's in manifest.json.
#   bash docs/research/scripts/smol_generator_modes.sh            # -> runs/smol-ft-{full,top4,lora}
set -euo pipefail
cfg=docs/research/configs/synth-smol-gen.yaml
common=(data.train_limit=400 finetune.eval_every=0 finetune.save_every=0 threads=2)
declare -A arm=([full]="" [top4]="finetune.train_layers=4" [lora]="finetune.lora_rank=16 finetune.lora_alpha=32 finetune.lr=1e-3")
for mode in ${MODES:-full top4 lora}; do
  # shellcheck disable=SC2086
  HF_HUB_OFFLINE=1 gsmv run --config "$cfg" name="smol-ft-$mode" "${common[@]}" ${arm[$mode]} --until finetune
  rm -rf "runs/smol-ft-$mode"/generator/step-*  # the epoch-end checkpoint equals final: measure it once
done
for mode in ${MODES:-full top4 lora}; do
  python docs/research/scripts/generator_curve.py --run "runs/smol-ft-$mode" --problems 200 \
    --out "docs/research/pretrained-generator/modes-$mode.json"
done
