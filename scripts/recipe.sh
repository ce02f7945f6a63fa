# The one training recipe of the shipped models (sourced by train-models.sh and denoise-study.sh):
# a fresh network with the PyTorch-style start, all 60 000 training images, SGD (batch 128,
# momentum 0.9, weight decay 5e-4) on one cosine schedule from 0.1 with a 0.2-epoch warm-up, no
# augmentation (random shifts and flips cost this small network 5 points of clean and 6 of PGD-10
# accuracy after one epoch: assets/models/README.md), seed 0, a checkpoint every 25 batches.
# The number of epochs (10 for the shipped models) is set by the caller.
# shellcheck disable=SC2034 # used by the scripts that source this file
recipe=(--eps 0.1 --batch 128 --lr 0.1 --schedule cosine --warmup 0.2 --crop-pad 0 --no-flip
  --val 500 --seed 0 --checkpoint-every 25)
