#!/usr/bin/env bash
# Accuracy of two model sizes with one training budget, for CART and for the dense dual tower
# with the same encoder (issue 3: "measure accuracy and speed of at least two sizes"). The
# speed of each size is measured by benchmarks/decode_speed.py.
#
#   bash benchmarks/model_size.sh            # ~25-40 min on 2 cores
#
# A 3,000-item world and one budget (8 epochs, lr 2e-3, 3 + 3 layers, CART fusion) with
# d_model 64 / FFN 256 and d_model 128 / FFN 512, one thread each, in
# parallel. Results: $OUT/d64/ and $OUT/d128/ (accuracy.{json,md,png}).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/gcmr-bench}
OUT=${OUT:-benchmarks/results/model_size}
mkdir -p "$WORK" "$OUT"
[ -d "$WORK/w3k" ] || gcmr synth "$WORK/w3k" --items 3000 --seed 0
for d in 64 128; do
  gcmr bench accuracy "$WORK/w3k" --out "$OUT/d$d" --work "$WORK/size" --rows cart,dense-exact,oracle \
    --epochs 8 --lr 0.002 --d-model "$d" --heads 4 --ffn $((4 * d)) --threads 1 --quiet &
  # the second run reuses the first one's CART index: wait until it is saved
  until compgen -G "$WORK/size/index-cart-*/manifest.json" > /dev/null; do sleep 5; done
done
wait
