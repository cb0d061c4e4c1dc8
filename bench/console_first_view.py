"""The console's first view of the findings table: the governance reads under the view's six
measures, with and without ``own_rows`` (only the measure's own rows, filtered as the files are
read), on the same store, alternating, nothing kept between runs.

    PYTHONPATH=src .venv/bin/python bench/console_first_view.py [ROWS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import console as bc
from mamori.config import load_config
from mamori.governance import Governance
from mamori.governance.roles import FINDING_MEASURES
from mamori.schemas import FINDINGS
from mamori.web import data, grantcache


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        gov = Governance(load_config(overrides={"store": Path(tmp) / "store"}))
        idx = np.arange(n)
        cols = {
            "detected": bc._times(n),
            "finding_id": pc.binary_join_element_wise("f-", pa.array(idx).cast(pa.string()), ""),
            "kind": pa.array(np.where(idx % 3 == 0, "c2", "beacon")),
            "method": pa.array(np.full(n, "beacon")),
            "ip": bc._ips("198.18.0.0", n),
            "score": pa.array((idx % 100 / 100).astype(np.float32)),
            "measure": pa.array(np.full(n, "M2")),
            "evidence": pa.array(np.full(n, "{}")),
        }
        gov.write("M2", "findings", bc._fill(FINDINGS.arrow, cols, n), "bench")
        orig = gov.open
        for own in (False, True, False, True):
            grantcache._KEPT.clear()
            data._DERIVED.clear()

            def opener(*a: Any, own: bool = own, **k: Any) -> Any:
                k["own_rows"] = own
                return orig(*a, **k)

            gov.open = opener  # type: ignore[method-assign]
            t = time.perf_counter()
            rows = data.findings_table(gov, FINDING_MEASURES, "web:bench").table.num_rows
            took = time.perf_counter() - t
            print(f"own_rows={own}: first view of {rows:,} findings in {took:.2f} s", flush=True)
            gov.open = orig  # type: ignore[method-assign]
        gov.close()


if __name__ == "__main__":
    main()
