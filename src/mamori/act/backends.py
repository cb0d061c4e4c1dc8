"""The back end of each action kind, for the callers that act on any kind (the console's
decisions, the expiry sweep). Issues adding a back end (nftables, FlowSpec, RTBH, Postfix/Dovecot
maps, account suspension) register it here; a kind without one (alerts: sending is the step) is
recorded only."""

from __future__ import annotations

from mamori.act.base import ActionKind, Backend
from mamori.act.bgp import BgpBackend
from mamori.act.nft import NftBackend
from mamori.act.rpz import RpzBackend
from mamori.config import MamoriConfig

__all__ = ["default_backends"]


def default_backends(config: MamoriConfig) -> dict[ActionKind, Backend[object]]:
    return {
        ActionKind.RPZ: RpzBackend(config),
        ActionKind.NFTABLES: NftBackend(config),
        # ExaBGP through its relay, or the dry run when [network.bgp] api_socket is unset
        ActionKind.FLOWSPEC: BgpBackend(config, ActionKind.FLOWSPEC),
        ActionKind.RTBH: BgpBackend(config, ActionKind.RTBH),
    }
