# The one training recipe of the shipped models (sourced by train-models.sh and denoise-study.sh):
# a fresh network with the PyTorch-style start, all 60 000 training images, SGD (batch 128,
# momentum 0.9, weight decay 5e-4) on one cosine schedule from 0.1 with a 0.2-epoch warm-up,
# random shifts of up to 2 pixels and horizontal flips (the defaults), seed 0, a checkpoint every
# 25 batches. The number of epochs (5 for the shipped models) is set by the caller.
# shellcheck disable=SC2034 # used by the scripts that source this file
recipe=(--eps 0.1 --batch 128 --lr 0.1 --schedule cosine --warmup 0.2 --val 500 --seed 0
  --checkpoint-every 25)
