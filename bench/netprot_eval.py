"""Network protection against the simulator's ground truth at 1/1,000 sampling (issue 16, §7).

    PYTHONPATH=src python bench/netprot_eval.py [--seeds 7 8 9 10 11] [--sampling 1000]

Per seed: the ``demo`` world with every router sampling 1-in-N, its exports decoded by the
collector, ``detect ddos|reflection|spoofing`` with the configured thresholds (nothing fitted to
the simulator), scored as ``mamori eval`` scores them (DDoS: attacks at or above threshold_pps).
Prints each seed's precision/recall and the mean and worst seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mamori.demo_netprot import KINDS, evaluate_network


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9, 10, 11])
    ap.add_argument("--sampling", type=int, default=1000)
    ap.add_argument("--scenario", default="demo")
    ap.add_argument("--work", type=Path, default=None, help="keep the worlds here (reused)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        result = evaluate_network(args.scenario, args.seeds, work, sampling=args.sampling)
    print(
        f"scenario {result.scenario}, 1/{result.sampling}, threshold {result.threshold_pps:g} pps"
    )
    for s in result.seeds:
        cells = "  ".join(
            f"{k} P {s.scores[k]['precision']:.3f} R {s.scores[k]['recall']:.3f} "
            f"({s.scores[k]['true_positives']}/{s.scores[k]['findings']} found, "
            f"{s.scores[k]['false_negatives']} missed)"
            for k in KINDS
        )
        print(f"seed {s.seed} ({s.records:,} records): {cells}")
    print(json.dumps(result.summary(), indent=1))


if __name__ == "__main__":
    main()
