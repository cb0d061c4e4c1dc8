"""Coverage-guided fuzzing of one harness with atheris (libFuzzer), for as long as one wants.

    PYTHONPATH=src python -m tests.fuzz.run_atheris netflow -max_total_time=600
    PYTHONPATH=src python -m tests.fuzz.run_atheris --list

The seeds (``targets.py``) are copied into a fresh working corpus, which libFuzzer grows; extra
arguments go to libFuzzer (``-max_total_time``, ``-runs``, ``-jobs``, ``-max_len`` …). A crash is
written as ``crash-<sha1>`` in the working directory and printed; put its bytes in
``test_fuzz.REGRESSIONS`` once fixed. CI runs the same harnesses on a fixed budget instead
(``test_fuzz.py``): atheris is a development tool, not a dependency.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> int:
    import atheris

    # the decoders log every kind of bad input (rate-limited); at fuzzing speed that is noise
    logging.disable(logging.CRITICAL)

    with atheris.instrument_imports(include=["mamori"]):
        from tests.fuzz.targets import TARGETS

    if len(argv) < 2 or argv[1] in ("-h", "--help", "--list"):
        print(__doc__)
        print("targets:", " ".join(TARGETS))
        return 0
    target = TARGETS[argv[1]]
    corpus = Path(tempfile.mkdtemp(prefix=f"mamori-fuzz-{target.name}-"))
    for seed in target.seeds:
        shutil.copy(seed, corpus / seed.name)
    print(f"{target.name}: working corpus {corpus} ({len(target.seeds)} seeds)", flush=True)
    atheris.Setup([argv[0], *argv[2:], str(corpus)], target.check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
