"""One action contract: every block, filter, refusal, suspension and alert has a kind, a target, a
legal basis, an expiry and a life cycle, and goes through it the same way.

Life cycle (:data:`TRANSITIONS`)::

    proposed ──approve──▶ approved ──apply──▶ applied ──end──▶ ended
       │                     │                   │
       ├──reject──▶ rejected └──expire──┐        └──expire──▶ expired
       └──expire────────────────────────┴────────────────────▶ expired

An action expires only once its expiry has passed, and from then on expiring is its only step:
every action ends, and a record never says it was approved, applied or ended after it expired. Each step is a new version of the action's row in the ``actions``
dataset, written by :func:`propose`, :func:`approve`, :func:`reject`, :func:`apply`, :func:`end` or
:func:`expire` through governance — the write is the audit entry (measure, legal basis, actor, the
step and the action ids). There is no other path: the console, ``act rpz``, the alert sender and the
back ends of later issues all call these functions. States only move forward, so the version of
highest rank is the current one (:func:`latest_table`).

A :class:`Backend` puts actions of one kind into effect (an RPZ zone, an nftables set, a FlowSpec
announcement, a Postfix map …): :func:`apply` calls its ``apply`` before recording the step,
:func:`end` and :func:`expire` its ``withdraw``, so a record never claims what the back end did not
do. :func:`expire_due` is the sweep that expires whatever is past its expiry.

Rows written before this contract used ``pending`` (now ``proposed``) and ``active`` (now
``applied``), kinds ``acl``/``smtp-refuse``/``suspend``, and kept the expiry in ``end``; they are read
under the new names (:func:`normalise`), never rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from mamori.governance import Governance, LegalBasis
from mamori.schemas import ACTIONS, FQDN_LEN, ID_LEN, TEXT_LEN

__all__ = [
    "LEGACY_KINDS",
    "LEGACY_STATES",
    "OPEN",
    "RANK",
    "TRANSITIONS",
    "Action",
    "ActionKind",
    "ActionState",
    "Backend",
    "InvalidTransition",
    "apply",
    "approve",
    "check_transition",
    "current",
    "effective_state",
    "end",
    "expire",
    "expire_due",
    "latest_table",
    "normalise",
    "propose",
    "reject",
]

log = logging.getLogger(__name__)


class ActionKind(StrEnum):
    RPZ = "rpz"
    NFTABLES = "nftables"
    FLOWSPEC = "flowspec"
    RTBH = "rtbh"
    SMTP_AUTH_REFUSAL = "smtp-auth-refusal"
    ACCOUNT_SUSPENSION = "account-suspension"
    ALERT = "alert"
    SHARE = "share"  # a C&C finding on the shared list (mamori.act.share_action)


class ActionState(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    APPLIED = "applied"
    REJECTED = "rejected"
    ENDED = "ended"
    EXPIRED = "expired"


_S = ActionState
TRANSITIONS: Mapping[ActionState, frozenset[ActionState]] = MappingProxyType(
    {
        _S.PROPOSED: frozenset({_S.APPROVED, _S.REJECTED, _S.EXPIRED}),
        # an approval taken back before it is applied (a false positive): rejected, never applied
        _S.APPROVED: frozenset({_S.APPLIED, _S.REJECTED, _S.EXPIRED}),
        _S.APPLIED: frozenset({_S.ENDED, _S.EXPIRED}),
        _S.REJECTED: frozenset(),
        _S.ENDED: frozenset(),
        _S.EXPIRED: frozenset(),
    }
)
OPEN = (_S.PROPOSED, _S.APPROVED, _S.APPLIED)  # not over yet: these expire
# Every transition raises the rank, so the highest-ranked version of an action is its current one.
RANK: Mapping[str, int] = MappingProxyType(
    {"proposed": 0, "approved": 1, "applied": 2, "rejected": 3, "ended": 3, "expired": 3}
)
LEGACY_STATES: Mapping[str, ActionState] = MappingProxyType(
    {"pending": _S.PROPOSED, "active": _S.APPLIED}
)
LEGACY_KINDS: Mapping[str, ActionKind] = MappingProxyType(
    {
        "acl": ActionKind.NFTABLES,
        "smtp-refuse": ActionKind.SMTP_AUTH_REFUSAL,
        "suspend": ActionKind.ACCOUNT_SUSPENSION,
    }
)


class InvalidTransition(ValueError):
    """A step the life cycle does not allow from the action's current state (or not yet, or no
    longer: expiry)."""

    def __init__(self, action_id: str, state: str, to: str, why: str = "") -> None:
        self.action_id, self.state, self.to = action_id, state, to
        allowed = TRANSITIONS.get(ActionState(state), frozenset()) if state in RANK else ()
        text = why or (
            f"{state} -> {to} is not a step of the life cycle; from {state}: "
            + (", ".join(sorted(allowed)) or "none (it is over)")
        )
        super().__init__(f"action {action_id}: {text}")


def _ms(t: datetime | None) -> datetime | None:
    # stored with millisecond precision: keep the model equal to what reads back
    return (
        None if t is None else t.astimezone(UTC).replace(microsecond=t.microsecond // 1000 * 1000)
    )


class Action(BaseModel):
    """One version of an action (a row of the ``actions`` dataset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action_id: str = Field(min_length=1, max_length=ID_LEN)
    kind: ActionKind
    target: str = Field(min_length=1, max_length=FQDN_LEN)
    measure: str = Field(pattern=r"^M(1[0-4]|[1-9])$")
    legal_basis: LegalBasis
    justification: str | None = Field(default=None, max_length=TEXT_LEN)
    created: AwareDatetime
    expires: AwareDatetime
    state: ActionState = ActionState.PROPOSED
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    approved_by: str | None = Field(default=None, max_length=ID_LEN)
    finding_id: str | None = Field(default=None, max_length=ID_LEN)
    subscribers_affected: int | None = Field(default=None, ge=0, lt=2**32)

    @field_validator("created", "expires", "start", "end", mode="after")
    @classmethod
    def _to_ms(cls, v: datetime | None) -> datetime | None:
        return _ms(v)

    @model_validator(mode="after")
    def _ends(self) -> Action:
        if self.expires <= self.created:
            raise ValueError(f"action {self.action_id}: expires before it is proposed")
        return self

    def due(self, now: datetime) -> bool:
        """Past its expiry and not over yet: the sweep expires it."""
        return self.state in OPEN and self.expires <= now

    def row(self) -> dict[str, Any]:
        return {c: _plain(getattr(self, c)) for c in ACTIONS.column_names}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Action:
        """A stored row (any version, old names included) as an Action."""
        r = normalise(row)
        return cls(**{c: r.get(c) for c in ACTIONS.column_names})


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, StrEnum) else v


def normalise(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row under today's names: legacy states and kinds renamed, a legacy row's expiry taken
    from ``end`` (where it was kept)."""
    r = dict(row)
    state = str(r.get("state"))
    if state in LEGACY_STATES:
        r["state"] = LEGACY_STATES[state].value
    kind = str(r.get("kind"))
    if kind in LEGACY_KINDS:
        r["kind"] = LEGACY_KINDS[kind].value
    if r.get("expires") is None and "end" in r:
        r["expires"] = r["end"]
        if state in LEGACY_STATES:  # then it was the planned end, not an end that happened
            r["end"] = None
    return r


def effective_state(row: Mapping[str, Any], now: datetime) -> str:
    """The state to show: an action past its expiry that the sweep has not reached yet is
    expired already (no write needed to say so)."""
    state = str(row["state"])
    expires = row.get("expires")
    if state in OPEN and expires is not None and expires <= now:
        return ActionState.EXPIRED.value
    return state


def check_transition(action: Action, to: ActionState, now: datetime) -> None:
    """Raise :class:`InvalidTransition` unless ``action`` may go to ``to`` at ``now``."""
    if to not in TRANSITIONS[action.state]:
        raise InvalidTransition(action.action_id, action.state, to)
    if to is ActionState.EXPIRED and action.expires > now:
        raise InvalidTransition(
            action.action_id,
            action.state,
            to,
            f"expires at {action.expires.isoformat()}, not yet; end or reject it instead",
        )
    if to is not ActionState.EXPIRED and action.expires <= now:
        raise InvalidTransition(
            action.action_id,
            action.state,
            to,
            f"expired at {action.expires.isoformat()}; it can only be recorded as expired now",
        )


# ---------------------------------------------------------------- back ends

Rendered_co = TypeVar("Rendered_co", covariant=True)


class Backend(Protocol[Rendered_co]):
    """Puts actions of one kind into effect and takes them out again.

    ``render`` says what applying the actions would configure (zone text, an nft ruleset, BGP
    announcements, map entries), without side effects; ``apply`` configures it; ``withdraw`` takes
    it away again. Both are called before the step is recorded and must be safe to repeat.
    """

    @property
    def kind(self) -> ActionKind: ...

    def render(self, actions: Sequence[Action]) -> Rendered_co: ...

    def apply(self, actions: Sequence[Action]) -> None: ...

    def withdraw(self, actions: Sequence[Action]) -> None: ...


def _check_backend(backend: Backend[object] | None, actions: Sequence[Action]) -> None:
    if backend is None:
        return
    other = sorted({a.kind.value for a in actions if a.kind != backend.kind})
    if other:
        raise ValueError(f"the {backend.kind} back end cannot act on {', '.join(other)} actions")


# ---------------------------------------------------------------- the steps


def _record(
    gov: Governance,
    versions: Sequence[Action],
    actor: str,
    step: str,
    before: Mapping[str, str],
    detail: Mapping[str, Any] | None,
) -> None:
    """One write per measure, basis and justification (what governance checks a write under)."""
    groups: dict[tuple[str, str, str | None], list[Action]] = {}
    for a in versions:
        groups.setdefault((a.measure, a.legal_basis.value, a.justification), []).append(a)
    for (measure, basis, justification), group in groups.items():
        info: dict[str, Any] = {
            "step": step,
            "from": sorted({before[a.action_id] for a in group if before.get(a.action_id)}),
            "to": group[0].state.value,
            "kinds": sorted({a.kind.value for a in group}),
            "action_ids": [a.action_id for a in group],
            **(detail or {}),
        }
        if justification:
            info["justification"] = justification
        affected = {
            a.action_id: a.subscribers_affected
            for a in group
            if a.subscribers_affected is not None and a.kind is not ActionKind.ALERT
        }
        if affected:
            # so the transparency report's "subscribers affected" can be rebuilt from the log
            info["subscribers_affected"] = affected
        gov.write(
            measure,
            ACTIONS.name,
            pa.Table.from_pylist([a.row() for a in group], schema=ACTIONS.arrow),
            actor,
            basis=basis,
            justification=justification,
            detail=info,
        )


def _step(
    gov: Governance,
    actions: Sequence[Action],
    to: ActionState,
    actor: str,
    now: datetime,
    changes: Mapping[str, Any],
    detail: Mapping[str, Any] | None,
) -> list[Action]:
    for a in actions:  # all or nothing: nothing is written if one of them may not move
        check_transition(a, to, now)
    versions = [a.model_copy(update={"state": to, **changes}) for a in actions]
    if versions:
        _record(
            gov, versions, actor, to.value, {a.action_id: a.state.value for a in actions}, detail
        )
    return versions


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def propose(
    gov: Governance,
    actions: Sequence[Action],
    actor: str,
    *,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> list[Action]:
    """Record new actions as proposed (their first version)."""
    at = _now(now)
    for a in actions:
        if a.state is not ActionState.PROPOSED or a.start or a.end or a.approved_by:
            raise InvalidTransition(
                a.action_id, a.state, "proposed", "a new action starts proposed, unapproved"
            )
        if a.expires <= at:
            raise InvalidTransition(
                a.action_id, a.state, "proposed", "it expires before it is proposed"
            )
    if actions:
        _record(gov, list(actions), actor, "proposed", {}, detail)
    return list(actions)


def approve(
    gov: Governance,
    actions: Sequence[Action],
    actor: str,
    *,
    approved_by: str | None = None,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> list[Action]:
    """proposed → approved. ``approved_by``: who decided (default the actor; ``policy:<rule>``
    where a configured rule decides)."""
    return _step(
        gov,
        actions,
        ActionState.APPROVED,
        actor,
        _now(now),
        {"approved_by": approved_by or actor},
        detail,
    )


def reject(
    gov: Governance,
    actions: Sequence[Action],
    actor: str,
    *,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> list[Action]:
    """proposed | approved → rejected (an approved action not yet applied may still be taken
    back, e.g. when its finding turns out to be a false positive)."""
    at = _now(now)
    return _step(gov, actions, ActionState.REJECTED, actor, at, {"end": at}, detail)


def apply(
    gov: Governance,
    actions: Sequence[Action],
    actor: str,
    *,
    backend: Backend[object] | None = None,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> list[Action]:
    """approved → applied: the back end (if any) applies them first, then the step is recorded."""
    at = _now(now)
    for a in actions:
        check_transition(a, ActionState.APPLIED, at)
    _check_backend(backend, actions)
    if backend is not None and actions:
        backend.apply(actions)
    return _step(gov, actions, ActionState.APPLIED, actor, at, {"start": at}, detail)


def _withdraw_then(
    gov: Governance,
    actions: Sequence[Action],
    to: ActionState,
    actor: str,
    backend: Backend[object] | None,
    now: datetime | None,
    detail: Mapping[str, Any] | None,
) -> list[Action]:
    at = _now(now)
    for a in actions:
        check_transition(a, to, at)
    _check_backend(backend, actions)
    in_force = [a for a in actions if a.state is ActionState.APPLIED]
    if backend is not None and in_force:
        backend.withdraw(in_force)
    return _step(gov, actions, to, actor, at, {"end": at}, detail)


def end(
    gov: Governance,
    actions: Sequence[Action],
    actor: str,
    *,
    backend: Backend[object] | None = None,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> list[Action]:
    """applied → ended: the back end (if any) withdraws them first. Without a back end the effect
    is left as it is (e.g. an RPZ zone replaced by a newer one)."""
    return _withdraw_then(gov, actions, ActionState.ENDED, actor, backend, now, detail)


def expire(
    gov: Governance,
    actions: Sequence[Action],
    actor: str,
    *,
    backend: Backend[object] | None = None,
    now: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
) -> list[Action]:
    """proposed | approved | applied → expired, once past expiry; applied ones are withdrawn
    by the back end (if any) first."""
    return _withdraw_then(gov, actions, ActionState.EXPIRED, actor, backend, now, detail)


# ---------------------------------------------------------------- reading


def _lookup(values: pa.ChunkedArray | pa.Array, table: Mapping[str, Any], typ: pa.DataType) -> Any:
    """``values`` mapped through ``table``; values not in it left as they are (vectorised)."""
    keys = pa.array(list(table), pa.string())
    mapped = pc.take(pa.array(list(table.values()), typ), pc.index_in(values, value_set=keys))
    return pc.coalesce(mapped, values) if typ == pa.string() else mapped


def latest_table(table: pa.Table) -> pa.Table:
    """The current version of each action (highest rank; ties: the later end, then start), rows
    normalised to today's names (see :func:`normalise`). Columns not read are left out."""
    if table.num_rows == 0:
        return table
    t = table
    if "state" in t.column_names:
        was_legacy = pc.is_in(t.column("state"), value_set=pa.array(list(LEGACY_STATES)))
        states = {k: v.value for k, v in LEGACY_STATES.items()}
        t = t.set_column(
            t.schema.get_field_index("state"), "state", _lookup(t["state"], states, pa.string())
        )
        if "expires" in t.column_names and "end" in t.column_names:
            old = pc.is_null(t.column("expires"))
            t = t.set_column(
                t.schema.get_field_index("expires"),
                "expires",
                pc.if_else(old, t.column("end"), t.column("expires")),
            )
            planned = pc.and_(old, was_legacy)  # the legacy end of an open action was its expiry
            t = t.set_column(
                t.schema.get_field_index("end"),
                "end",
                pc.if_else(planned, pa.scalar(None, t.schema.field("end").type), t.column("end")),
            )
    if "kind" in t.column_names:
        kinds = {k: v.value for k, v in LEGACY_KINDS.items()}
        t = t.set_column(
            t.schema.get_field_index("kind"), "kind", _lookup(t["kind"], kinds, pa.string())
        )
    rank = pc.fill_null(_lookup(t.column("state"), RANK, pa.int8()), -1)
    keys = [("action_id", "ascending"), ("_rank", "descending")]
    keys += [(c, "descending") for c in ("end", "start") if c in t.column_names]
    t = t.append_column("_rank", rank).sort_by(keys)
    codes = pc.dictionary_encode(t.column("action_id").combine_chunks()).indices.to_numpy(
        zero_copy_only=False
    )
    first = np.ones(len(codes), dtype=bool)
    first[1:] = codes[1:] != codes[:-1]
    return t.filter(pa.array(first)).drop_columns(["_rank"])


def _measures_with_actions(gov: Governance, measures: Sequence[str] | None) -> list[str]:
    ids = measures if measures is not None else list(gov.catalogue)
    return [
        m
        for m in ids
        if m in gov.catalogue
        and gov.config.measure_enabled(m)
        and gov.catalogue[m].may_read(ACTIONS.name)
        and gov.catalogue[m].may_write(ACTIONS.name)
    ]


def _read_current(
    gov: Governance,
    actor: str,
    measures: Sequence[str] | None,
    ids: Iterable[str] | None,
    since: datetime | None,
) -> pa.Table:
    tables = []
    for m in _measures_with_actions(gov, measures):
        # a measure reads back only its own actions, never another measure's
        t = gov.open(m, ACTIONS.name, None, actor, start=since).arrow()
        t = t.filter(pc.equal(t.column("measure"), m))
        if ids is not None:
            t = t.filter(
                pc.is_in(t.column("action_id"), value_set=pa.array(list(ids), pa.string()))
            )
        tables.append(t)
    if not tables:
        return ACTIONS.arrow.empty_table()
    return latest_table(pa.concat_tables(tables, promote_options="permissive"))


def _actions(table: pa.Table) -> dict[str, Action]:
    out: dict[str, Action] = {}
    bad = 0
    for r in table.to_pylist():
        try:
            out[r["action_id"]] = Action.from_row(r)
        except ValueError:  # a legacy row without an expiry, an unknown kind: shown, not decided
            bad += 1
    if bad:
        log.warning("actions: %d rows are not actions of this contract (left alone)", bad)
    return out


def current(
    gov: Governance,
    actor: str,
    measures: Sequence[str] | None = None,
    *,
    ids: Iterable[str] | None = None,
    since: datetime | None = None,
) -> dict[str, Action]:
    """The current version of each action of ``measures`` (default: every measure that keeps
    actions), read through governance under each measure. ``ids``: only these; ``since``: only
    actions proposed from then on (fewer partitions read)."""
    return _actions(_read_current(gov, actor, measures, ids, since))


def expire_due(
    gov: Governance,
    actor: str,
    now: datetime | None = None,
    *,
    backends: Mapping[ActionKind, Backend[object]] | None = None,
    measures: Sequence[str] | None = None,
) -> list[Action]:
    """Expire every action past its expiry that is not over yet; applied ones are withdrawn by
    their kind's back end (where one is given) first. Returns the expired versions."""
    at = _now(now)
    t = _read_current(gov, actor, measures, None, None)
    if t.num_rows:
        open_ = pc.is_in(t.column("state"), value_set=pa.array([s.value for s in OPEN]))
        due = pc.less_equal(t.column("expires"), pa.scalar(at, t.schema.field("expires").type))
        t = t.filter(pc.and_(open_, pc.fill_null(due, False)))
    groups: dict[ActionKind, list[Action]] = {}
    for a in _actions(t).values():
        groups.setdefault(a.kind, []).append(a)
    out: list[Action] = []
    for kind, group in sorted(groups.items()):
        backend = (backends or {}).get(kind)
        out += expire(gov, group, actor, backend=backend, now=at, detail={"sweep": True})
    return out
