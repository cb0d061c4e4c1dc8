"""The collector's template state: one file per exporter, written when it changes, read when the
exporter is first asked about."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mamori.ingest.netflow.templates import Template, TemplateRegistry, field_spec
from mamori.ingest.template_state import TemplateState


def template(tid: int, fields: int = 3) -> Template:
    return Template(9, tid, tuple(field_spec(8 + i, 4) for i in range(fields)))


def registry() -> TemplateRegistry:
    return TemplateRegistry(timeout_s=1800)


def put(reg: TemplateRegistry, exporter: str, tid: int, when: float = 100.0) -> None:
    reg.put((exporter, 9, 0, tid), template(tid), when, Counter())


def test_only_changed_exporters_are_written(tmp_path: Path) -> None:
    reg, state = registry(), TemplateState(tmp_path)
    state.attach(reg)
    for exporter in ("192.0.2.1", "192.0.2.2", "2001:db8::1"):
        put(reg, exporter, 256)
    assert state.save(reg, 0.0, refresh_every_s=450) == 3
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert set(files) == {"192.0.2.1.json", "192.0.2.2.json", "2001%3Adb8%3A%3A1.json"}
    assert state.save(reg, 100.0, refresh_every_s=450) == 0  # nothing changed
    put(reg, "192.0.2.2", 257)
    assert state.save(reg, 200.0, refresh_every_s=450) == 1
    data = json.loads((tmp_path / "192.0.2.2.json").read_text())
    assert sorted(t["id"] for t in data["templates"]) == [256, 257]
    assert (tmp_path / "192.0.2.1.json").stat().st_mtime_ns == files["192.0.2.1.json"]


def test_writes_are_spaced_but_the_stop_writes_everything(tmp_path: Path) -> None:
    reg, state = registry(), TemplateState(tmp_path)
    put(reg, "192.0.2.1", 256)
    assert state.save(reg, 0.0, refresh_every_s=450, min_interval_s=30) == 1
    put(reg, "192.0.2.1", 257)
    assert state.save(reg, 10.0, refresh_every_s=450, min_interval_s=30) == 0  # too soon
    assert state.save(reg, 31.0, refresh_every_s=450, min_interval_s=30) == 1
    put(reg, "192.0.2.1", 258)
    assert state.save(reg, 32.0, refresh_every_s=450, min_interval_s=30, final=True) == 1
    # A template only announced again moves its last-seen time: written once the file is old.
    put(reg, "192.0.2.1", 256, when=500.0)
    assert state.save(reg, 100.0, refresh_every_s=450) == 0
    assert state.save(reg, 500.0, refresh_every_s=450) == 1
    seen = {
        t["id"]: t["seen"] for t in json.loads(state.path("192.0.2.1").read_text())["templates"]
    }
    assert seen[256] == 500.0


def test_a_restart_reads_an_exporter_only_when_asked(tmp_path: Path) -> None:
    reg, state = registry(), TemplateState(tmp_path)
    for i in range(20):
        put(reg, f"192.0.2.{i}", 256)
    reg.set_sampling(("192.0.2.3", 9, 0), None, 100)
    state.save(reg, 0.0, refresh_every_s=450)

    again, fresh = registry(), TemplateState(tmp_path)
    fresh.attach(again)
    assert len(again) == 0 and fresh.counters["templates.restored"] == 0  # nothing read
    assert again.get(("192.0.2.3", 9, 0, 256), 200.0, Counter()) == template(256)
    assert again.sampling(("192.0.2.3", 9, 0)).default == 100
    assert len(again) == 1 and fresh.counters["templates.restored"] == 1
    assert fresh.save(again, 0.0, refresh_every_s=450) == 0  # what was read needs no writing
    assert again.state()["templates"].__len__() == 20  # the whole state loads everything


def test_an_exporter_with_nothing_left_loses_its_file(tmp_path: Path) -> None:
    reg, state = TemplateRegistry(timeout_s=60), TemplateState(tmp_path)
    put(reg, "192.0.2.1", 256, when=0.0)
    put(reg, "192.0.2.2", 256, when=100.0)
    state.save(reg, 0.0, refresh_every_s=450)
    assert reg.expire(120.0, Counter()) == 1
    assert state.save(reg, 100.0, refresh_every_s=450) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["192.0.2.2.json"]


def test_the_single_file_of_earlier_versions_is_migrated(tmp_path: Path) -> None:
    def saved(exporter: str, tid: int) -> dict[str, object]:
        fields = [[8, 4, 0, 0], [9, 4, 0, 0], [10, 4, 0, 0]]
        return {"exporter": exporter, "domain": 0, "seen": 100.0, "version": 9, "id": tid} | {
            "options": False,
            "fields": fields,
        }

    legacy = tmp_path / "templates.json"  # as earlier versions wrote it (format 1)
    legacy.write_text(
        json.dumps({"format": 1, "templates": [saved("192.0.2.1", 256), saved("192.0.2.2", 300)]})
    )
    reg, state = registry(), TemplateState(tmp_path / "templates", legacy=legacy)
    state.attach(reg)
    assert len(reg) == 2
    assert reg.entry(("192.0.2.2", 9, 0, 300)) == (template(300), 100.0)
    assert state.save(reg, 0.0, refresh_every_s=450) == 2
    assert not legacy.exists()
    assert sorted(p.name for p in (tmp_path / "templates").iterdir()) == [
        "192.0.2.1.json",
        "192.0.2.2.json",
    ]


def test_an_unreadable_file_is_counted_and_ignored(tmp_path: Path) -> None:
    (tmp_path / "192.0.2.1.json").write_text("{not json")
    reg, state = registry(), TemplateState(tmp_path)
    state.attach(reg)
    assert reg.entry(("192.0.2.1", 9, 0, 256)) is None
    assert state.counters["errors.template_state_unreadable"] == 1


def test_saved_templates_read_back_equal() -> None:
    plain = Template(9, 256, tuple(field_spec(i, 4) for i in (8, 12, 7)))
    options = Template(
        10,
        300,
        (field_spec(149, 4, scope=True), field_spec(305, 4), field_spec(1, 65535, 29305)),
        options=True,
    )
    for t in (plain, options):
        saved = json.loads(json.dumps(t.to_json()))
        assert Template.from_json(saved) == t
    assert "enterprise" not in plain.to_json() and options.to_json()["scopes"] == 1
