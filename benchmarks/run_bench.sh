#!/usr/bin/env bash
# The exact commands that produced benchmarks/results/{accuracy,throughput,memory}.{json,md,png}.
#
#   bash benchmarks/run_bench.sh            # everything (about 2 h on 2 cores, see below)
#   bash benchmarks/run_bench.sh scale      # throughput + memory only (~20-30 min on 2 cores)
#   bash benchmarks/run_bench.sh accuracy   # accuracy only
#   bash benchmarks/run_bench.sh longer     # CART vs dense with 3x the epochs
#   bash benchmarks/run_bench.sh avg        # AVG rows beside CART and dense (~50 min)
#   bash benchmarks/run_bench.sh d128       # CART, w/o fusion and dense at d_model 128, 3 + 3
#   bash benchmarks/run_bench.sh large      # 10M candidates, CART vs streamed exact (~15 min)
#   bash benchmarks/run_bench.sh hybrid     # hybrid CART (query head + rerank) beside pure CART,
#                                           # the dense tower and the caption matcher (~25 min)
#   bash benchmarks/run_bench.sh hybrid-scale  # hybrid CART search speed/memory at 10k-1M
#   bash benchmarks/run_bench.sh pretrained # frozen MiniLM query encoder rows (~10 min)
#   bash benchmarks/run_bench.sh fit-view   # identifiers fitted on caption / joint views (~25 min)
#   bash benchmarks/run_bench.sh defaults   # every default on the 5k world, timed (~25 min)
#   bash benchmarks/run_bench.sh size-rule  # CART sizes from N vs the fixed 128s (~15 min)
#
# Generated worlds, indexes and models go to $WORK (default /tmp/gcmr-bench; reused by a
# re-run, so an interrupted run continues where it stopped). Results go to $OUT (default
# benchmarks/results). Each report records the command line, every setting and the machine.
#
# Accuracy budget: training the generative model is the bottleneck on a CPU. On this 2-core
# machine the default CART model (d_model 192, 3 + 3 layers) trains at ~20-60 pairs/s, so ONE
# epoch on the 100k world (600k training pairs) takes hours per row, and the suite has 8 CART
# and 4 AVG trained rows. The committed accuracy report therefore uses a 5k-item world (30k pairs/epoch)
# and a small model (d_model 64, 2 + 2 layers, FFN 256) with 4 epochs for every row (and the
# same tower for the dense baseline). The rows run as three processes of one thread sharing the
# work directory, then one run over all rows reuses every index and model and writes the
# combined report. `ACC_WORLD=100k bash benchmarks/run_bench.sh accuracy` runs the same
# settings on the 100k world.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/gcmr-bench}
OUT=${OUT:-benchmarks/results}
WHAT=${1:-all}
ACC_WORLD=${ACC_WORLD:-5k}
mkdir -p "$WORK" "$OUT"
case "$ACC_WORLD" in 100k) items=100000 ;; 10k) items=10000 ;; *) items=5000 ;; esac
common=(--work "$WORK/acc$ACC_WORLD" --epochs 4 --warmup-epochs 0.5 --lr 0.002
        --batch-size 256 --d-model 64 --heads 4 --ffn 256 --encoder-layers 2
        --decoder-layers 2 --max-val-queries 500 --max-queries 2000)
cart_rows=cart,no-consistency,no-fusion,no-kmeans,no-rqvae,atomic,random,dense-exact,dense-hnsw,oracle
if [ "$WHAT" != scale ] && [ "$WHAT" != large ]; then
  [ -d "$WORK/w$ACC_WORLD" ] || gcmr synth "$WORK/w$ACC_WORLD" --items "$items" --seed 0
fi

if [ "$WHAT" = all ] || [ "$WHAT" = accuracy ]; then
  # three groups of rows in parallel (one thread each) sharing the work directory; the first
  # builds the cart index, the second starts with its rq index so the cart one exists by the
  # time it needs it
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accA" --threads 1 "${common[@]}" \
    --rows cart,no-consistency,dense-exact,dense-hnsw,oracle &
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accB" --threads 1 "${common[@]}" \
    --rows no-kmeans,no-fusion &
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accC" --threads 1 "${common[@]}" \
    --rows no-rqvae,atomic,random &
  wait
  # every row together: reuses the indexes and models above, evaluates, writes the report
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$OUT" --threads 2 "${common[@]}" \
    --rows "$cart_rows"
fi

if [ "$WHAT" = all ] || [ "$WHAT" = avg ]; then
  # AVG (AVG tables 3 and 7) beside full CART and the dense tower, same world, model and
  # budget -> $OUT/avg/. The AVG index encodes the captions with the offline MiniLM.
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accAVG1" --threads 1 "${common[@]}" \
    --rows avg,avg-no-dis,avg-no-voken-emb,avg-hybrid,avg-minilm &
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accAVG2" --threads 1 "${common[@]}" \
    --rows cart,dense-exact,avg-shared,avg-no-align &
  wait
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$OUT/avg" --threads 2 "${common[@]}" \
    --rows cart,avg,avg-shared,avg-no-align,avg-no-voken-emb,avg-no-dis,avg-beam1,avg-beam5,avg-beam20,avg-beam30,avg-hybrid,avg-hybrid-gen,avg-minilm,avg-minilm-gen,dense-exact,oracle
fi

if [ "$WHAT" = all ] || [ "$WHAT" = longer ]; then
  # the same world and settings with 3x the epochs for CART, CART omega = 0 and the dense tower
  # (does the gap to the dense tower close with more training?) -> $OUT/longer_budget/
  longer=(--work "$WORK/acc$ACC_WORLD" --epochs 12 --warmup-epochs 0.5 --lr 0.002
          --batch-size 256 --d-model 64 --heads 4 --ffn 256 --encoder-layers 2
          --decoder-layers 2 --max-val-queries 500 --max-queries 2000)
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accL1" --threads 1 "${longer[@]}" \
    --rows cart &
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accL2" --threads 1 "${longer[@]}" \
    --rows no-consistency,dense-exact &
  wait
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$OUT/longer_budget" --threads 2 \
    "${longer[@]}" --rows cart,no-consistency,dense-exact,dense-hnsw,oracle
fi

if [ "$WHAT" = all ] || [ "$WHAT" = d128 ]; then
  # the same world and epochs with a wider, deeper model (d_model 128, FFN 512, 3 + 3 layers,
  # the paper's depth): does the gap to the dense tower shrink? -> $OUT/d128/
  wide=(--work "$WORK/acc${ACC_WORLD}d128" --epochs 4 --warmup-epochs 0.5 --lr 0.002
        --batch-size 256 --d-model 128 --heads 4 --ffn 512 --max-val-queries 500
        --max-queries 2000)
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accW1" --threads 1 "${wide[@]}" \
    --rows cart,dense-exact &
  # the second job starts once the first has saved the shared CART index
  until compgen -G "$WORK/acc${ACC_WORLD}d128/index-cart-*/manifest.json" > /dev/null; do
    sleep 5
  done
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accW2" --threads 1 "${wide[@]}" \
    --rows no-fusion &
  wait
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$OUT/d128" --threads 2 "${wide[@]}" \
    --rows cart,no-fusion,dense-exact,oracle
fi

if [ "$WHAT" = all ] || [ "$WHAT" = hybrid ]; then
  # the default CART since the accuracy issue (query-vector head trained jointly, beam
  # candidates reranked by the query vector) beside the papers' pure CART, the same model's
  # pure generation, the dense tower and the caption matcher, at the committed 5k budget
  # -> $OUT/hybrid/
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accH1" --threads 1 "${common[@]}" \
    --rows cart-hybrid,dense-exact &
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$WORK/accH2" --threads 1 "${common[@]}" \
    --rows caption-matcher,cart &
  wait
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$OUT/hybrid" --threads 2 "${common[@]}" \
    --rows cart-hybrid,cart-hybrid-gen,cart,caption-matcher,dense-exact,oracle
fi

if [ "$WHAT" = all ] || [ "$WHAT" = pretrained ]; then
  # the frozen MiniLM query encoder (--query-encoder minilm) beside the from-scratch hybrid,
  # the caption matcher and the dense tower, same budget -> $OUT/pretrained/
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$OUT/pretrained" --threads 2 "${common[@]}" \
    --rows cart-minilm,cart-minilm-gen,cart-hybrid,caption-matcher,dense-exact,oracle
fi

if [ "$WHAT" = all ] || [ "$WHAT" = fit-view ]; then
  # identifiers fitted on the caption vectors or on media + caption vectors (--fit-view),
  # with the MiniLM and the from-scratch encoders -> $OUT/fit_view/
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$OUT/fit_view" --threads 2 "${common[@]}" \
    --rows cart-minilm-capview,cart-minilm-capview-gen,cart-hybrid-capview,cart-hybrid-capview-gen,cart-minilm-joint,cart-minilm-joint-gen,dense-exact,oracle
fi

if [ "$WHAT" = all ] || [ "$WHAT" = size-rule ]; then
  # CART sizes from N (--clusters 0 --codebook-size 0) beside the fixed 128s -> $OUT/size_rule/
  gcmr bench accuracy "$WORK/w$ACC_WORLD" --out "$OUT/size_rule" --threads 1 "${common[@]}" \
    --rows cart-hybrid-sized,cart-hybrid-sized-gen,cart-minilm-joint-sized,cart-minilm-joint-sized-gen,cart-minilm-joint,cart-minilm-joint-gen,dense-exact,oracle
fi

if [ "$WHAT" = defaults ]; then
  # every command with its defaults on the 5k world, timed -> $OUT/defaults/
  python benchmarks/defaults_5k.py --world "$WORK/w5k" --work "$WORK/defaults5k" \
    --out "$OUT/defaults"
fi

if [ "$WHAT" = all ] || [ "$WHAT" = hybrid-scale ]; then
  # hybrid CART (random-weight default model with a query head; the rerank reads candidate
  # rows from the memory-mapped world) beside pure CART and exact dense -> $OUT/hybrid_scale/
  gcmr bench throughput --out "$OUT/hybrid_scale" --work "$WORK/scale" \
    --methods cart,cart-hybrid,dense-exact --beams 10,20 --batches 10
fi

if [ "$WHAT" = all ] || [ "$WHAT" = scale ]; then
  # 10k, 100k, 1M candidates of the synthetic world (512-d), random-weight default models
  gcmr bench throughput --out "$OUT" --work "$WORK/scale"
fi

if [ "$WHAT" = large ]; then
  # 10M candidates (float16 world, 10 GB on disk): CART and streamed exact search only, fewer
  # timing samples (a streamed exact batch takes ~40 s) -> $OUT/large/
  gcmr bench throughput --out "$OUT/large" --work "$WORK/scale16" --sizes 10M \
    --methods cart,dense-exact --float16 --batches 1 --single-queries 5 --beams 10
  gcmr bench memory --out "$OUT/large" --work "$WORK/scale16" --sizes 10M \
    --methods cart,dense-exact --float16
fi
