"""Mail-server log lines to AUTH events: Postfix, Dovecot and Exim, vectorised with Arrow's
regular-expression kernels (RE2) over whole blocks of lines.

Each format is read in two passes: a substring test finds the few lines that can matter (an AUTH
failure, a message queued after AUTH, a login), then one pattern per kind of line extracts the
fields from those only. What is kept is what M11 and M12 may use — address, time, AUTH ID, the
envelope sender and counts. Subjects, bodies and recipient lists are never read: the patterns do
not capture them.

Postfix (``smtpd`` with SASL, fail2ban's ``postfix[mode=auth]`` lines)::

    … postfix/submission/smtpd[1234]: warning: unknown[192.0.2.7]: SASL LOGIN authentication
      failed: UGFzc3dvcmQ6[, sasl_username=alice@example.jp]
    … postfix/submission/smtpd[1234]: 4XyZ1234: client=unknown[192.0.2.8], sasl_method=PLAIN,
      sasl_username=bob@example.jp
    … postfix/qmgr[99]: 4XyZ1234: from=<bob@example.jp>, size=912, nrcpt=3 (queue active)

A success is logged only once a message is queued; it is joined with its ``qmgr`` line by queue
id, which gives the sender and the number of recipients (not who they are). Failures that say
the authentication server was lost or the mechanism was invalid are not password guesses
(fail2ban's ``auth`` mode skips them too): they are counted as ``skipped``.

Dovecot: the login processes' lines (``imap-login: Login: user=<…>, …, rip=…`` and
``… (auth failed, N attempts …): user=<…>, …, rip=…``, plaintext-auth refusals, proxy
failures) and the auth process's per-user failures (``passwd-file(user,ip): unknown user``,
``… Password mismatch``, ``pam_authenticate() failed``, ``pam_unix(dovecot:auth): …
rhost=``). With ``auth_verbose = yes`` the auth process logs SMTP AUTH failures that Postfix logs
too; those rows carry the service ``auth`` so a detector can leave them out.

Exim: ``… authenticator failed for … [ip]: 535 … (set_id=user)`` and received lines of
authenticated submissions, ``<= sender … [ip] … A=plain:user …``.

Lines with the marker of a kind but not its shape, or without a usable time stamp, are counted
as malformed with their line numbers; the lines around them are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mamori.ingest.mail.lines import head_times

__all__ = ["EVENTS", "FORMATS", "Extracted", "MailFormat", "MailParser", "ParseCounts"]

MailFormat = Literal["postfix", "dovecot", "exim"]
FORMATS: tuple[MailFormat, ...] = ("postfix", "dovecot", "exim")
EXAMPLES = 10

EVENTS = pa.schema(
    [
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("client_addr", pa.string()),
        ("auth_id", pa.string()),
        ("sender", pa.string()),
        ("success", pa.bool_()),
        ("recipients", pa.uint32()),
        ("service", pa.string()),
        ("attempts", pa.uint16()),
        ("line", pa.int64()),
    ]
)

_IP = r"(?P<ip>[0-9A-Fa-f.:]{2,45})"
_HOST_IP = r"[^\[\s]*\[" + _IP + r"\](?::\d+)?"

# One pass over every line finds the candidates (RE2 matches an alternation at the speed of one
# literal); the kinds are then told apart, and their fields extracted, on the candidates only.
_CANDIDATES: dict[str, str] = {
    "postfix": r"authentication failed:|sasl_method=|nrcpt=",
    "dovecot": r"-login: |unknown user|assword mismatch|pam_authenticate|invalid credentials"
    r"|pam_unix\(dovecot:auth\)",
    "exim": r"authenticator failed for| <= ",
}

_PF_FAIL = _HOST_IP + r": SASL [\w-]+ authentication failed:"
_PF_USER = r", sasl_username=(?P<user>[^\s,]+)"
_PF_NOT_GUESS = r"authentication failed: *(?:Connection lost to authentication server|Invalid authentication mechanism)"
_PF_CLIENT = (
    r"(?P<qid>[0-9A-Za-z]+): client=" + _HOST_IP + r", sasl_method=[^,\s]+, "
    r"sasl_username=(?P<user>[^\s,]+)"
)
_PF_QMGR = (
    r"qmgr\[\d+\]: (?P<qid>[0-9A-Za-z]+): from=<(?P<from>[^>\s]*)>, size=\d+, nrcpt=(?P<n>\d+)"
)

_DC_LOGIN = (
    r"(?P<svc>[a-z0-9]+)-login: (?:Info: )?(?P<head>.*?): (?:user=<(?P<user>[^>]*)>, )?"
    r"(?:method=[^,]*, )?rip=" + _IP
)
_DC_AUTH_MARK = (
    r"\): (?:unknown user|[Pp]assword mismatch|pam_authenticate\(\) failed|invalid credentials)"
)
_DC_AUTH = (
    r"\b[a-z][a-z0-9-]*\((?P<user>[^,()]*),"
    + _IP
    + r"(?:,[^)]*)?\): (?:unknown user|[Pp]assword mismatch|pam_authenticate\(\) failed"
    r"|invalid credentials)(?:.*?: (?P<times>\d+) Time\(s\))?"
)
_DC_PAM_MARK = "pam_unix(dovecot:auth): authentication failure"
_DC_PAM = (
    r"pam_unix\(dovecot:auth\): authentication failure;.*?\srhost="
    + _IP
    + r"(?:\s+user=(?P<user>\S+))?"
)

_EX_FAIL_MARK = "authenticator failed for"
_EX_FAIL = (
    r"[\w-]+ authenticator failed for (?:[^\[( ]* )?(?:\(\S*\) )?\[" + _IP + r"\](?::\d+)?"
    r"(?: I=\[[^\]]*\](?::\d+)?)?: 535\b.*?(?:\(set_id=(?P<user>[^)]*)\))?\s*$"
)
_EX_RECV = r" <= (?P<from>\S+) .*?\[" + _IP + r"\](?::\d+)? .*?\bA=[^:\s]+:(?P<user>[^\s]+)"


@dataclass
class ParseCounts:
    """What the lines held. ``malformed`` lines had a kind's marker but not its shape (or no usable
    time stamp); ``skipped`` are AUTH lines that are not credential failures; ``other`` the rest."""

    lines: int = 0
    failures: int = 0
    successes: int = 0
    messages: int = 0
    skipped: int = 0
    malformed: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def other(self) -> int:
        return self.lines - self.failures - self.successes - self.skipped - self.malformed

    def merge(self, other: ParseCounts) -> None:
        for name in ("lines", "failures", "successes", "messages", "skipped", "malformed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind, examples in other.examples.items():
            kept = self.examples.setdefault(kind, [])
            kept.extend(examples[: max(0, EXAMPLES - len(kept))])

    def note(self, kind: str, line_numbers: np.ndarray, why: str) -> None:
        if not line_numbers.size:
            return
        if kind == "malformed":
            self.malformed += int(line_numbers.size)
        kept = self.examples.setdefault(kind, [])
        for n in line_numbers[: max(0, EXAMPLES - len(kept))].tolist():
            kept.append(f"line {n}: {why}")


def _pick(arr: pa.Array, mask: np.ndarray | pa.Array) -> pa.Array:
    """The rows where ``mask`` holds (``take`` by index: several times cheaper than ``filter``
    with a mask on a large array)."""
    m = mask if isinstance(mask, np.ndarray) else _mask(mask)
    return pc.take(arr, pa.array(np.flatnonzero(m)))


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _str(parts: pa.StructArray, name: str, empty_is_null: bool = True) -> pa.Array:
    v = pc.struct_field(parts, name)
    return pc.if_else(pc.equal(v, ""), None, v) if empty_is_null else v


@dataclass
class _Kind:
    """Lines of one kind: the extracted groups, line numbers, times (ms, UTC) and the text."""

    parts: pa.StructArray
    numbers: np.ndarray
    ms: np.ndarray
    text: pa.Array


@dataclass
class Extracted:
    """What one block's lines hold, before the parser's state is applied: complete events,
    Postfix ``client=`` and ``qmgr`` rows still to be joined, the latest time seen, and the
    block's counts. Blocks can be extracted in parallel; :meth:`MailParser.combine` takes them in
    order."""

    events: pa.Table
    clients: pa.Table
    qmgr: pa.Table
    latest_ms: int
    counts: ParseCounts


class MailParser:
    """Turns blocks of lines of one format into AUTH events (:data:`EVENTS`), keeping what must
    wait for a later block: Postfix successes whose ``qmgr`` line has not been seen yet.

    :meth:`feed` is :meth:`extract` (no state: safe to run on several blocks at once, and Arrow's
    kernels release the GIL) followed by :meth:`combine` (in order)."""

    def __init__(
        self,
        fmt: MailFormat,
        *,
        tz: str = "UTC",
        reference: datetime | None = None,
        hold_s: float = 30.0,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown mail log format {fmt!r}; known: {', '.join(FORMATS)}")
        self.fmt: MailFormat = fmt
        self.tz = tz
        self.reference = reference
        self.hold_ms = int(hold_s * 1000)
        self.counts = ParseCounts()
        self._pending = _CLIENTS.empty_table()
        self._clock = 0  # the latest time (ms) any line parsed so far carried

    def feed(
        self,
        lines: pa.Array,
        first_line: int = 1,
        *,
        final: bool = False,
        now: datetime | None = None,
    ) -> pa.Table:
        """Events of ``lines`` (numbered from ``first_line``); with ``final``, also whatever was
        held back waiting for a later line. Held-back lines wait ``hold_s`` by the log's clock,
        or by ``now`` when it is later (a quiet live log)."""
        return self.combine(self.extract(lines, first_line), final=final, now=now)

    # ------------------------------------------------------------------ extract (no state)

    def extract(self, lines: pa.Array, first_line: int = 1) -> Extracted:
        c = ParseCounts(lines=len(lines))
        # which marker each line holds (the leftmost), in the same pass that finds candidates
        found = pc.extract_regex(lines, "(?P<k>" + _CANDIDATES[self.fmt] + ")")
        sel = _mask(pc.is_valid(found))
        cand = _Lines(
            pc.utf8_rtrim_whitespace(_pick(lines, sel)),
            np.flatnonzero(sel).astype(np.int64) + first_line,
            pc.struct_field(_pick(found, sel), "k"),
        )
        if self.fmt == "postfix":
            return self._postfix(cand, c)
        events = self._dovecot(cand, c) if self.fmt == "dovecot" else self._exim(cand, c)
        ts = events.column("ts").cast(pa.int64())
        latest = int(pc.max(ts).as_py() or 0) if events.num_rows else 0
        return Extracted(events, _CLIENTS.empty_table(), _QMGR.empty_table(), latest, c)

    def _kind(
        self, c: ParseCounts, cand: _Lines, sel: np.ndarray, pattern: str, what: str
    ) -> _Kind:
        """The selected candidate lines that have the shape ``pattern`` and a time stamp; the
        others are counted as malformed."""
        text = _pick(cand.text, sel)
        nums = cand.numbers[sel]
        parts = pc.extract_regex(text, pattern)
        ok = _mask(pc.is_valid(parts))
        c.note("malformed", nums[~ok], f"not a {what} line")
        ms, timed = head_times(
            _pick(text, ok),
            tz=self.tz,
            reference=self.reference or datetime.now(UTC),
        )
        c.note("malformed", nums[ok][~timed], "no time stamp that can be read")
        keep = ok.copy()
        keep[ok] = timed
        return _Kind(_pick(parts, keep), nums[keep], ms[timed], _pick(text, keep))

    def _postfix(self, cand: _Lines, c: ParseCounts) -> Extracted:
        fail = self._kind(c, cand, cand.marked("authentication failed:"), _PF_FAIL,
                          "Postfix SASL failure")  # fmt: skip
        # the server lost its authentication service, or the client named no mechanism it
        # offers: not a password guess (fail2ban's auth mode skips them too)
        guess = ~_mask(pc.match_substring_regex(fail.text, _PF_NOT_GUESS))
        c.note("skipped", fail.numbers[~guess], "not a password guess")
        c.skipped += int((~guess).sum())
        c.failures += int(guess.sum())
        # Postfix 3.x names the user a failure was for
        user = pc.struct_field(pc.extract_regex(fail.text, _PF_USER), "user")
        failures = _events(
            fail.ms[guess],
            _pick(_str(fail.parts, "ip"), guess),
            _pick(user, guess),
            success=False,
            service="smtp",
            numbers=fail.numbers[guess],
        )
        client = self._kind(c, cand, cand.marked("sasl_method="), _PF_CLIENT, "Postfix client=")
        qmgr = self._kind(c, cand, cand.marked("nrcpt="), _PF_QMGR, "Postfix qmgr")
        clients = pa.table(
            {
                "qid": _str(client.parts, "qid"),
                "ts": pa.array(client.ms, pa.int64()),
                "client_addr": _str(client.parts, "ip"),
                "auth_id": _str(client.parts, "user"),
                "line": pa.array(client.numbers, pa.int64()),
            },
            schema=_CLIENTS,
        )
        q = pa.table(
            {
                "qid": _str(qmgr.parts, "qid"),
                "sender": _str(qmgr.parts, "from"),
                "n": pc.cast(_str(qmgr.parts, "n"), pa.uint32()),
            },
            schema=_QMGR,
        )
        latest = max((int(np.max(x)) for x in (fail.ms, client.ms, qmgr.ms) if len(x)), default=0)
        return Extracted(failures, clients, q, latest, c)

    def _dovecot(self, cand: _Lines, c: ParseCounts) -> pa.Table:
        tables = []
        # "-login:" lines without a remote address (start-up, fatal errors) are not AUTH lines
        is_login = cand.marked("-login: ") & cand.has("rip=")
        login = self._kind(c, cand, is_login, _DC_LOGIN, "Dovecot login")
        head = pc.struct_field(login.parts, "head")
        ok = _mask(pc.equal(head, "Login"))
        # proxy dest auth failed, tried to use disabled plaintext auth: failures too; "no auth
        # attempts" and TLS errors are neither
        failed = _mask(pc.match_substring_regex(head, r"auth failed|plaintext auth"))
        n = pc.struct_field(pc.extract_regex(head, r"auth failed, (?P<n>\d+) attempts"), "n")
        attempts = pc.fill_null(pc.cast(pc.if_else(pc.equal(n, ""), None, n), pa.uint16()), 1)
        svc = pc.struct_field(login.parts, "svc")
        for mask, success in ((ok, True), (failed, False)):
            tables.append(
                _events(
                    login.ms[mask],
                    _pick(_str(login.parts, "ip"), mask),
                    _pick(_str(login.parts, "user"), mask),
                    success=success,
                    service=_pick(svc, mask),
                    numbers=login.numbers[mask],
                    attempts=None if success else _pick(attempts, mask),
                )
            )
        c.successes += int(ok.sum())
        c.failures += int(failed.sum())
        is_auth = ~cand.marked("-login: ") & cand.matches(_DC_AUTH_MARK)
        auth = self._kind(c, cand, is_auth, _DC_AUTH, "Dovecot auth")
        times = _str(auth.parts, "times")
        tables.append(
            _events(
                auth.ms,
                _str(auth.parts, "ip"),
                _str(auth.parts, "user"),
                success=False,
                service="auth",
                numbers=auth.numbers,
                attempts=pc.fill_null(pc.cast(times, pa.uint16()), 1),
            )
        )
        is_pam = ~cand.marked("-login: ") & cand.has(_DC_PAM_MARK)
        pam = self._kind(c, cand, is_pam, _DC_PAM, "Dovecot pam_unix")
        tables.append(
            _events(
                pam.ms,
                _str(pam.parts, "ip"),
                _str(pam.parts, "user"),
                success=False,
                service="auth",
                numbers=pam.numbers,
            )
        )
        c.failures += len(auth.parts) + len(pam.parts)
        return pa.concat_tables(tables)

    def _exim(self, cand: _Lines, c: ParseCounts) -> pa.Table:
        fail = self._kind(c, cand, cand.marked(_EX_FAIL_MARK), _EX_FAIL, "Exim authenticator")
        c.failures += len(fail.parts)
        failures = _events(
            fail.ms, _str(fail.parts, "ip"), _str(fail.parts, "user"), success=False,
            service="smtp", numbers=fail.numbers,
        )  # fmt: skip
        # received lines of mail that was not submitted with AUTH have no A=: not ours
        is_recv = cand.marked(" <= ") & cand.has(" A=")
        recv = self._kind(c, cand, is_recv, _EX_RECV, "Exim <=")
        c.successes += len(recv.parts)
        c.messages += len(recv.parts)
        received = _events(
            recv.ms, _str(recv.parts, "ip"), _str(recv.parts, "user"), success=True,
            service="smtp", numbers=recv.numbers, sender=_str(recv.parts, "from"),
        )  # fmt: skip
        return pa.concat_tables([failures, received])

    # ------------------------------------------------------------------ combine (in order)

    def combine(
        self, x: Extracted, *, final: bool = False, now: datetime | None = None
    ) -> pa.Table:
        """The events of an extracted block, with the Postfix successes that its ``qmgr`` lines
        complete (or that waited long enough); blocks must come in order."""
        self.counts.merge(x.counts)
        self._clock = max(self._clock, x.latest_ms)
        if now is not None:
            self._clock = max(self._clock, int(now.timestamp() * 1000))
        out = [x.events]
        if self.fmt == "postfix":
            out.append(self._join(x, final))
        return pa.concat_tables(out).sort_by([("ts", "ascending"), ("line", "ascending")])

    def _join(self, x: Extracted, final: bool) -> pa.Table:
        pending = pa.concat_tables([self._pending, x.clients])
        q = x.qmgr
        if q.num_rows:  # a queue id's first qmgr line is the one that counts its recipients
            q = q.filter(pa.array(_first_of(q.column("qid"))))
        joined = pending.join(q, "qid", join_type="left outer")
        matched = _mask(pc.is_valid(joined.column("n")))
        ts = np.asarray(joined.column("ts").to_numpy(), np.int64)
        ripe = matched | final | (ts < self._clock - self.hold_ms)
        done = joined.filter(pa.array(ripe))
        self._pending = joined.filter(pa.array(~ripe)).select(_CLIENTS.names)
        self.counts.successes += done.num_rows
        self.counts.messages += done.num_rows
        return _events(
            np.asarray(done.column("ts").to_numpy(), np.int64),
            done.column("client_addr"),
            done.column("auth_id"),
            success=True,
            service="smtp",
            numbers=np.asarray(done.column("line").to_numpy(), np.int64),
            sender=done.column("sender"),
            recipients=done.column("n"),
        )


@dataclass
class _Lines:
    """Candidate lines (line ends trimmed), their numbers in the file and the marker each holds."""

    text: pa.Array
    numbers: np.ndarray
    marker: pa.Array

    def marked(self, marker: str) -> np.ndarray:
        return _mask(pc.equal(self.marker, marker))

    def has(self, needle: str) -> np.ndarray:
        return _mask(pc.match_substring(self.text, needle))

    def matches(self, pattern: str) -> np.ndarray:
        return _mask(pc.match_substring_regex(self.text, pattern))


_CLIENTS = pa.schema(
    [
        ("qid", pa.string()),
        ("ts", pa.int64()),
        ("client_addr", pa.string()),
        ("auth_id", pa.string()),
        ("line", pa.int64()),
    ]
)
_QMGR = pa.schema([("qid", pa.string()), ("sender", pa.string()), ("n", pa.uint32())])


def _first_of(keys: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Mask of each key's first occurrence."""
    codes = pc.dictionary_encode(keys).indices if isinstance(keys, pa.Array) else None
    if codes is None:
        codes = pc.dictionary_encode(keys.combine_chunks()).indices
    c = np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)
    _, first = np.unique(c, return_index=True)
    out = np.zeros(c.size, dtype=bool)
    out[first] = True
    return out


def _events(
    ms: np.ndarray,
    ip: pa.Array | pa.ChunkedArray,
    user: pa.Array | pa.ChunkedArray,
    *,
    success: bool,
    service: str | pa.Array,
    numbers: np.ndarray,
    sender: pa.Array | pa.ChunkedArray | None = None,
    recipients: pa.Array | pa.ChunkedArray | None = None,
    attempts: pa.Array | pa.ChunkedArray | None = None,
) -> pa.Table:
    n = len(ms)
    svc = pa.array([service] * n, pa.string()) if isinstance(service, str) else service
    return pa.table(
        {
            "ts": pa.array(np.asarray(ms, np.int64), pa.int64()).cast(EVENTS.field("ts").type),
            "client_addr": ip,
            "auth_id": user,
            "sender": sender if sender is not None else pa.nulls(n, pa.string()),
            "success": pa.array(np.full(n, success)),
            "recipients": recipients if recipients is not None else pa.nulls(n, pa.uint32()),
            "service": svc,
            "attempts": attempts if attempts is not None else pa.array(np.ones(n, np.uint16)),
            "line": pa.array(numbers, pa.int64()),
        },
        schema=EVENTS,
    )
