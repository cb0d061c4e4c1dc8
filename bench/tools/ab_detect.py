"""A/B: `mamori detect c2` (the 3 modes of bench/detect_speed.py) over one 10M-record store, old vs new code.
Per child: wall, CPU (user+sys) and peak RSS from wait4."""
import os, shutil, subprocess, sys, time
from pathlib import Path
VENV = "/work/main/.venv/bin/python"
GEN = Path("/tmp/bench/ds-gen/store")
VERS = {"base": "/work/wt-base/src", "new": "/work/main/src"}
modes = (("correlation+beacon", ["--method", "correlation", "--method", "beacon"]),
         ("all three, --train", ["--train"]), ("all three, stored model", []))
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
keep = sys.argv[2].split(",") if len(sys.argv) > 2 else None
modes = tuple(m for i, m in enumerate(modes) if keep is None or str(i) in keep)
for r in range(rounds):
    for ver, src in VERS.items():
        work = Path(f"/tmp/bench/ds-{ver}")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(GEN.parent, work)
        conf = work / "mamori-speed.toml"
        for label, extra in modes:
            cmd = [VENV, "-m", "mamori", "--config", str(conf), "--store", str(work / "store"), "detect", "c2", "--json", *extra]
            t = time.perf_counter()
            p = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": src}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            err = p.stderr.read()
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t
            cpu = ru.ru_utime + ru.ru_stime
            print(f"round {r} {ver:5s} {label:26s} rc={status>>8} wall={wall:6.1f}s cpu={cpu:6.1f}s peak={ru.ru_maxrss/1024/1024:.2f}GiB load={os.getloadavg()[0]:.1f}", flush=True)
            if status:
                print(err.decode()[-2000:])
