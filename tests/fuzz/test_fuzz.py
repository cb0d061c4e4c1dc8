"""Every fuzz harness (``targets.py``), in CI: the seeds as they are, the crashes found so far
(one table), and a fixed budget of seed mutations drawn by hypothesis.

The mutations are derandomized (the same examples every run, so CI is reproducible); set
``MAMORI_FUZZ_EXAMPLES=5000 MAMORI_FUZZ_RANDOM=1`` to search further, or run
``tests/fuzz/run_atheris.py TARGET`` for coverage-guided fuzzing. A failure is shrunk to the
smallest mutation that still fails; add its bytes to ``REGRESSIONS``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import TARGETS, Target

pytestmark = pytest.mark.fuzz

_EXAMPLES = os.environ.get("MAMORI_FUZZ_EXAMPLES")
_RANDOM = bool(os.environ.get("MAMORI_FUZZ_RANDOM"))

#: Inputs that crashed a harness once: (target, input, what it hit; now the documented answer).
REGRESSIONS: list[tuple[str, bytes, str]] = [
    # a header naming a column twice: KeyError from the Arrow table (now "names … twice", exit 2)
    (
        "kea",
        b"address,address,valid_lifetime,expire,hwaddr\n1.2.3.4,1.2.3.4,1,2,aa\n",
        "kea-duplicate-column",
    ),
    (
        "allocations-csv",
        b"start,start,addr,subscriber_id\n1,1,192.0.2.1,S\n",
        "csv-duplicate-column",
    ),
    # a carriage return inside a line: Arrow starts a row there, so the rows after it got the
    # wrong line numbers (now that line is malformed, and a header with one is refused)
    (
        "kea",
        b"address,hwaddr,valid_lifetime,expire\n1.2.3.4,aa\r,1,2\n1.2.3.5,bb,1,2\n",
        "kea-carriage-return",
    ),
    ("allocations-csv", b"start,addr,subscriber_id\r1,192.0.2.1,S\r", "csv-header-carriage-return"),
    # a quote left open: Arrow ran the row on to the end of the file, so the rows and their line
    # numbers no longer matched: IndexError (found by atheris; now that line is malformed)
    (
        "kea",
        b'address,hwaddr,valid_lifetime,expire\n1.2.3.4,aa,1,2\n1.2.3.5,"bb,1,2\n1.2.3.6,cc,1,2\n',
        "kea-open-quote",
    ),
    # the same in a report's header: csv.Error out of the parser (now a whole-file ValueError)
    ("report-csv", b'"timestamp","ip","asn","geo","region"\r"', "report-header-carriage-return"),
]

_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF)
# pieces that mean something to the text formats: separators, quotes, comments, bad bytes
_TOKENS = (b"\n", b"\r\n", b",", b'"', b"'", b"#", b"\t", b" = ", b"{", b"}", b"[", b"]", b":",
           b"|", b"\x00", b"\xff", b"\xef\xbb\xbf", b"0x", b"::", b"2026-13-45T99:99:99Z",
           b"99999999999999999999", b"-1", b"null", b"\\")  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A seed with a few of the edits a fuzzer makes: bit flips, byte and length-field
    overwrites with boundary values, inserted and deleted runs, tokens, splices, cuts."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(("flip", "byte", "int", "insert", "delete", "token", "splice",
                                   "dup", "cut")))  # fmt: skip
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "int":
            width = draw(st.sampled_from((1, 2, 4)))
            value = draw(st.sampled_from(_INTERESTING)) & ((1 << 8 * width) - 1)
            data[pos : pos + width] = value.to_bytes(width, "big")
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(_TOKENS))
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            data[pos:] = other[start:]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 256))]
        elif op == "cut":
            del data[pos:]
    return bytes(data)


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
def test_seeds(target: Target) -> None:
    for seed in target.seed_bytes():
        target.check(seed)


@pytest.mark.parametrize(
    ("name", "data"), [(n, d) for n, d, _ in REGRESSIONS], ids=[w for *_, w in REGRESSIONS]
)
def test_regressions(name: str, data: bytes) -> None:
    TARGETS[name].check(data)


def test_every_regression_names_a_target() -> None:
    assert {n for n, _, _ in REGRESSIONS} <= set(TARGETS)


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
def test_mutations(target: Target) -> None:
    seeds = tuple(target.seed_bytes())

    @settings(
        max_examples=int(_EXAMPLES) if _EXAMPLES else target.examples,
        derandomize=not _RANDOM,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated(seeds))
    def run(data: bytes) -> None:
        target.check(data)

    run()
