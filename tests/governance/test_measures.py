"""The measure catalogue as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from mamori.governance.measures import LegalBasis, catalogue, load_catalogue
from mamori.schemas import DATASETS, DataKind


def test_all_fourteen_measures() -> None:
    cat = catalogue()
    assert list(cat) == [f"M{i}" for i in range(1, 15)]
    for m in cat.values():
        assert m.purpose and m.purpose_ja and m.name_ja


def test_consent_based_measures_match_mission() -> None:
    cat = catalogue()
    assert {m.id for m in cat.consent_based()} == {"M4", "M5", "M7", "M8", "M9"}
    assert cat["M4"].legal_bases == (LegalBasis.CONSENT,)  # consent only
    assert cat["M6"].legal_bases == (LegalBasis.EMERGENCY,)


@pytest.mark.parametrize("mid", ["M1", "M2", "M3", "M4", "M10", "M11", "M12", "M14"])
def test_measures_that_must_not_identify_subscribers(mid: str) -> None:
    m = catalogue()[mid]
    for ds in m.reads:
        kinds = {c.kind for c in DATASETS[ds].columns if c.name in m.reads[ds]}
        assert DataKind.SUBSCRIBER not in kinds, f"{mid} may read subscriber data in {ds}"


def test_m3_never_reads_raw_flows() -> None:
    assert "flows" not in catalogue()["M3"].reads


def test_m10_reads_destination_only() -> None:
    assert "src_addr" not in catalogue()["M10"].reads["flows"]


def test_bad_catalogue_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    p.write_text(
        '[M1]\nname="x"\nname_ja="x"\npurpose="x"\npurpose_ja="x"\n'
        'legal_bases=["consent"]\nconsent="none"\nretention_days=1\n'
    )
    with pytest.raises(ValueError, match="consent is a basis"):
        load_catalogue(p)
    p.write_text(
        p.read_text().replace('legal_bases=["consent"]', 'legal_bases=["justified-act"]')
        + 'reads.flows = ["nope"]\n'
    )
    with pytest.raises(ValueError, match="no column"):
        load_catalogue(p)
