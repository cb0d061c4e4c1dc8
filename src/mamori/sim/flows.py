"""The flow table: one row per unidirectional flow, as the routers would see it before sampling."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

#: ground-truth label of every generated flow
LABELS: dict[str, int] = {
    "benign": 0,
    "benign-periodic": 1,
    "iot-scan": 2,
    "iot-cc": 3,
    "iot-loader": 4,
    "pc-infection": 5,
    "pc-cc": 6,
    "stealth-cc": 7,
    "ddos": 8,
    "spoofed": 9,
    "reflection-trigger": 10,
    "reflection-response": 11,
    "smtp-bruteforce": 12,
    "smtp-abuse": 13,
}
LABEL_NAMES = {v: k for k, v in LABELS.items()}


@dataclass
class FlowTable:
    start: npt.NDArray[np.float64]
    end: npt.NDArray[np.float64]
    src: npt.NDArray[np.uint32]
    dst: npt.NDArray[np.uint32]
    sport: npt.NDArray[np.uint16]
    dport: npt.NDArray[np.uint16]
    proto: npt.NDArray[np.uint8]
    flags: npt.NDArray[np.uint8]
    tos: npt.NDArray[np.uint8]
    pkts: npt.NDArray[np.int64]
    octets: npt.NDArray[np.int64]
    label: npt.NDArray[np.int16]
    #: subscriber on the ISP side (-1: none, e.g. traffic to the ISP's own servers from outside)
    sub: npt.NDArray[np.int32]
    #: 0: between a subscriber/ISP and the Internet (border routers), 1: to ISP servers (dc)
    path: npt.NDArray[np.int8]
    #: 0: leaving the ISP (subscriber → outside), 1: entering
    inbound: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.start.size)

    def take(self, idx: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> FlowTable:
        return FlowTable(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list[FlowTable]) -> FlowTable:
        return FlowTable(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(FlowTable)
            }
        )

    @staticmethod
    def empty() -> FlowTable:
        return FlowTable.make(
            np.zeros(0),
            np.zeros(0),
            np.zeros(0, np.uint32),
            np.zeros(0, np.uint32),
            np.zeros(0),
            np.zeros(0),
            6,
            0,
            0,
            0,
            "benign",
            -1,
            0,
            0,
        )

    @staticmethod
    def make(
        start: npt.ArrayLike,
        duration: npt.ArrayLike,
        src: npt.ArrayLike,
        dst: npt.ArrayLike,
        sport: npt.ArrayLike,
        dport: npt.ArrayLike,
        proto: npt.ArrayLike,
        flags: npt.ArrayLike,
        pkts: npt.ArrayLike,
        octets: npt.ArrayLike,
        label: str,
        sub: npt.ArrayLike,
        path: npt.ArrayLike,
        inbound: npt.ArrayLike,
        tos: npt.ArrayLike = 0,
    ) -> FlowTable:
        s = np.asarray(start, np.float64)
        n = s.size

        def b(x: npt.ArrayLike, dt: type[np.generic]) -> npt.NDArray[np.generic]:
            return np.broadcast_to(np.asarray(x).astype(dt), (n,)).copy()

        # round to milliseconds: what the wire can carry
        s = np.round(s, 3)
        p = b(pkts, np.int64)
        return FlowTable(
            start=s,
            end=np.round(s + np.asarray(b(duration, np.float64)), 3),
            src=b(src, np.uint32),  # type: ignore[arg-type]
            dst=b(dst, np.uint32),  # type: ignore[arg-type]
            sport=b(sport, np.uint16),  # type: ignore[arg-type]
            dport=b(dport, np.uint16),  # type: ignore[arg-type]
            proto=b(proto, np.uint8),  # type: ignore[arg-type]
            flags=b(flags, np.uint8),  # type: ignore[arg-type]
            tos=b(tos, np.uint8),  # type: ignore[arg-type]
            pkts=np.maximum(p, 1),
            octets=np.maximum(b(octets, np.int64), np.maximum(p, 1) * 40),
            label=np.full(n, LABELS[label], np.int16),
            sub=b(sub, np.int32),  # type: ignore[arg-type]
            path=b(path, np.int8),  # type: ignore[arg-type]
            inbound=b(inbound, np.int8),  # type: ignore[arg-type]
        )
