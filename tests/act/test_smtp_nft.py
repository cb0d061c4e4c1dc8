"""The nftables refusal back end against the real kernel, in a network namespace of its own
(``unshare -n``): a refused address gets a TCP reset on the submission ports while others still
connect, withdrawal lifts it, and an element's timeout ends a refusal by itself even when nothing
withdraws it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json, socket, subprocess, sys, time
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from mamori.act.base import Action
    from mamori.act.smtp_backends import NftSubmissionSet
    from mamori.config import load_config

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    cfg = load_config(overrides={"store": Path(sys.argv[1]),
                                 "mail": {"submission_ports": [587], "nft_table": "mamori_t"}})
    nft = NftSubmissionSet(cfg)
    nft.prepare()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 587))
    srv.listen(64)

    def reach(src):
        s = socket.socket()
        s.bind((src, 0))
        s.settimeout(3)
        try:
            s.connect(("127.0.0.1", 587))
            return "open"
        except ConnectionRefusedError:
            return "reset"
        finally:
            s.close()

    def action(aid, target, seconds):
        now = datetime.now(UTC)
        return Action(action_id=aid, kind="smtp-auth-refusal", target=target, measure="M12",
                      legal_basis="justified-act", justification="test", created=now,
                      expires=now + timedelta(seconds=seconds))

    out = {"before": reach("127.0.0.66")}
    a = action("a1", "127.0.0.66", 600)
    nft.apply([a])
    out["refused"] = reach("127.0.0.66")
    out["other"] = reach("127.0.0.10")
    rules = json.loads(subprocess.run(["nft", "-j", "list", "table", "inet", "mamori_t"],
                                      capture_output=True, check=True).stdout)
    out["counted"] = sum(x["rule"]["expr"][-2]["counter"]["packets"]
                         for x in rules["nftables"] if "rule" in x)
    nft.withdraw([a])
    out["after"] = reach("127.0.0.66")
    nft.apply([action("a2", "127.0.0.67", 2)])
    out["short"] = reach("127.0.0.67")
    time.sleep(3.5)  # nothing withdraws it: the kernel's element timeout does
    out["timed_out"] = reach("127.0.0.67")
    print(json.dumps(out))
    """
)


def test_nftables_set_refuses_on_the_submission_ports_in_a_namespace(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"):
        pytest.skip("needs root, nft (nftables) and unshare")
    probe = subprocess.run(["unshare", "-n", "nft", "list", "ruleset"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no network namespace here: {probe.stderr.decode().strip()}")
    script = tmp_path / "nft_check.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        ["unshare", "-n", sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {
        "before": "open",
        "refused": "reset",
        "other": "open",
        "counted": out["counted"],
        "after": "open",
        "short": "reset",
        "timed_out": "open",
    }
    assert out["counted"] >= 1
