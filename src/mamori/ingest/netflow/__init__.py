"""NetFlow v5 / v9 and IPFIX decoders (measure M1: flow headers only, never payload)."""

from mamori.ingest.netflow.decoder import Datagram, DecodeResult, FlowDecoder
from mamori.ingest.netflow.decoder import PackedDatagrams as PackedDatagrams

__all__ = ["Datagram", "DecodeResult", "FlowDecoder"]
