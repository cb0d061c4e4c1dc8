"""IANA IPFIX information element ids (RFC 7012 registry) that Mamori reads.

NetFlow v9 field type numbers 1-127 coincide with the IPFIX ids below (RFC 3954 section 8), so one
table serves both. Everything not listed here is skipped by length, never interpreted.

NetFlow v9 *options scope* types (System, Interface, ...) live in a separate number space; they are
listed at the end and only used to skip scope fields in v9 options records.
"""

from __future__ import annotations

from typing import Final

# Counters
OCTET_DELTA_COUNT: Final = 1  # v9 IN_BYTES
PACKET_DELTA_COUNT: Final = 2  # v9 IN_PKTS
OUT_BYTES: Final = 23
OUT_PKTS: Final = 24
OCTET_TOTAL_COUNT: Final = 85
PACKET_TOTAL_COUNT: Final = 86

# Header fields
PROTOCOL_IDENTIFIER: Final = 4
IP_CLASS_OF_SERVICE: Final = 5  # SRC_TOS
TCP_CONTROL_BITS: Final = 6
SOURCE_TRANSPORT_PORT: Final = 7
SOURCE_IPV4_ADDRESS: Final = 8
INGRESS_INTERFACE: Final = 10
DESTINATION_TRANSPORT_PORT: Final = 11
DESTINATION_IPV4_ADDRESS: Final = 12
EGRESS_INTERFACE: Final = 14
SOURCE_IPV6_ADDRESS: Final = 27
DESTINATION_IPV6_ADDRESS: Final = 28
ICMP_TYPE_CODE_IPV4: Final = 32
ICMP_TYPE_CODE_IPV6: Final = 139
UDP_SOURCE_PORT: Final = 180
UDP_DESTINATION_PORT: Final = 181
TCP_SOURCE_PORT: Final = 182
TCP_DESTINATION_PORT: Final = 183

# Time
FLOW_END_SYS_UP_TIME: Final = 21  # v9 LAST_SWITCHED
FLOW_START_SYS_UP_TIME: Final = 22  # v9 FIRST_SWITCHED
FLOW_START_SECONDS: Final = 150
FLOW_END_SECONDS: Final = 151
FLOW_START_MILLISECONDS: Final = 152
FLOW_END_MILLISECONDS: Final = 153
FLOW_START_MICROSECONDS: Final = 154
FLOW_END_MICROSECONDS: Final = 155
FLOW_START_NANOSECONDS: Final = 156
FLOW_END_NANOSECONDS: Final = 157
FLOW_START_DELTA_MICROSECONDS: Final = 158
FLOW_END_DELTA_MICROSECONDS: Final = 159
SYSTEM_INIT_TIME_MILLISECONDS: Final = 160

# Sampling
SAMPLING_INTERVAL: Final = 34
SAMPLING_ALGORITHM: Final = 35
SAMPLER_ID: Final = 48  # v9 FLOW_SAMPLER_ID
SAMPLER_MODE: Final = 49
SAMPLER_RANDOM_INTERVAL: Final = 50
SELECTOR_ID: Final = 302
SAMPLING_PACKET_INTERVAL: Final = 305
SAMPLING_PACKET_SPACE: Final = 306
SAMPLING_SIZE: Final = 309
SAMPLING_POPULATION: Final = 310

# Seconds between the NTP epoch (1900) and the Unix epoch (1970), for dateTimeMicro/Nanoseconds.
NTP_UNIX_OFFSET_S: Final = 2_208_988_800

# Length that marks an IPFIX variable-length field (RFC 7011 section 7).
VARIABLE_LENGTH: Final = 0xFFFF

# NAT events (RFC 8158; ids and natEvent values from the IANA IPFIX registry). A template with
# natEvent describes NAT log records, not flows: see mamori.ingest.netflow.batch.
POST_NAT_SOURCE_IPV4_ADDRESS: Final = 225  # the public (outside) address
POST_NAT_SOURCE_IPV6_ADDRESS: Final = 281
NAT_EVENT: Final = 230
NAT_POOL_ID: Final = 283
OBSERVATION_TIME_SECONDS: Final = 322
OBSERVATION_TIME_MILLISECONDS: Final = 323
PORT_RANGE_START: Final = 361
PORT_RANGE_END: Final = 362
PORT_RANGE_STEP_SIZE: Final = 363
PORT_RANGE_NUM_PORTS: Final = 364
NAT_INSTANCE_ID: Final = 463

# natEvent values (IANA "NAT Event Type" registry, RFC 8158 section 4.3).
NAT_EVENT_NAMES: Final = {
    1: "NAT translation create (historic)",
    2: "NAT translation delete (historic)",
    3: "NAT addresses exhausted",
    4: "NAT44 session create",
    5: "NAT44 session delete",
    6: "NAT64 session create",
    7: "NAT64 session delete",
    8: "NAT44 BIB create",
    9: "NAT44 BIB delete",
    10: "NAT64 BIB create",
    11: "NAT64 BIB delete",
    12: "NAT ports exhausted",
    13: "Quota exceeded",
    14: "Address binding create",
    15: "Address binding delete",
    16: "Port block allocation",
    17: "Port block de-allocation",
    18: "Threshold reached",
}
NAT_PORT_BLOCK_ALLOCATION: Final = 16
NAT_PORT_BLOCK_DEALLOCATION: Final = 17
NAT_SESSION_EVENTS: Final = frozenset({1, 2, 4, 5, 6, 7})

# NetFlow v9 options scope types (RFC 3954 section 6.1): a separate number space.
V9_SCOPE_SYSTEM: Final = 1
V9_SCOPE_INTERFACE: Final = 2
V9_SCOPE_LINE_CARD: Final = 3
V9_SCOPE_CACHE: Final = 4
V9_SCOPE_TEMPLATE: Final = 5

# Fields whose value is an unsigned integer that we may read from a data record, and so must be
# 1..8 bytes long (reduced-size encoding, RFC 7011 section 6.2, allows any shorter length).
UNSIGNED_FIELDS: Final = frozenset(
    {
        OCTET_DELTA_COUNT,
        PACKET_DELTA_COUNT,
        OUT_BYTES,
        OUT_PKTS,
        OCTET_TOTAL_COUNT,
        PACKET_TOTAL_COUNT,
        PROTOCOL_IDENTIFIER,
        IP_CLASS_OF_SERVICE,
        TCP_CONTROL_BITS,
        SOURCE_TRANSPORT_PORT,
        DESTINATION_TRANSPORT_PORT,
        INGRESS_INTERFACE,
        EGRESS_INTERFACE,
        ICMP_TYPE_CODE_IPV4,
        ICMP_TYPE_CODE_IPV6,
        UDP_SOURCE_PORT,
        UDP_DESTINATION_PORT,
        TCP_SOURCE_PORT,
        TCP_DESTINATION_PORT,
        FLOW_END_SYS_UP_TIME,
        FLOW_START_SYS_UP_TIME,
        FLOW_START_SECONDS,
        FLOW_END_SECONDS,
        FLOW_START_MILLISECONDS,
        FLOW_END_MILLISECONDS,
        FLOW_START_MICROSECONDS,
        FLOW_END_MICROSECONDS,
        FLOW_START_NANOSECONDS,
        FLOW_END_NANOSECONDS,
        FLOW_START_DELTA_MICROSECONDS,
        FLOW_END_DELTA_MICROSECONDS,
        SYSTEM_INIT_TIME_MILLISECONDS,
        SAMPLING_INTERVAL,
        SAMPLING_ALGORITHM,
        SAMPLER_ID,
        SAMPLER_MODE,
        SAMPLER_RANDOM_INTERVAL,
        SELECTOR_ID,
        SAMPLING_PACKET_INTERVAL,
        SAMPLING_PACKET_SPACE,
        SAMPLING_SIZE,
        SAMPLING_POPULATION,
        NAT_EVENT,
        NAT_POOL_ID,
        OBSERVATION_TIME_SECONDS,
        OBSERVATION_TIME_MILLISECONDS,
        PORT_RANGE_START,
        PORT_RANGE_END,
        PORT_RANGE_STEP_SIZE,
        PORT_RANGE_NUM_PORTS,
        NAT_INSTANCE_ID,
    }
)

# Address fields and the only length each may have.
ADDRESS_FIELDS: Final = {
    SOURCE_IPV4_ADDRESS: 4,
    DESTINATION_IPV4_ADDRESS: 4,
    SOURCE_IPV6_ADDRESS: 16,
    DESTINATION_IPV6_ADDRESS: 16,
    POST_NAT_SOURCE_IPV4_ADDRESS: 4,
    POST_NAT_SOURCE_IPV6_ADDRESS: 16,
}

# Fields worth reading from options data records (sampling and system-init time).
OPTION_FIELDS: Final = frozenset(
    {
        SAMPLING_INTERVAL,
        SAMPLER_ID,
        SAMPLER_RANDOM_INTERVAL,
        SELECTOR_ID,
        SAMPLING_PACKET_INTERVAL,
        SAMPLING_PACKET_SPACE,
        SAMPLING_SIZE,
        SAMPLING_POPULATION,
        SYSTEM_INIT_TIME_MILLISECONDS,
    }
)

INTERESTING_FIELDS: Final = UNSIGNED_FIELDS | frozenset(ADDRESS_FIELDS)
