"""The desk's cases (status, assignee, notes, timeline; kept by number after an opt-out), the
analyst's review of findings, and actions proposed by one person and decided by another — over
real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pyarrow as pa
import pytest

from mamori.act import cases as cases_mod
from mamori.act.casebook import CaseBook
from mamori.governance import Governance, LegalBasis
from mamori.governance.roles import Role
from mamori.schemas import FINDINGS, MATCHES
from mamori.web.app import create_app
from mamori.web.auth import Accounts
from tests.conftest import make_config, table
from tests.web.conftest import ACCOUNTS, C2_IP, PASSWORD, T0, _t, csrf_of, login, populate
from tests.web.server import running


def _case(sub: str, cause: str, nid: str) -> cases_mod.Case:
    cid = cases_mod.case_id(sub, "M5", cause)
    return cases_mod.Case(
        opened=T0,
        updated=T0 + timedelta(minutes=2),
        case_id=cid,
        subscriber_id=sub,
        measure="M5",
        cause=cause,
        events=3,
        events_since_notice=0,
        notifications=1,
        last_event=T0,
        notification_id=nid,
        notification_state="sent",
        legal_basis="consent",
        subscriber_status="notified",
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Governance]]:
    gov = Governance(make_config(tmp_path_factory.mktemp("cases") / "store"))
    populate(gov)
    kept, gone = (
        _case("sub-0001", "infected:mirai", "n-1"),
        _case("sub-0002", "infected:emotet", "n-2"),
    )
    gov.write("M5", "cases", cases_mod.to_table([kept, gone]), "test", basis="consent")
    CaseBook(gov).opened([(c.case_id, "M5", c.opened) for c in (kept, gone)], "notify")
    # the infected device's address is sub-0001's, so its matched communication may be kept
    gov.write_registry(
        "allocations",
        table(
            [
                {
                    "start": T0 - timedelta(days=1),
                    "end": None,
                    "addr": "10.0.1.2",
                    "subscriber_id": "sub-0001",
                }
            ]
        ),
        "test",
        source="test",
    )
    gov.write(
        "M5",
        "matches",
        _t(
            [
                {
                    "ts": T0 - timedelta(hours=1),
                    "ip": "10.0.1.2",
                    "port": 51234,
                    "indicator": "infected:mirai",
                    "finding_id": "f-inf-1",
                    "notification_id": "n-1",
                }
            ],
            MATCHES.arrow,
        ),
        "test",
        basis="consent",
    )
    accounts = Accounts(gov)
    for role, name in ACCOUNTS.items():
        accounts.add(name, role, PASSWORD)
    accounts.add("analyst2", Role.ANALYST, PASSWORD)
    with running(create_app(gov)) as url:
        yield url, gov
    gov.close()


@contextmanager
def _as(url: str, name: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as c:
        login(c, name)
        yield c


def test_desk_works_a_case_to_closure(store: tuple[str, Governance]) -> None:
    url, gov = store
    cid = cases_mod.case_id("sub-0001", "M5", "infected:mirai")
    with _as(url, ACCOUNTS[Role.ABUSE_DESK]) as c:
        listing = c.get("/cases").text
        assert f'data-case="{cid}"' in listing
        page = c.get(f"/cases/{cid}").text
        assert 'id="status">open<' in page
        steps = [
            s for s in ("finding", "match", "attribution", "mail") if f'data-step="{s}"' in page
        ]
        assert steps == ["finding", "match", "attribution", "mail"]
        assert "f-inf-1" in page and "sub-0001" in page
        csrf = csrf_of(page)
        r = c.post(
            f"/cases/{cid}",
            data={
                "csrf": csrf,
                "status": "acknowledged",
                "assignee": "desk-tanaka",
                "note": "called back",
            },
        )
        assert r.status_code == 303
        page = c.get(f"/cases/{cid}").text
        assert 'id="status">acknowledged<' in page and "desk-tanaka" in page
        assert "called back" in page
        c.post(
            f"/cases/{cid}", data={"csrf": csrf, "status": "resolved", "assignee": "desk-tanaka"}
        )
        page = c.get(f"/cases/{cid}").text
        assert 'id="status">resolved<' in page and 'data-step="closure"' in page
    events = [e for e in gov.audit.entries() if e.event == "case" and e.case_id == cid]
    assert [json.loads(e.detail or "{}")["step"] for e in events] == [
        "opened",
        "status",
        "assign",
        "note",
        "status",
    ]
    assert all("called back" not in (e.detail or "") for e in events)  # notes stay in the book


def test_case_kept_by_number_after_opt_out(store: tuple[str, Governance]) -> None:
    url, gov = store
    cid = cases_mod.case_id("sub-0002", "M5", "infected:emotet")
    with _as(url, ACCOUNTS[Role.ABUSE_DESK]) as c:
        csrf = csrf_of(c.get(f"/cases/{cid}").text)
        c.post(
            f"/cases/{cid}",
            data={"csrf": csrf, "note": "device is a camera", "status": "acknowledged"},
        )
        gov.consent.set("sub-0002", "M5", False, actor="subscriber:sub-0002", channel="web")
        # the subscriber phones in with the case number
        found = c.get("/search", params={"q": cid}).text
        assert f'href="/cases/{cid}"' in found
        page = c.get(f"/cases/{cid}").text
        assert page.count('id="withheld"') == 1
        assert 'id="status">acknowledged<' in page and "M5" in page
        for gone in ("sub-0002", "infected:emotet", "device is a camera", "10.0.1.2"):
            assert gone not in page, gone
        listing = c.get("/cases", params={"q": cid[:10]}).text
        assert f'data-case="{cid}"' in listing and "withheld" in listing


def test_cases_are_the_desks(store: tuple[str, Governance]) -> None:
    url, _ = store
    with _as(url, ACCOUNTS[Role.ANALYST]) as c:
        assert c.get("/cases").status_code == 403


def test_analyst_confirms_one_finding_and_rejects_another(store: tuple[str, Governance]) -> None:
    url, gov = store
    with _as(url, ACCOUNTS[Role.ANALYST]) as c:
        page = c.get("/findings/f-c2-1").text
        assert "hosts converging on it" in page
        csrf = csrf_of(page)
        assert (
            c.post(
                "/findings/f-c2-1/review", data={"csrf": csrf, "verdict": "confirmed"}
            ).status_code
            == 303
        )
        assert (
            c.post(
                "/findings/f-inf-1/review", data={"csrf": csrf, "verdict": "rejected"}
            ).status_code
            == 303
        )
        listing = c.get("/findings", params={"f.review": "confirmed"}).text
        assert 'data-finding="f-c2-1"' in listing and 'data-finding="f-inf-1"' not in listing
        assert 'id="review">' in c.get("/findings/f-inf-1").text
    reviews = [json.loads(e.detail or "{}") for e in gov.audit.entries() if e.event == "review"]
    assert {"finding": "f-c2-1", "decision": "confirmed"} in reviews
    assert {"finding": "f-inf-1", "decision": "rejected"} in reviews
    with _as(url, ACCOUNTS[Role.ABUSE_DESK]) as desk:
        csrf = csrf_of(desk.get("/findings").text)
        r = desk.post("/findings/f-c2-1/review", data={"csrf": csrf, "verdict": "rejected"})
        assert r.status_code == 403


NETWORK_PROPOSALS = [
    # what, the command the preview shows and the BGP back end announces (dry run), then withdraws
    ("block", f"route {C2_IP}/32 next-hop 192.0.2.1 community [ 65535:666 no-export ]"),
    (
        "filter",
        f"flow route {{ match {{ destination {C2_IP}/32; protocol tcp; "
        "destination-port [ =443 ]; } then { discard; } }",
    ),
]


@pytest.mark.parametrize(
    ("what", "command"), NETWORK_PROPOSALS, ids=[w for w, _ in NETWORK_PROPOSALS]
)
def test_proposed_by_one_approved_by_another_operator_applies_and_ends(
    store: tuple[str, Governance], what: str, command: str
) -> None:
    url, gov = store
    dry_run = gov.config.store / "_state" / "bgp" / "dry-run.log"
    before = dry_run.read_text() if dry_run.exists() else ""
    with _as(url, ACCOUNTS[Role.ANALYST]) as a:
        csrf = csrf_of(a.get("/findings/f-c2-1").text)
        r = a.post("/findings/f-c2-1/propose", data={"csrf": csrf, "what": what, "hours": "24"})
        assert r.status_code == 303
        action_id = r.headers["location"].split("+")[-1]
        queue = a.get("/approvals").text
        mine = queue.split("Waiting for others")[1]
        assert action_id in mine  # not in "For you": nobody approves their own proposal
        r = a.post(f"/actions/{action_id}/approve", data={"csrf": csrf})
        assert r.status_code == 403
    with _as(url, "analyst2") as other:
        r = other.post(
            f"/actions/{action_id}/approve", data={"csrf": csrf_of(other.get("/approvals").text)}
        )
        assert r.status_code == 403 and "operators" in r.text  # a network action
    with _as(url, ACCOUNTS[Role.OPERATOR]) as op:
        queue = op.get("/approvals").text
        card = queue.split(f'id="q-{action_id}"')[1].split("</section>")[0]
        assert f"announce {command}" in card
        assert "web:analyst1" in card and ">Approve</button>" in card
        csrf = csrf_of(queue)
        for step in ("approve", "apply", "end"):
            r = op.post(f"/actions/{action_id}/{step}", data={"csrf": csrf, "back": "/approvals"})
            assert r.status_code == 303, (step, r.text[:300])
        detail = op.get(f"/actions/{action_id}").text
        assert ">ended<" in detail
    # what the back end was told: announced when applied, withdrawn when ended
    sent = dry_run.read_text()[len(before) :]
    assert f"announce {command}" in sent and f"withdraw {command}" in sent
    assert sent.index(f"announce {command}") < sent.index(f"withdraw {command}")
    writes = [
        (e.actor, json.loads(e.detail or "{}")["step"])
        for e in gov.audit.entries()
        if e.event == "write" and e.dataset == "actions" and action_id in (e.detail or "")
    ]
    assert writes == [
        ("web:analyst1", "proposed"),
        ("web:operator1", "approved"),
        ("web:operator1", "applied"),
        ("web:operator1", "ended"),
    ]


def test_warn_goes_into_the_warning_zone_while_it_holds(store: tuple[str, Governance]) -> None:
    from mamori.act import base as act
    from mamori.act.rpz import generate_rpz, rpz_ip_owner

    url, gov = store
    trigger = rpz_ip_owner(C2_IP)
    zone_file = None

    def zone() -> str:
        nonlocal zone_file
        [m8] = [z for z in generate_rpz(gov, "test").zones if z.measure == "M8"]
        zone_file = m8.path
        return m8.path.read_text()

    assert trigger not in zone()
    with _as(url, ACCOUNTS[Role.ANALYST]) as a:
        csrf = csrf_of(a.get("/findings/f-c2-1").text)
        r = a.post("/findings/f-c2-1/propose", data={"csrf": csrf, "what": "warn", "hours": "24"})
        assert r.status_code == 303, r.text[:300]
        action_id = r.headers["location"].split("+")[-1]
    assert trigger not in zone()  # proposed only: nothing changes before a second person agrees
    with _as(url, ACCOUNTS[Role.ABUSE_DESK]) as desk:
        queue = desk.get("/approvals").text
        card = queue.split(f'id="q-{action_id}"')[1].split("</section>")[0]
        assert trigger in card  # the record the zone will hold
        csrf = csrf_of(queue)
        r = desk.post(f"/actions/{action_id}/approve", data={"csrf": csrf, "back": "/approvals"})
        assert r.status_code == 303
    assert f"{trigger} CNAME" in zone()
    assert act.current(gov, "test", ["M8"])[action_id].state is act.ActionState.APPLIED
    with _as(url, ACCOUNTS[Role.ABUSE_DESK]) as desk:
        csrf = csrf_of(desk.get(f"/actions/{action_id}").text)
        r = desk.post(f"/actions/{action_id}/end", data={"csrf": csrf})
        assert r.status_code == 303
    assert trigger not in zone()


def test_finding_pictures_contacts_and_intervals_without_addresses(
    store: tuple[str, Governance],
) -> None:
    url, gov = store
    start = T0 + timedelta(days=1)
    flows = [
        {
            "time_start": start + timedelta(seconds=60 * i + (5 if h else 0)),
            "time_end": start + timedelta(seconds=60 * i + 1),
            "src_addr": f"10.0.7.{h + 1}",
            "dst_addr": "203.0.113.77",
            "src_port": 40000 + i,
            "dst_port": 8080,
            "protocol": 6,
            "packets": 3,
            "bytes": 180,
            "sampling_rate": 1,
        }
        for i in range(30)
        for h in range(2 if i % 2 else 1)
    ]
    gov.write("M1", "flows", table(flows), "test")
    gov.write(
        "M2",
        "findings",
        _t(
            [
                {
                    "detected": start + timedelta(minutes=31),
                    "finding_id": "f-beacon-1",
                    "kind": "c2",
                    "method": "beacon",
                    "ip": "203.0.113.77",
                    "port": 8080,
                    "protocol": "tcp",
                    "score": 0.8,
                    "first_seen": start,
                    "last_seen": start + timedelta(minutes=30),
                    "measure": "M2",
                }
            ],
            FINDINGS.arrow,
        ),
        "test",
    )
    with _as(url, ACCOUNTS[Role.ANALYST]) as c:
        page = c.get("/findings/f-beacon-1").text
    pictures = page.split("<h2>Contacts</h2>")[1].split("<h2>")[0]
    assert pictures.count("<svg") == 2
    assert "host 1" in pictures and "host 2" in pictures and "host 3" not in pictures
    assert "(45 flows)" in pictures
    assert "10.0.7." not in page  # inside hosts are numbered, never named
    assert "Seconds between" in pictures  # the histogram of intervals


def test_false_positive_labels_the_finding_and_allowlists_its_address(
    store: tuple[str, Governance],
) -> None:
    from datetime import UTC, datetime

    from mamori.ingest.reputation import current_reputation

    url, gov = store
    gov.write_registry(
        "reputation",
        pa.table(
            {
                "loaded": pa.array([datetime.now(UTC)] * 2, pa.timestamp("ms", "UTC")),
                "indicator_type": ["ip", "ip"],
                "ip": ["198.51.100.7", "203.0.113.99"],
                "category": ["c2", "c2"],
                "source": ["feed", "feed"],
            }
        ),
        "test",
        source="feed",
    )
    listed = set(current_reputation(gov, "M4", "test").column("ip").to_pylist())
    assert "198.51.100.7" in listed
    gov.write(
        "M2",
        "findings",
        _t(
            [
                {
                    "detected": T0,
                    "finding_id": "f-fp-1",
                    "kind": "c2",
                    "method": "correlation",
                    "ip": "198.51.100.7",
                    "port": 443,
                    "protocol": "tcp",
                    "score": 0.6,
                    "measure": "M2",
                }
            ],
            FINDINGS.arrow,
        ),
        "test",
    )
    # what was done about it so far: a block still proposed, one approved, a filter in force
    from mamori.act import base as act
    from mamori.web.proposals import propose_from_finding

    finding = {"finding_id": "f-fp-1", "kind": "c2", "ip": "198.51.100.7", "port": 443}
    finding["protocol"] = "tcp"
    proposed = propose_from_finding(gov, finding, "block", 24, "web:analyst2")
    approved = propose_from_finding(gov, finding, "block", 72, "web:analyst2")
    [approved] = act.approve(gov, [approved], "web:operator1")
    applied = propose_from_finding(gov, finding, "filter", 24, "web:analyst2")
    [applied] = act.apply(gov, act.approve(gov, [applied], "web:operator1"), "web:operator1")
    # and one the analyst may end (not a network action)
    [shared] = act.propose(
        gov,
        [
            act.Action(
                action_id="share-fp-1",
                kind=act.ActionKind.SHARE,
                target="198.51.100.7:443/tcp",
                measure="M3",
                legal_basis=LegalBasis.NOT_INFRINGEMENT,
                created=datetime.now(UTC),
                expires=datetime.now(UTC) + timedelta(hours=24),
                finding_id="f-fp-1",
            )
        ],
        "web:analyst2",
    )
    with _as(url, ACCOUNTS[Role.ANALYST]) as c:
        csrf = csrf_of(c.get("/findings/f-fp-1").text)
        r = c.post("/findings/f-fp-1/review", data={"csrf": csrf, "verdict": "false-positive"})
        assert r.status_code == 303
        said = c.get(r.headers["location"]).text
        # the analyst takes back the share; network actions are the operators' to end
        assert "1 action(s) taken back; 3 left for an operator to end" in said
        assert "誤検知" in c.get("/findings/f-fp-1", params={"lang": "ja"}).text
    listed = set(current_reputation(gov, "M4", "test").column("ip").to_pylist())
    assert "198.51.100.7" not in listed and "203.0.113.99" in listed
    assert any(e.event == "allowlist" for e in gov.audit.entries())
    network = (proposed.action_id, approved.action_id, applied.action_id)
    now = act.current(gov, "test", ["M3", "M13"])
    assert now[shared.action_id].state is act.ActionState.REJECTED
    assert [now[a].state.value for a in network] == ["proposed", "approved", "applied"]
    [flag] = [e for e in gov.audit.entries() if e.event == "action-flag"]
    assert flag.actor == "web:analyst1" and flag.measure == "M13"
    assert sorted(json.loads(flag.detail or "{}")["action_ids"]) == sorted(network)
    with _as(url, ACCOUNTS[Role.OPERATOR]) as op:
        queue = op.get("/approvals").text
        for a in network:  # each flagged where the operator decides on it
            card = queue.split(f'id="q-{a}"')[1].split("</section>")[0]
            assert f'data-flag="{a}"' in card and "false positive: finding f-fp-1" in card
        csrf = csrf_of(queue)
        for a, step in zip(network, ("reject", "reject", "end"), strict=True):
            r = op.post(f"/actions/{a}/{step}", data={"csrf": csrf, "back": "/approvals"})
            assert r.status_code == 303, (a, step, r.text[:300])
        assert 'data-flag="' not in op.get("/approvals").text
    now = act.current(gov, "test", ["M13"])
    assert [now[a].state.value for a in network] == ["rejected", "rejected", "ended"]
    assert now[applied.action_id].end is not None


def test_share_proposed_approved_exported_then_withdrawn(store: tuple[str, Governance]) -> None:
    """A C&C finding proposed for sharing by one analyst, approved by another: confirmed, in the
    next export; ended: out of the list and a withdrawal entry in the next export."""
    from mamori.act import base as act
    from mamori.share.csvio import csv_to_list
    from mamori.share.export import export
    from mamori.share.stix import ParseReport

    url, gov = store
    ip = "198.51.100.44"
    gov.write(
        "M2",
        "findings",
        _t(
            [
                {
                    "detected": T0,
                    "finding_id": "f-share-1",
                    "kind": "c2",
                    "method": "correlation",
                    "ip": ip,
                    "port": 8443,
                    "protocol": "tcp",
                    "score": 0.7,
                    "measure": "M2",
                }
            ],
            FINDINGS.arrow,
        ),
        "test",
    )

    def listed(fmt: str = "csv") -> str:
        return export(gov, fmt, "test")[0].decode()  # type: ignore[arg-type]

    assert ip not in listed()  # a candidate does not leave
    with _as(url, ACCOUNTS[Role.ANALYST]) as a:
        page = a.get("/findings/f-share-1").text
        assert 'id="propose-share"' in page
        assert 'id="propose-share"' not in a.get("/findings/f-inf-1").text  # not a C&C finding
        csrf = csrf_of(page)
        r = a.post("/findings/f-inf-1/propose", data={"csrf": csrf, "what": "share", "hours": "24"})
        assert r.status_code == 409 and "only C&amp;C findings" in r.text
        r = a.post(
            "/findings/f-share-1/propose", data={"csrf": csrf, "what": "share", "hours": "24"}
        )
        assert r.status_code == 303, r.text[:300]
        action_id = r.headers["location"].split("+")[-1]
        r = a.post(f"/actions/{action_id}/approve", data={"csrf": csrf})
        assert r.status_code == 403  # nobody approves their own proposal
    assert ip not in listed()  # proposed only
    with _as(url, "analyst2") as other:
        queue = other.get("/approvals").text
        card = queue.split(f'id="q-{action_id}"')[1].split("</section>")[0]
        assert f"{ip}:8443/tcp" in card and "shared list" in card
        r = other.post(
            f"/actions/{action_id}/approve", data={"csrf": csrf_of(queue), "back": "/approvals"}
        )
        assert r.status_code == 303, r.text[:300]
    assert act.current(gov, "test", ["M3"])[action_id].state is act.ActionState.APPLIED
    shared = listed()
    assert ip in shared and "withdrawn" not in shared.splitlines()[0]
    reviews = [
        (e.actor, json.loads(e.detail or "{}"))
        for e in gov.audit.entries()
        if e.event == "review" and "f-share-1" in (e.detail or "")
    ]
    assert reviews == [
        (
            "web:analyst2",
            {"finding": "f-share-1", "decision": "confirmed", "share_action": action_id},
        )
    ]
    with _as(url, ACCOUNTS[Role.ABUSE_DESK]) as desk:
        csrf = csrf_of(desk.get(f"/actions/{action_id}").text)
        assert desk.post(f"/actions/{action_id}/end", data={"csrf": csrf}).status_code == 303
    csv_text = listed()
    header, *rows = csv_text.splitlines()
    assert header.endswith('"withdrawn"')
    [row] = [r for r in rows if ip in r]
    assert row.endswith("true")
    report = ParseReport()
    assert ip not in csv_to_list(csv_text.encode(), report).column("ip").to_pylist()
    stix = json.loads(listed("stix"))
    revoked = [o for o in stix["objects"] if o.get("revoked")]
    assert len(revoked) == 1 and ip in revoked[0]["pattern"]
    misp = json.loads(listed("misp"))
    gone = [a for a in misp["Event"]["Attribute"] if a.get("deleted")]
    assert [a["value"] for a in gone] == [f"{ip}|8443"] and not gone[0]["to_ids"]
    last = [e for e in gov.audit.entries() if e.event == "share-export"][-1]
    assert json.loads(last.detail or "{}")["withdrawn"] == 1
    # the TAXII collection gets one revoked version of the indicator, however often published
    from mamori.share.taxii import CollectionStore, publish

    publish(gov, "test")
    publish(gov, "test")
    pubs = [json.loads(e.detail or "{}") for e in gov.audit.entries() if e.event == "share-publish"]
    assert [p["withdrawn"] for p in pubs[-2:]] == [1, 0]
    latest = [
        e["object"]
        for e in CollectionStore.of(gov).entries("c2").items
        if ip in e["object"].get("pattern", "")
    ]
    assert [o.get("revoked") for o in latest] == [True]
