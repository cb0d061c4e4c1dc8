"""Time the national scenario's world and sampled records (no files written).

    PYTHONPATH=src .venv/bin/python bench/sim_national.py RATE   # 1000 or 10000

Prints CPU seconds (time.process_time) of build_world and generate_sampled, the records, wall
time and the peak RSS (ru_maxrss), for seed 0 of `randomise(scenario_config("national"))`.
"""

import resource
import sys
import time

from mamori.sim.config import scenario_config
from mamori.sim.national import generate_sampled
from mamori.sim.randomise import randomise
from mamori.sim.world import build_world

rate = int(sys.argv[1])
cfg, _ = randomise(scenario_config("national", sampling=rate), 0)
c0, w0 = time.process_time(), time.perf_counter()
w = build_world(cfg, 0)
c1 = time.process_time()
print(f"world: {c1 - c0:.1f} s CPU, sessions {w.sessions.sub.size}", flush=True)
tr = generate_sampled(w, 0)
c2 = time.process_time()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
print(
    f"1/{rate}: records {len(tr.flows)}, generate {c2 - c1:.1f} s CPU, total {c2 - c0:.1f} s CPU, "
    f"wall {time.perf_counter() - w0:.0f} s, peak RSS {rss:.2f} GiB, bots "
    f"{sum(1 for _ in tr.truth['infected'])}, cc {sum(e['role'] == 'cc' for e in tr.endpoints)}",
    flush=True,
)
