"""Benchmark orchestration: ``gcmr bench`` (the comparison that decides whether generative
retrieval is worth using) and ``gcmr demo`` (the whole pipeline on a synthetic world).

Three reports, each written as ``<name>.json`` (rows, settings, the command, the machine),
``<name>.md`` (a Markdown table) and ``<name>.png`` (matplotlib) under a results directory:

- ``accuracy`` (:func:`gcmr.bench.accuracy.bench_accuracy`): R@1/5/10 and MRR@10 of
  CART and its ablations (CART tables 4, 8, 9), GRACE-style atomic / random identifiers, the
  dense dual tower with exact and HNSW search, and the corpus's oracle ceiling; optionally the
  identifier size / length grid (CART tables 6, 7).
- ``throughput`` and ``memory`` (:func:`gcmr.bench.scale.bench_scale`): queries/s for
  batches of concurrent queries and single-query latency as the candidate pool grows
  (CART figure 4), and the bytes and build time each method needs to serve each size.

Modules: :mod:`~gcmr.bench.report` (machine information, the report writer),
:mod:`~gcmr.bench.accuracy`, :mod:`~gcmr.bench.scale`, :mod:`~gcmr.bench.world` (distractor
worlds of any size), :mod:`~gcmr.bench.plots` (PNG plots) and :mod:`~gcmr.bench.demo`
(:func:`~gcmr.bench.demo.run_demo`, the pipeline behind ``gcmr demo``).

Nothing is imported here, so that importing one module (the CLI imports
:mod:`gcmr.bench.demo` for its defaults) does not load torch.
"""
