"""The learned model: trained on listed C&C, stored with metadata, loaded back identically."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mamori.detect.c2_learned import (
    FEATURES,
    TrainingError,
    endpoint_features,
    load_model,
    train_model,
)
from mamori.detect.flowview import open_oriented
from mamori.detect.seeds import open_seeds
from mamori.governance import Governance
from tests.detect.conftest import KNOWN_CC, UNKNOWN_CC, load_reputation, load_world, synthetic_flows

pytestmark = pytest.mark.slow  # trains a model on a simulated ISP


def _features(gov: Governance):  # type: ignore[no-untyped-def]
    view = open_oriented(gov, "test")
    return endpoint_features(view, open_seeds(gov, "test", view.sandbox))


def test_features_label_listed_cc(gov: Governance) -> None:
    load_world(gov)
    f = _features(gov)
    rows = {(r["ip"], r["port"]): r for r in f.to_pylist()}
    assert all(rows[cc]["label"] for cc in KNOWN_CC)
    assert not rows[UNKNOWN_CC]["label"]
    assert rows[UNKNOWN_CC]["suspect_share"] == pytest.approx(1.0)
    assert set(FEATURES) <= set(f.column_names)


def test_train_store_load_round_trip(gov: Governance) -> None:
    load_world(gov)
    f = _features(gov)
    assert load_model(gov) is None
    m1 = train_model(gov, f, actor="test", window=(None, None))
    m2 = train_model(gov, f, actor="test", window=(None, None))
    assert (m1.version, m2.version) == (1, 2)
    meta = json.loads(m2.path.with_suffix(".json").read_text())
    assert meta["version"] == 2 and meta["features"] == list(FEATURES)
    assert meta["metrics"]["positives"] == len(KNOWN_CC)
    loaded = load_model(gov)
    assert loaded is not None and loaded.version == 2
    np.testing.assert_allclose(loaded.predict(f), m2.predict(f))
    first = load_model(gov, version=1)
    assert first is not None and first.version == 1
    assert any(e.event == "model-trained" for e in gov.audit.entries())


def test_training_refused_without_enough_positives(gov: Governance) -> None:
    gov.write("M1", "flows", synthetic_flows(), "collector")
    load_reputation(gov, [KNOWN_CC[0] + ("c2",)])
    with pytest.raises(TrainingError, match="at least 3"):
        train_model(gov, _features(gov), actor="test", window=(None, None))


def test_verdicts_are_training_labels(gov: Governance) -> None:
    """``detect c2 --train`` learns from people: an endpoint they rejected is a negative even
    though a feed lists it, one they confirmed a positive though none does."""
    from mamori.detect.c2 import _finding_id, run_c2
    from mamori.detect.reviews import Reviews

    load_world(gov)
    reviews = Reviews(gov)
    reviews.record(_finding_id(*KNOWN_CC[0], "tcp"), "M2", "rejected", "analyst")
    reviews.record(_finding_id(*UNKNOWN_CC, "tcp"), "M2", "confirmed", "analyst")
    base = train_model(gov, _features(gov), actor="test", window=(None, None))
    run = run_c2(gov, actor="test", methods=("correlation",), train=True, write=False)
    assert run.model is not None
    m, b = run.model.meta["metrics"], base.meta["metrics"]
    assert (m["positives_confirmed"], m["negatives_rejected"]) == (1, 1)
    assert (b["positives_confirmed"], b["negatives_rejected"]) == (0, 0)
    # one listed C&C out, one unlisted in: the same number of positives, not the same ones
    assert m["positives"] == b["positives"] == len(KNOWN_CC)
    f = _features(gov)
    key = {(r["ip"], r["port"]): i for i, r in enumerate(f.to_pylist())}
    p_new, p_base = run.model.predict(f), base.predict(f)
    assert p_new[key[UNKNOWN_CC]] > p_base[key[UNKNOWN_CC]]
    assert p_new[key[KNOWN_CC[0]]] < p_base[key[KNOWN_CC[0]]]
