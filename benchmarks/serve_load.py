"""Load benchmark of ``gcmr serve`` (issue 13): 8 concurrent loopback clients x 100 single-query
GET /search requests against a real uvicorn server with a tiny trained model, and one client
alone in the same run, with micro-batching off (--max-batch 1) and on.

    python benchmarks/serve_load.py                      # ~2 minutes on 2 cores
    python benchmarks/serve_load.py --clients 16 --max-batch 64

Writes ``benchmarks/results/serve_load/serve_load.json`` and ``.md`` (machine, load average,
settings, numbers); see :mod:`gcmr.bench.serve_load`.
"""

from __future__ import annotations

import sys

from gcmr.bench.serve_load import main

if __name__ == "__main__":
    sys.exit(main())
