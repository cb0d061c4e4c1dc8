"""Learned discovery of C&C servers (measure M2b).

Per external endpoint (address, port, protocol) over a window, features computed in one DuckDB
query over the oriented flows (:data:`FEATURES`): how long and when it is used, packets and bytes,
regularity (the best beacon score of a pair, :mod:`mamori.detect.beacon`), fan-in (distinct
internal hosts), fan-in among suspect hosts (hosts that contacted a listed C&C or first-stage
server), port class, novelty (how late in the window it first appears) and how much of the
traffic to its port, across all hosts, is unanswered attempts (a scanned port).

A scikit-learn ``HistGradientBoostingClassifier`` is trained with the endpoints listed as C&C in
reputation as positives and every other endpoint as (unlabelled, mostly benign) negatives, and
calibrated (Platt scaling, cross-validated) so a score reads as a probability. The model is kept
in the store under ``_state/models/`` as ``c2-vN.joblib`` with ``c2-vN.json`` metadata (version,
training window, features, metrics); :func:`load_model` takes the newest.

Endpoints used for training are scored out of fold when the same window is scored, so the model
never grades the rows it was fitted on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]
import numpy as np
import pyarrow as pa
from sklearn.calibration import CalibratedClassifierCV  # type: ignore[import-untyped]
from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]
from sklearn.metrics import average_precision_score, roc_auc_score  # type: ignore[import-untyped]
from sklearn.model_selection import StratifiedKFold  # type: ignore[import-untyped]

from mamori.detect.beacon import BeaconParams, beacon_sql
from mamori.detect.flowview import FlowView
from mamori.detect.seeds import Seeds
from mamori.governance import Governance

__all__ = [
    "FEATURES",
    "LearnedModel",
    "TrainingError",
    "endpoint_features",
    "load_model",
    "score_endpoints",
    "train_model",
]

FEATURES = (
    "log_hosts",
    "suspect_hosts",
    "suspect_share",
    "log_flows",
    "log_est_flows",
    "pkts_per_flow",
    "bytes_per_pkt",
    "log_bytes_per_flow",
    "duration_s",
    "span_share",
    "hour_cos",
    "hour_sin",
    "in_out_ratio",
    "regularity",
    "port_class",
    "is_udp",
    "novelty",
    "port_probe_share",
)

#: suspect groups larger than this share of the population are not informative (a feed listing
#: a CDN makes most hosts "suspects")
MAX_SEED_SHARE = 0.2

#: at most this many unlabelled endpoints are used as negatives in training
MAX_NEGATIVES = 20_000


class TrainingError(Exception):
    """Not enough labelled data to train a model."""


def features_sql(
    view: str, seeds: str | None, beacon: BeaconParams, pairs: str | None = None
) -> str:
    suspects = (
        f"""
        sh AS (
            SELECT DISTINCT s.seed_id, o.host
            FROM o JOIN {seeds} s ON o.ext = s.ip AND (s.port IS NULL OR o.eport = s.port)
        ),
        good AS (
            SELECT seed_id FROM sh GROUP BY seed_id
            HAVING count(*) <= {MAX_SEED_SHARE} * (SELECT n_pop FROM pop)
        ),
        sus AS (SELECT DISTINCT host FROM sh WHERE seed_id IN (SELECT seed_id FROM good)),
        lab AS (
            SELECT DISTINCT o.ext, o.eport, o.proto FROM (SELECT DISTINCT ext, eport, proto
            FROM o) o JOIN {seeds} s ON o.ext = s.ip AND (s.port IS NULL OR o.eport = s.port)
            WHERE s.category = 'c2'
        )"""
        if seeds
        else """
        sus AS (SELECT NULL::VARCHAR AS host WHERE FALSE),
        lab AS (SELECT NULL::VARCHAR AS ext, NULL::INTEGER AS eport, NULL::INTEGER AS proto
                WHERE FALSE)"""
    )
    pairs_sql = f"SELECT * FROM {pairs}" if pairs else beacon_sql(view, beacon)
    return f"""
    WITH o AS (SELECT * FROM {view} WHERE NOT server_side),
    pop AS (SELECT count(DISTINCT host) AS n_pop, min(ts) AS t0, max(ts) AS t1 FROM o),
    {suspects},
    pp AS (
        SELECT eport, proto, avg(CASE WHEN est THEN 0.0 ELSE 1.0 END) AS port_probe_share
        FROM o WHERE outbound GROUP BY ALL
    ),
    b AS (
        SELECT ext, eport, proto, max(score) AS regularity
        FROM ({pairs_sql}) GROUP BY ALL
    ),
    e AS (
        SELECT o.ext, o.eport, o.proto,
            count(DISTINCT o.host) AS hosts,
            count(DISTINCT CASE WHEN sus.host IS NOT NULL THEN o.host END) AS suspect_hosts,
            count(*) AS flows,
            sum(CASE WHEN o.est THEN o.rate ELSE 0 END) AS est_flows,
            sum(o.packets) AS packets, sum(o.bytes) AS bytes,
            avg(o.te - o.ts) AS duration_s,
            min(o.ts) AS first, max(o.te) AS last,
            avg(cos(2 * pi() * ((o.ts % 86400) / 86400))) AS hour_cos,
            avg(sin(2 * pi() * ((o.ts % 86400) / 86400))) AS hour_sin,
            sum(CASE WHEN o.outbound THEN 0 ELSE o.packets END)
                / greatest(1, sum(CASE WHEN o.outbound THEN o.packets ELSE 0 END)) AS in_out_ratio,
            max(o.rate) AS rate_max
        FROM o LEFT JOIN sus USING (host)
        GROUP BY o.ext, o.eport, o.proto
    )
    SELECT e.ext AS ip, e.eport AS port, e.proto,
        ln(1 + e.hosts) AS log_hosts,
        e.suspect_hosts,
        e.suspect_hosts / e.hosts AS suspect_share,
        ln(1 + e.flows) AS log_flows,
        ln(1 + e.est_flows) AS log_est_flows,
        e.packets / e.flows AS pkts_per_flow,
        e.bytes / greatest(1, e.packets) AS bytes_per_pkt,
        ln(1 + e.bytes / e.flows) AS log_bytes_per_flow,
        e.duration_s,
        (e.last - e.first) / greatest(1, pop.t1 - pop.t0) AS span_share,
        e.hour_cos, e.hour_sin, e.in_out_ratio,
        coalesce(b.regularity, -1.0) AS regularity,
        CASE WHEN e.eport IN (80, 443, 8080, 8443) THEN 0 WHEN e.eport < 1024 THEN 1
             WHEN e.eport < 49152 THEN 2 ELSE 3 END AS port_class,
        CASE WHEN e.proto = 17 THEN 1 ELSE 0 END AS is_udp,
        (e.first - pop.t0) / greatest(1, pop.t1 - pop.t0) AS novelty,
        coalesce(pp.port_probe_share, 0) AS port_probe_share,
        e.hosts, e.flows, e.est_flows, e.first, e.last, e.rate_max,
        (lab.ext IS NOT NULL) AS label
    FROM e CROSS JOIN pop
    LEFT JOIN b USING (ext, eport, proto)
    LEFT JOIN lab USING (ext, eport, proto)
    LEFT JOIN pp USING (eport, proto)
    """


def endpoint_features(
    view: FlowView,
    seeds: Seeds | None,
    beacon: BeaconParams | None = None,
    pairs: str | None = None,
) -> pa.Table:
    """One row per external endpoint: ip, port, proto, :data:`FEATURES`, support, ``label``.

    ``pairs``: a table of scored beacon pairs (:func:`~mamori.detect.beacon.materialise_pairs`)
    to reuse; otherwise they are scored here."""
    sql = features_sql(view.name, seeds.name if seeds and seeds.count else None,
                       beacon or BeaconParams(), pairs)  # fmt: skip
    out: pa.Table = view.sql(sql).to_arrow_table()
    return out


def _matrix(t: pa.Table) -> np.ndarray[Any, np.dtype[np.float64]]:
    cols = [np.asarray(t.column(f).to_numpy(zero_copy_only=False), dtype=np.float64)
            for f in FEATURES]  # fmt: skip
    return np.column_stack(cols) if cols else np.empty((t.num_rows, 0))


@dataclass
class LearnedModel:
    version: int
    path: Path
    estimator: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self, t: pa.Table) -> np.ndarray[Any, np.dtype[np.float64]]:
        if t.num_rows == 0:
            return np.zeros(0)
        proba = self.estimator.predict_proba(_matrix(t))[:, 1]
        return np.asarray(proba, dtype=np.float64)


def _new_estimator(n_pos: int) -> Any:
    base = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=5,
        class_weight="balanced", random_state=0, early_stopping=False,
    )  # fmt: skip
    return CalibratedClassifierCV(base, method="sigmoid", cv=min(3, n_pos))


def _models_dir(gov: Governance) -> Path:
    return gov.state_dir("models")


def _versions(d: Path) -> list[int]:
    out = []
    for p in d.glob("c2-v*.joblib"):
        m = re.fullmatch(r"c2-v(\d+)\.joblib", p.name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def train_model(
    gov: Governance,
    features: pa.Table,
    *,
    actor: str,
    window: tuple[datetime | None, datetime | None],
    reviewed: Sequence[bool | None] | None = None,
) -> LearnedModel:
    """Fit, evaluate (out of fold), store and audit a new model version.

    ``reviewed``: per row of ``features``, people's verdict (True: confirmed or corroborated,
    False: rejected, None: not reviewed); it overrides the listing label, and reviewed rows are
    always kept in training."""
    y = np.asarray(features.column("label").to_numpy(zero_copy_only=False), dtype=bool)
    rev = np.asarray([-1 if v is None else int(v) for v in reviewed or []], dtype=np.int8)
    if rev.size:
        y = np.where(rev == 1, True, np.where(rev == 0, False, y))
    n_pos = int(y.sum())
    if n_pos < 3 or (len(y) - n_pos) < 3:
        raise TrainingError(
            f"training needs at least 3 listed C&C endpoints seen in the flows and 3 others; "
            f"the window has {n_pos} and {len(y) - n_pos}"
        )
    x = _matrix(features)
    neg = np.nonzero(~y)[0]
    if len(neg) > MAX_NEGATIVES:
        # Negatives are unlabelled endpoints, nearly all benign and alike: a seeded sample of
        # them trains as well and keeps training time flat as the window grows.
        # the rows people rejected are the hard negatives: always kept
        hard = np.nonzero(rev == 0)[0] if rev.size else np.zeros(0, np.int64)
        neg = np.setdiff1d(neg, hard)
        keep = np.unique(np.concatenate([np.nonzero(y)[0], hard, np.random.default_rng(0).choice(
            neg, min(len(neg), MAX_NEGATIVES), replace=False)]))  # fmt: skip
        x, y = x[keep], y[keep]
    oof = _out_of_fold(x, y)
    metrics = {
        "endpoints": features.num_rows,
        "trained_on": len(y),
        "positives": n_pos,
        "positives_confirmed": int((rev == 1).sum()) if rev.size else 0,
        "negatives_rejected": int((rev == 0).sum()) if rev.size else 0,
        "roc_auc_oof": round(float(roc_auc_score(y, oof)), 4),
        "average_precision_oof": round(float(average_precision_score(y, oof)), 4),
        "positives_above_0_5_oof": int((oof[y] >= 0.5).sum()),
        "negatives_above_0_5_oof": int((oof[~y] >= 0.5).sum()),
    }
    est = _new_estimator(n_pos).fit(x, y)
    d = _models_dir(gov)
    versions = _versions(d)
    version = (versions[-1] + 1) if versions else 1
    path = d / f"c2-v{version}.joblib"
    joblib.dump(est, path)
    meta = {
        "version": version,
        "trained": datetime.now(UTC).isoformat(),
        "trained_by": actor,
        "window": [w.isoformat() if w else None for w in window],
        "features": list(FEATURES),
        "estimator": "CalibratedClassifierCV(HistGradientBoostingClassifier, sigmoid)",
        "metrics": metrics,
    }
    (d / f"c2-v{version}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    gov.audit.append(
        actor=actor,
        event="model-trained",
        measure="M2",
        legal_basis="justified-act",
        dataset="findings",
        detail={"model": path.name, **metrics},
    )
    return LearnedModel(version, path, est, meta)


def _out_of_fold(
    x: np.ndarray[Any, np.dtype[np.float64]], y: np.ndarray[Any, np.dtype[np.bool_]]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    n_pos = int(y.sum())
    folds = min(3, n_pos)
    oof = np.zeros(len(y))
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for tr, te in skf.split(x, y):
        n_tr_pos = int(y[tr].sum())
        if n_tr_pos < 2:
            continue
        est = _new_estimator(n_tr_pos).fit(x[tr], y[tr])
        oof[te] = est.predict_proba(x[te])[:, 1]
    return oof


def load_model(gov: Governance, version: int | None = None) -> LearnedModel | None:
    """The newest stored model (or ``version``); ``None`` when none was trained."""
    d = _models_dir(gov)
    versions = _versions(d)
    if not versions:
        return None
    v = version if version is not None else versions[-1]
    path = d / f"c2-v{v}.joblib"
    if not path.exists():
        raise FileNotFoundError(f"no model version {v} in {d} (have {versions})")
    meta_path = d / f"c2-v{v}.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    if meta.get("features", list(FEATURES)) != list(FEATURES):
        raise ValueError(f"model v{v} was trained on other features; train a new one")
    return LearnedModel(v, path, joblib.load(path), meta)


def score_endpoints(model: LearnedModel, features: pa.Table) -> np.ndarray[Any, np.dtype[Any]]:
    """Calibrated C&C probability per row of ``features``."""
    return model.predict(features)
