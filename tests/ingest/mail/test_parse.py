"""The mail-log parsers: Debian fail2ban's test corpus (what its filters must and must not match),
the simulator's lines, time stamps, bad lines, and that nothing but the allowed fields is kept."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from mamori.ingest.mail.lines import split_lines
from mamori.ingest.mail.parse import EVENTS, MailParser

CORPUS = Path("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs")
REF = datetime(2005, 12, 31, 12, tzinfo=UTC)


def _corpus(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip("fail2ban's test corpus is not installed (Debian package fail2ban)")
    return path


def _annotated(path: Path, modes: set[str]) -> dict[int, tuple[bool, str | None]]:
    """Line number → (fail2ban must match, host) for the lines annotated under filter options
    that include one of ``modes`` ("" is the default mode)."""
    out: dict[int, tuple[bool, str | None]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    current: set[str] = {""}
    for i, line in enumerate(lines):
        if line.startswith("# filterOptions:"):
            opts = json.loads(line.split(":", 1)[1])
            current = {o.get("mode", "") for o in opts}
        m = re.match(r"#\s*failJSON:\s*(\{.*\})", line)
        if m and current & modes:
            spec = json.loads(m.group(1))
            out[i + 2] = (bool(spec["match"]), spec.get("host"))  # the line after, 1-based
    return out


def _parse(path: Path, fmt: str) -> pa.Table:
    p = MailParser(fmt, reference=REF)  # type: ignore[arg-type]
    return p.feed(split_lines(path.read_bytes()), final=True)


def test_postfix_sasl_failures_of_fail2bans_corpus() -> None:
    path = _corpus("postfix")
    # fail2ban's "auth" mode is the password-guessing one (postfix-sasl jail)
    want = {
        n: host
        for n, (match, host) in _annotated(path, {"auth"}).items()
        if "SASL" in path.read_text().splitlines()[n - 1]
    }
    assert len(want) >= 10
    got = _parse(path, "postfix")
    failures = {r["line"]: r["client_addr"] for r in got.to_pylist() if not r["success"]}
    expected = {n: h for n, h in want.items() if h is not None and _annotated(path, {"auth"})[n][0]}
    assert failures == expected
    # "Connection lost to authentication server", "Invalid authentication mechanism": not guesses
    skipped = {n for n, (match, _) in _annotated(path, {"auth"}).items() if not match and n in want}
    assert skipped and not skipped & set(failures)


def test_dovecot_auth_failures_of_fail2bans_corpus() -> None:
    path = _corpus("dovecot")
    ann = _annotated(path, {""})  # the default mode (not "aggressive")
    got = _parse(path, "dovecot")
    failures = {r["line"]: r["client_addr"] for r in got.to_pylist() if not r["success"]}
    expected = {n: h for n, (match, h) in ann.items() if match}
    assert failures == expected
    assert not {n for n, (match, _) in ann.items() if not match} & set(failures)
    # "auth failed, 2 attempts": one line, two attempts
    by_line = {r["line"]: r for r in got.to_pylist()}
    assert by_line[19]["attempts"] == 2 and by_line[19]["auth_id"] == "username.bob"
    assert by_line[19]["service"] == "imap"


def test_exim_authenticator_failures_of_fail2bans_corpus() -> None:
    path = _corpus("exim")
    text = path.read_text().splitlines()
    ann = {n: v for n, v in _annotated(path, {""}).items() if "authenticator failed" in text[n - 1]}
    got = _parse(path, "exim")
    failures = {r["line"]: r["client_addr"] for r in got.to_pylist() if not r["success"]}
    assert failures == {n: h for n, (match, h) in ann.items() if match}
    assert {r["auth_id"] for r in got.to_pylist()} >= {"brian", "test@domain.com", None}


SIM = """\
Nov  2 09:00:01 mail postfix/submission/smtpd[3001]: connect from unknown[203.0.113.9]
Nov  2 09:00:02 mail postfix/submission/smtpd[3001]: warning: unknown[203.0.113.9]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=admin@isp.example.jp
Nov  2 09:00:03 mail postfix/submission/smtpd[3002]: 4A1B2C3D4E: client=unknown[10.16.0.5], sasl_method=PLAIN, sasl_username=u1@isp.example.jp
Nov  2 09:00:03 mail postfix/cleanup[3004]: 4A1B2C3D4E: message-id=<x@isp.example.jp>
Nov  2 09:00:03 mail postfix/qmgr[1187]: 4A1B2C3D4E: from=<u1@isp.example.jp>, size=1234, nrcpt=3 (queue active)
Nov  2 09:00:04 mail postfix/smtp[3005]: 4A1B2C3D4E: to=<secret.friend@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=0.9, dsn=2.0.0, status=sent (250 ok)
Nov  2 09:00:04 mail postfix/cleanup[3004]: 4A1B2C3D4E: warning: header Subject: a private subject from unknown[10.16.0.5]
Nov  2 09:00:05 mail dovecot: imap-login: Login: user=<u1@isp.example.jp>, method=PLAIN, rip=10.16.0.5, lip=192.0.2.10, mpid=1, TLS, session=<abc>
Nov  2 09:00:06 mail dovecot: imap-login: Disconnected (auth failed, 3 attempts in 4 secs): user=<u2@isp.example.jp>, method=PLAIN, rip=203.0.113.9, lip=192.0.2.10, TLS, session=<def>
"""


def test_postfix_lines_join_the_queued_message_and_keep_only_the_allowed_fields() -> None:
    p = MailParser("postfix", reference=datetime(2026, 11, 30, tzinfo=UTC))
    t = p.feed(split_lines(SIM.encode()), final=True)
    assert t.schema == EVENTS
    rows = t.to_pylist()
    assert [(r["client_addr"], r["auth_id"], r["success"], r["recipients"], r["sender"])
            for r in rows] == [
        ("203.0.113.9", "admin@isp.example.jp", False, None, None),
        ("10.16.0.5", "u1@isp.example.jp", True, 3, "u1@isp.example.jp"),
    ]  # fmt: skip
    assert rows[0]["ts"] == datetime(2026, 11, 2, 9, 0, 2, tzinfo=UTC)
    # no recipient, no subject, no relay reaches the events
    text = json.dumps(t.drop_columns(["ts"]).to_pylist())
    for secret in ("secret.friend", "private subject", "mx.example.com", "message-id"):
        assert secret not in text
    assert (p.counts.failures, p.counts.successes, p.counts.malformed) == (1, 1, 0)


def test_dovecot_lines_of_the_same_log() -> None:
    p = MailParser("dovecot", reference=datetime(2026, 11, 30, tzinfo=UTC))
    rows = p.feed(split_lines(SIM.encode()), final=True).to_pylist()
    assert [(r["client_addr"], r["auth_id"], r["success"], r["attempts"], r["service"])
            for r in rows] == [
        ("10.16.0.5", "u1@isp.example.jp", True, 1, "imap"),
        ("203.0.113.9", "u2@isp.example.jp", False, 3, "imap"),
    ]  # fmt: skip


def test_a_success_waits_for_its_qmgr_line_in_a_later_block() -> None:
    lines = SIM.encode().splitlines(keepends=True)
    p = MailParser("postfix", reference=datetime(2026, 11, 30, tzinfo=UTC))
    first = p.feed(split_lines(b"".join(lines[:3])), 1)
    assert [r["success"] for r in first.to_pylist()] == [False]  # the success is held back
    second = p.feed(split_lines(b"".join(lines[3:])), 4)
    (row,) = second.to_pylist()
    assert (row["recipients"], row["line"]) == (3, 3)


def test_a_success_without_its_qmgr_line_is_kept_after_the_hold() -> None:
    p = MailParser("postfix", reference=datetime(2026, 11, 30, tzinfo=UTC), hold_s=30)
    line = SIM.splitlines()[2] + "\n"
    later = "Nov  2 09:05:00 mail postfix/submission/smtpd[3001]: warning: unknown[203.0.113.9]: SASL LOGIN authentication failed: x\n"
    assert p.feed(split_lines(line.encode())).num_rows == 0
    rows = p.feed(split_lines(later.encode()), 2).to_pylist()
    assert [(r["success"], r["recipients"]) for r in rows] == [(True, None), (False, None)]


def test_bad_lines_are_counted_with_their_numbers_and_the_good_ones_around_them_kept() -> None:
    good = SIM.splitlines()[1]
    data = (
        "\n".join(
            [
                good,
                # the marker, not the shape
                "Nov  2 09:00:02 mail postfix/smtpd[1]: warning: SASL LOGIN authentication failed:",
                # a time stamp that cannot be
                good.replace("Nov  2", "Nov 31"),
                good,
            ]
        ).encode()
        + b"\xff\xfe broken bytes\n"
        + good.encode()
        + b"\n"
    )
    p = MailParser("postfix", reference=datetime(2026, 11, 30, tzinfo=UTC))
    rows = p.feed(split_lines(data), final=True).to_pylist()
    assert [r["line"] for r in rows] == [1, 4, 5]
    assert p.counts.malformed == 2
    assert [e.split(":")[0] for e in p.counts.examples["malformed"]] == ["line 2", "line 3"]
    assert p.counts.lines == 5


@pytest.mark.parametrize(
    ("line", "tz", "reference", "expected"),
    [
        # no year: the reference's, less one for a month after the reference month
        ("Dec 31 23:59:59 h postfix/smtpd[1]: x", "UTC", datetime(2027, 1, 1, tzinfo=UTC),
         datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("Jan  1 00:00:01 h postfix/smtpd[1]: x", "UTC", datetime(2027, 1, 1, tzinfo=UTC),
         datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)),
        # the server's local time
        ("Nov  2 18:00:00 h postfix/smtpd[1]: x", "Asia/Tokyo", datetime(2026, 12, 1, tzinfo=UTC),
         datetime(2026, 11, 2, 9, 0, tzinfo=UTC)),
        ("Aug 3 15:30:49 h postfix/smtpd[1]: x", "UTC", REF,
         datetime(2005, 8, 3, 15, 30, 49, tzinfo=UTC)),
        ("2013-01-04 17:03:46 login authenticator x", "UTC", REF,
         datetime(2013, 1, 4, 17, 3, 46, tzinfo=UTC)),
        ("2026-11-02T09:00:01.123456+09:00 h postfix/smtpd[1]: x", "UTC", REF,
         datetime(2026, 11, 2, 0, 0, 1, tzinfo=UTC)),
        ("<22>Nov  2 09:00:01 h postfix/smtpd[1]: x", "UTC", datetime(2026, 12, 1, tzinfo=UTC),
         datetime(2026, 11, 2, 9, 0, 1, tzinfo=UTC)),
        # daemontools' TAI64N label (multilog)
        ("@400000004c91b044077a9e94 imap-login: x", "UTC", REF,
         datetime(2010, 9, 16, 5, 50, 50, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_time_stamps(line: str, tz: str, reference: datetime, expected: datetime) -> None:
    from mamori.ingest.mail.lines import head_times

    ms, ok = head_times(pa.array([line]), tz=tz, reference=reference)
    assert ok.tolist() == [True]
    assert datetime.fromtimestamp(ms[0] / 1000, UTC) == expected


def test_split_lines_keeps_a_last_line_without_its_end_out() -> None:
    arr = split_lines(b"a\nbb\r\nccc")
    assert arr.to_pylist() == ["a\n", "bb\r\n"]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="postfix, dovecot, exim"):
        MailParser("sendmail")  # type: ignore[arg-type]


def test_the_simulators_whole_log(tmp_path: Path) -> None:
    from mamori.sim import simulate

    simulate("tiny", tmp_path / "sim", seed=7)
    log = tmp_path / "sim" / "mail" / "mail.log"
    text = log.read_text()
    ref = datetime(2026, 12, 31, tzinfo=UTC)
    pf = MailParser("postfix", reference=ref)
    rows = pf.feed(split_lines(log.read_bytes()), final=True).to_pylist()
    assert pf.counts.malformed == 0
    assert pf.counts.failures == text.count("SASL LOGIN authentication failed") > 0
    queued = [r for r in rows if r["success"]]
    assert len(queued) == text.count("sasl_method=PLAIN") > 0
    # every queued message found its qmgr line: its sender and recipient count
    assert all(r["recipients"] == 1 and r["sender"] == r["auth_id"] for r in queued)
    dc = MailParser("dovecot", reference=ref)
    dc.feed(split_lines(log.read_bytes()), final=True)
    assert (dc.counts.failures, dc.counts.successes, dc.counts.malformed) == (
        text.count("(auth failed"),
        text.count("imap-login: Login:"),
        0,
    )
