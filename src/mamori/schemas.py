"""Arrow schemas of every dataset Mamori stores.

Each column is declared exactly once, here, with its Arrow type and the kind of data it holds:

* ``COMMUNICATIONS`` — header data of a subscriber's communications (addresses, ports, times,
  queried names). Protected by the secrecy of communications: only governance hands it out, only for
  a measure whose catalogue entry names the column.
* ``SUBSCRIBER`` — who a subscriber is (identifier, contact). Joined with communications data only by
  attribution, through governance.
* ``NEITHER`` — metadata: exporter addresses, counters, scores, audit fields.

There is deliberately no binary column type anywhere: nothing here can hold packet payload, and every
string column carries a maximum length that the store enforces on write.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import pyarrow as pa

__all__ = [
    "DATASETS",
    "Column",
    "DataKind",
    "DatasetSchema",
    "dataset",
]

TS = pa.timestamp("ms", tz="UTC")

# Longest textual forms; an IPv6 address is at most 39 characters (45 with an embedded IPv4 tail).
ADDR_LEN = 45
FQDN_LEN = 253
ID_LEN = 128
TEXT_LEN = 1024
JSON_LEN = 16384


class DataKind(StrEnum):
    COMMUNICATIONS = "communications"
    SUBSCRIBER = "subscriber"
    NEITHER = "neither"


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    kind: DataKind
    doc: str
    nullable: bool = True
    max_len: int | None = None  # required for string columns

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)


@dataclass(frozen=True)
class DatasetSchema:
    name: str
    time_column: str  # the column partitions (date=/hour=) are cut on
    columns: tuple[Column, ...]
    doc: str
    # Columns holding addresses that may belong to a subscriber, with the port column that goes with
    # each (behind CGNAT an address alone does not name a subscriber). Governance uses these to
    # remove opted-out subscribers' rows before anyone sees them.
    subscriber_endpoints: tuple[tuple[str, str | None], ...] = ()
    # Column naming the subscriber directly, for datasets keyed by subscriber.
    subscriber_column: str | None = None
    _by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {c.name: c for c in self.columns}
        if len(by_name) != len(self.columns):
            raise ValueError(f"dataset {self.name}: duplicate column names")
        if self.time_column not in by_name:
            raise ValueError(f"dataset {self.name}: time column {self.time_column} not declared")
        object.__setattr__(self, "_by_name", by_name)

    @property
    def names_subscribers(self) -> bool:
        """Whether rows can be traced to a subscriber (so consent filtering applies)."""
        return bool(self.subscriber_endpoints or self.subscriber_column)

    @property
    def arrow(self) -> pa.Schema:
        return pa.schema([c.field() for c in self.columns])

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"dataset {self.name} has no column {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)


C, S, N = DataKind.COMMUNICATIONS, DataKind.SUBSCRIBER, DataKind.NEITHER


def _ts(name: str, kind: DataKind, doc: str, nullable: bool = False) -> Column:
    return Column(name, TS, kind, doc, nullable=nullable)


def _str(name: str, kind: DataKind, doc: str, max_len: int, nullable: bool = True) -> Column:
    return Column(name, pa.string(), kind, doc, nullable=nullable, max_len=max_len)


FLOWS = DatasetSchema(
    name="flows",
    time_column="time_start",
    doc="Sampled flow records exported by routers (measure M1). Header fields only.",
    subscriber_endpoints=(("src_addr", "src_port"), ("dst_addr", "dst_port")),
    columns=(
        _ts("time_start", C, "first packet of the flow"),
        _ts("time_end", C, "last packet of the flow"),
        _str("src_addr", C, "source address (text form)", ADDR_LEN, nullable=False),
        _str("dst_addr", C, "destination address (text form)", ADDR_LEN, nullable=False),
        Column("src_port", pa.uint16(), C, "source port (0 where the protocol has none)"),
        Column("dst_port", pa.uint16(), C, "destination port (ICMP: type*256+code)"),
        Column("protocol", pa.uint8(), C, "IP protocol number"),
        Column("tcp_flags", pa.uint8(), C, "OR of TCP flags seen"),
        Column("tos", pa.uint8(), C, "type of service / DSCP byte"),
        Column("packets", pa.uint64(), C, "packets counted by the exporter (sampled, unscaled)"),
        Column("bytes", pa.uint64(), C, "bytes counted by the exporter (sampled, unscaled)"),
        _str("exporter", N, "address of the router that exported the record", ADDR_LEN),
        Column("input_if", pa.uint32(), N, "SNMP index of the input interface"),
        Column("output_if", pa.uint32(), N, "SNMP index of the output interface"),
        Column("sampling_rate", pa.uint32(), N, "1-in-N packet sampling; null = unknown"),
        Column("observation_domain", pa.uint32(), N, "IPFIX observation domain / v9 source id"),
    ),
)

FLOW_DAYS = DatasetSchema(
    name="flow_days",
    time_column="day",
    doc="Per-day aggregates of the flows between an internal host and an outside endpoint "
    "(measure M2): what C&C discovery over windows of days to weeks reads instead of every "
    "record. Header-derived fields only; one row per day, host, endpoint, direction and kind.",
    subscriber_endpoints=(("host", None),),
    columns=(
        _ts("day", C, "UTC day the records started in (midnight)"),
        _str("host", C, "internal address (in the address plan)", ADDR_LEN, nullable=False),
        _str("ext", C, "outside endpoint address", ADDR_LEN, nullable=False),
        Column("eport", pa.uint16(), C, "outside endpoint port"),
        Column("proto", pa.uint8(), C, "IP protocol number (6 or 17)"),
        Column("outbound", pa.bool_(), C, "the internal host sent these records"),
        Column("est", pa.bool_(), C, "exchange, not probe: TCP ACK without RST; UDP"),
        Column("server_side", pa.bool_(), C, "the internal host answered on a service port"),
        Column("records", pa.uint32(), N, "sampled flow records aggregated"),
        Column("packets", pa.uint64(), N, "sampled packets (unscaled)"),
        Column("bytes", pa.uint64(), N, "sampled bytes (unscaled)"),
        Column("est_records", pa.float64(), N, "records scaled up by their sampling rates"),
        Column("rate_min", pa.uint32(), N, "lowest 1-in-N sampling rate; null = unknown"),
        Column("rate_max", pa.uint32(), N, "highest 1-in-N sampling rate; null = unknown"),
        _ts("first_seen", C, "first record's start"),
        _ts("last_seen", C, "last record's end"),
    ),
)

DNS_QUERIES = DatasetSchema(
    name="dns_queries",
    time_column="ts",
    doc="Resolver queries of consenting subscribers (measures M4, M7, M8).",
    subscriber_endpoints=(("client_addr", "client_port"),),
    columns=(
        _ts("ts", C, "time the resolver received the query"),
        _str("client_addr", C, "querying client address", ADDR_LEN, nullable=False),
        Column("client_port", pa.uint16(), C, "querying client port"),
        _str("qname", C, "queried name (FQDN, lower case, no trailing dot)", FQDN_LEN),
        Column("qtype", pa.uint16(), C, "query type number"),
        Column("rcode", pa.uint8(), C, "response code, when known"),
        _str("resolver", N, "address of the resolver that logged the query", ADDR_LEN),
    ),
)

ALLOCATIONS = DatasetSchema(
    name="allocations",
    time_column="start",
    doc="Who held which address (and port block) when: RADIUS, DHCP, CGNAT logs.",
    subscriber_column="subscriber_id",
    columns=(
        _ts("start", S, "allocation start"),
        _ts("end", S, "allocation end; null = still held", nullable=True),
        _str(
            "addr",
            S,
            "allocated address (public, or CGNAT inside address)",
            ADDR_LEN,
            nullable=False,
        ),
        Column("port_start", pa.uint16(), S, "first port of a CGNAT port block; null = all"),
        Column("port_end", pa.uint16(), S, "last port of a CGNAT port block; null = all"),
        # A CGNAT log names the inside address a public port block was given to, not a
        # subscriber: such a row has inside_addr set and subscriber_id null, and its holder is
        # whoever held inside_addr at the time (from RADIUS or DHCP). Every row names exactly one.
        _str(
            "subscriber_id",
            S,
            "subscriber holding the address; null on a CGNAT row that names inside_addr instead",
            ID_LEN,
        ),
        _str("session_id", S, "accounting session / lease identifier", ID_LEN),
        _str("source", N, "radius | kea | cgnat-syslog | cgnat-ipfix | csv", 32),
        _str(
            "inside_addr",
            S,
            "CGNAT inside address the public port block translated to; null otherwise",
            ADDR_LEN,
        ),
    ),
)

SUBSCRIBERS = DatasetSchema(
    name="subscribers",
    time_column="updated",
    doc="Subscriber directory: identifier, contract and contact (for alerts).",
    subscriber_column="subscriber_id",
    columns=(
        _ts("updated", S, "time this version of the entry was recorded"),
        _str("subscriber_id", S, "subscriber identifier", ID_LEN, nullable=False),
        _str("contract", S, "contract kind (home, business …)", 64),
        _str("email", S, "contact e-mail address", 254),
        _str("language", S, "preferred language for alerts (ja, en)", 8),
    ),
)

AUTH_EVENTS = DatasetSchema(
    name="auth_events",
    time_column="ts",
    doc="SMTP AUTH successes and failures, and mail queued after a successful AUTH, from "
    "mail-server logs (measures M11, M12). Only address, time, mail address and AUTH ID are "
    "kept — never a subject, a body or a recipient list.",
    subscriber_endpoints=(("client_addr", None),),
    columns=(
        _ts("ts", C, "time of the AUTH attempt (or of the message queued after it)"),
        _str("client_addr", C, "address the AUTH came from", ADDR_LEN, nullable=False),
        _str("auth_id", C, "SASL user name", 254),
        _str("sender", C, "envelope sender of queued mail", 254),
        Column("success", pa.bool_(), C, "whether the AUTH succeeded"),
        _str("server", N, "mail server that logged it", 253),
        Column(
            "recipients",
            pa.uint32(),
            C,
            "number of recipients of the message queued (Postfix qmgr nrcpt); null: no message "
            "or not known",
        ),
        _str("service", N, "smtp | imap | pop3 | submission | managesieve | auth", 16),
        Column(
            "attempts",
            pa.uint16(),
            N,
            "AUTH attempts the log line stands for (Dovecot counts several per connection)",
        ),
    ),
)

MAIL_QUEUE = DatasetSchema(
    name="mail_queue",
    time_column="ts",
    doc="Mail queue size sampled at the mail server (postqueue -j): the M11 trigger. Counts only.",
    columns=(
        _ts("ts", N, "time of the sample"),
        _str("server", N, "mail server sampled", 253),
        Column("messages", pa.uint32(), N, "messages in the queue", nullable=False),
        Column("recipients", pa.uint32(), N, "recipients still to be delivered"),
        Column("deferred", pa.uint32(), N, "messages in the deferred queue"),
    ),
)

REPUTATION = DatasetSchema(
    name="reputation",
    time_column="loaded",
    doc="C&C servers, malware and phishing sites from feeds and peers.",
    columns=(
        _ts("loaded", N, "time the entry was loaded"),
        _str("indicator_type", N, "ip | ip-port | domain | url", 16, nullable=False),
        _str("ip", N, "address", ADDR_LEN),
        Column("port", pa.uint16(), N, "port, when the entry names one"),
        _str("protocol", N, "tcp | udp, when known", 8),
        _str("domain", N, "domain name", FQDN_LEN),
        _str("url", N, "URL (of a malware site, not of a subscriber's request)", 2048),
        _str("category", N, "c2 | first-stage | malware-site | phishing", 32, nullable=False),
        _str("malware", N, "malware family", 128),
        Column("confidence", pa.float32(), N, "0..1"),
        _ts("first_seen", N, "first seen by the source", nullable=True),
        _ts("last_seen", N, "last seen by the source", nullable=True),
        _ts("expires", N, "when the entry stops being used", nullable=True),
        _str("source", N, "feed or peer it came from", 128, nullable=False),
    ),
)

FINDINGS = DatasetSchema(
    name="findings",
    time_column="detected",
    doc="Detector output: an endpoint is likely C&C, an address+port+time is likely infected …",
    columns=(
        _ts("detected", N, "time the detector produced it"),
        _str("finding_id", N, "stable identifier for de-duplication", ID_LEN, nullable=False),
        _str(
            "kind",
            N,
            "c2 | infected | ddos | reflection | spoofing | smtp-brute-force | smtp-compromised …",
            32,
            nullable=False,
        ),
        _str("method", N, "correlation | learned | reputation | beacon …", 32),
        _str("ip", C, "address the finding is about", ADDR_LEN),
        Column("port", pa.uint16(), C, "port the finding is about"),
        _str("protocol", N, "tcp | udp", 8),
        Column("score", pa.float32(), N, "0..1"),
        _ts("first_seen", C, "first evidence", nullable=True),
        _ts("last_seen", C, "last evidence", nullable=True),
        _str("measure", N, "measure it was produced under (M1..M14)", 4, nullable=False),
        _str("evidence", N, "JSON evidence (aggregates, never subscriber identity)", JSON_LEN),
        # M11 is about a mail account, not an address: its findings name the account to suspend
        _str("auth_id", C, "SMTP AUTH ID a finding is about (M11 compromised accounts)", 254),
    ),
)

MATCHES = DatasetSchema(
    name="matches",
    time_column="ts",
    doc="Records of matched communications kept only until the alert is sent (measure M4).",
    subscriber_endpoints=(("ip", "port"),),
    columns=(
        _ts("ts", C, "time of the matched communication"),
        _str("ip", C, "subscriber-side address", ADDR_LEN, nullable=False),
        Column("port", pa.uint16(), C, "subscriber-side port"),
        _str("indicator", N, "the listed C&C address, port or name it matched", FQDN_LEN),
        _str("finding_id", N, "finding it supports", ID_LEN),
        _str("notification_id", N, "alert it was made for", ID_LEN),
    ),
)

ACTIONS = DatasetSchema(
    name="actions",
    time_column="created",
    doc="Actions (blocks, filters, refusals, suspensions, alerts), one row per step of their life "
    "cycle (mamori.act.base): proposed -> approved -> applied -> ended | expired, or rejected (before it is applied).",
    columns=(
        _ts("created", N, "time the action was proposed (the same in every version)"),
        _str("action_id", N, "identifier", ID_LEN, nullable=False),
        _str(
            "kind",
            N,
            "rpz | nftables | flowspec | rtbh | smtp-auth-refusal | account-suspension | alert",
            32,
            nullable=False,
        ),
        _str("target", N, "what it applies to (zone, prefix, AUTH id, case or alert id)", FQDN_LEN),
        _str("measure", N, "measure (M1..M14)", 4, nullable=False),
        _str(
            "legal_basis",
            N,
            "consent | justified-act | emergency | self-defence",
            32,
            nullable=False,
        ),
        _str("justification", N, "why a basis other than consent holds (risk test)", TEXT_LEN),
        _str(
            "state",
            N,
            "proposed | approved | applied | rejected | ended | expired",
            16,
            nullable=False,
        ),
        _ts("expires", N, "when it ends unless ended sooner (every action ends)", nullable=True),
        _ts("start", N, "when it was applied", nullable=True),
        _ts("end", N, "when it ended, expired or was rejected", nullable=True),
        Column("subscribers_affected", pa.uint32(), N, "number of subscribers it applies to"),
        _str("approved_by", N, "who approved it (an account, or policy:<rule>)", ID_LEN),
        _str("finding_id", N, "finding that led to it", ID_LEN),
    ),
)

NOTIFICATIONS = DatasetSchema(
    name="notifications",
    time_column="created",
    doc="Alerts to subscribers and their delivery state.",
    subscriber_column="subscriber_id",
    columns=(
        _ts("created", N, "time the alert was created"),
        _str("notification_id", N, "identifier", ID_LEN, nullable=False),
        _str("subscriber_id", S, "who it is for", ID_LEN, nullable=False),
        _str("measure", N, "measure (M5, M6, M9 …)", 4, nullable=False),
        _str("legal_basis", N, "consent | justified-act | emergency", 32, nullable=False),
        _str("case_id", N, "abuse-desk case", ID_LEN),
        _str(
            "state",
            N,
            "queued | sent | failed (will be retried) | bounced | suppressed",
            16,
            nullable=False,
        ),
        _ts("sent", N, "time it was delivered", nullable=True),
        # Rows are versions: a delivery attempt appends a new row; the latest `updated` wins.
        _ts("updated", N, "time this version was recorded", nullable=True),
        _str("cause", N, "what it is about: infected:<family> | takedown | vulnerable:<issue>", 64),
        Column("attempts", pa.uint16(), N, "delivery attempts so far"),
        _str("last_error", N, "last SMTP error, for the desk", TEXT_LEN),
        _str("decision", N, "JSON: the legal-basis decision and the inputs it used", JSON_LEN),
    ),
)

CASES = DatasetSchema(
    name="cases",
    time_column="opened",
    doc="Abuse-desk cases (AbuseIO's model): one per subscriber and cause, versioned rows.",
    subscriber_column="subscriber_id",
    columns=(
        _ts("opened", N, "time the case was opened"),
        _ts("updated", N, "time this version was recorded"),
        _str(
            "case_id",
            N,
            "identifier (stable per subscriber, measure and cause)",
            ID_LEN,
            nullable=False,
        ),
        _str("subscriber_id", S, "who it is about", ID_LEN, nullable=False),
        _str("measure", N, "measure (M5, M6, M9)", 4, nullable=False),
        _str("cause", N, "infected:<family> | takedown | vulnerable:<issue>", 64, nullable=False),
        _str("desk_status", N, "open | escalated | resolved | closed", 16, nullable=False),
        _str("subscriber_status", N, "none | notified | resolved | ignored", 16, nullable=False),
        Column("events", pa.uint32(), N, "events attached so far"),
        Column("events_since_notice", pa.uint32(), N, "events since the last alert was sent"),
        Column("notifications", pa.uint16(), N, "alerts made for this case"),
        _ts("last_event", N, "time the last event was attached", nullable=True),
        _ts("last_notified", N, "time the last alert was sent", nullable=True),
        _str("notification_id", N, "latest alert of the case", ID_LEN),
        _str("notification_state", N, "state of the latest alert", 16),
        _str("legal_basis", N, "consent | justified-act | emergency", 32),
    ),
)

CONSENT = DatasetSchema(
    name="consent",
    time_column="changed",
    doc="Every change of a subscriber's consent per measure, with who, when and how.",
    subscriber_column="subscriber_id",
    columns=(
        _ts("changed", S, "when the setting took effect"),
        _str("subscriber_id", S, "subscriber", ID_LEN, nullable=False),
        _str("measure", N, "measure (M1..M14)", 4, nullable=False),
        _str("state", N, "in | out", 3, nullable=False),
        _str(
            "actor",
            N,
            "who made the change (subscriber, desk account, terms)",
            ID_LEN,
            nullable=False,
        ),
        _str("channel", N, "web | cli | api | terms | letter", 16, nullable=False),
        _str("note", N, "free text", TEXT_LEN),
    ),
)

AUDIT = DatasetSchema(
    name="audit",
    time_column="ts",
    doc="Append-only, hash-chained record of every access, refusal and action.",
    columns=(
        Column("seq", pa.uint64(), N, "position in the chain, from 1", nullable=False),
        _ts("ts", N, "time of the event"),
        _str("actor", N, "who asked", ID_LEN, nullable=False),
        _str(
            "event",
            N,
            "access | refused | write | purge | consent | action | …",
            32,
            nullable=False,
        ),
        _str("measure", N, "measure named (M1..M14), if any", 4),
        _str("legal_basis", N, "legal basis relied on", 32),
        _str("dataset", N, "dataset touched", 32),
        _str("columns", N, "columns read or written, comma separated", TEXT_LEN),
        _str("case_id", N, "case it was done for", ID_LEN),
        _str("detail", N, "JSON detail (counts, reasons) — never communications data", JSON_LEN),
        _str("prev_hash", N, "hash of the previous entry", 64, nullable=False),
        _str("hash", N, "SHA-256 of this entry and prev_hash", 64, nullable=False),
    ),
)

DATASETS: Mapping[str, DatasetSchema] = {
    d.name: d
    for d in (
        FLOWS,
        FLOW_DAYS,
        DNS_QUERIES,
        ALLOCATIONS,
        SUBSCRIBERS,
        AUTH_EVENTS,
        MAIL_QUEUE,
        REPUTATION,
        FINDINGS,
        MATCHES,
        ACTIONS,
        NOTIFICATIONS,
        CASES,
        CONSENT,
        AUDIT,
    )
}


def dataset(name: str) -> DatasetSchema:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
