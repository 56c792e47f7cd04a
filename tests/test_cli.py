"""The real `pithnode` command in a subprocess: exit codes, --json, offline commands."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from helpers import DATA, MIRRORS, REAL_BUNDLE, REAL_RECORD, REAL_STATE_SHA, REG, run_cli, write_config, write_json
from pithnode.testing.synth import synthetic_subject


def test_verify_real_bundle_json(tmp_path: Path):
    r = run_cli("verify", str(REAL_BUNDLE), "--json", config_path=write_config(tmp_path))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["kind"] == "bundle" and rep["bundle_signature_ok"] is True
    assert rep["state_sha256"] == rep["published_state_sha256"] == REAL_STATE_SHA and rep["state_matches"]
    assert [a["rejected"] for a in rep["admission"]] == [None, None]
    assert rep["pith_number"] == "pith:2026:EL6A4QOTPLYS3LFEIZGOL5QVTM"


def test_verify_record_and_state(tmp_path: Path):
    r = run_cli("verify", str(REAL_RECORD), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["receipt_ok"] is True
    bundle = json.loads(REAL_BUNDLE.read_text())
    state = write_json(tmp_path / "state.json", bundle["state"])
    r = run_cli("verify", str(state), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state_matches"] is True
    bundle["state"]["event_count"] = 3
    r = run_cli("verify", str(write_json(tmp_path / "bad-state.json", bundle["state"])), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["state_matches"] is False


def test_tampered_bundle_fails_verify_with_exit_1(tmp_path: Path):
    bundle = json.loads(REAL_BUNDLE.read_text())
    bundle["events"][1]["payload"]["graph_snapshot"]["paper"]["title"] = "Something else"
    path = write_json(tmp_path / "t.json", bundle)
    r = run_cli("verify", str(path))
    assert r.returncode == 1
    assert "hash_mismatch" in r.stdout and "FAILS" in r.stdout
    rep = json.loads(run_cli("verify", str(path), "--json").stdout)
    assert rep["bundle_signature_ok"] is False and rep["admission"][1]["rejected"] == "hash_mismatch"
    assert rep["state_matches"] is False


def test_tampered_record_receipt(tmp_path: Path):
    rec = json.loads(REAL_RECORD.read_text())
    rec["canonical_record"]["metadata"]["primary_cat"] = "cs.XX"
    r = run_cli("verify", str(write_json(tmp_path / "r.json", rec)), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["receipt_ok"] is False


def test_verify_unusable_input_exit_2(tmp_path: Path):
    (tmp_path / "x.json").write_text("{not json")
    r = run_cli("verify", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "not JSON" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("verify", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_verify_events_list_with_keys(tmp_path: Path):
    pn, events = synthetic_subject(REG, 7, 6, MIRRORS)
    path = write_json(tmp_path / "events.json", events)
    keys = write_json(tmp_path / "keys.json", [m.entry() for m in MIRRORS])
    r = run_cli("verify", str(path), "--keys", str(keys), "--json", config_path=write_config(tmp_path))
    rep = json.loads(r.stdout)
    assert r.returncode == 0, rep["problems"]
    assert rep["kind"] == "events" and all(a["rejected"] is None for a in rep["admission"])
    r = run_cli("verify", str(path), "--json", config_path=write_config(tmp_path))  # mirror keys unknown
    assert r.returncode == 1 and "unknown_key" in {a["rejected"] for a in json.loads(r.stdout)["admission"]}


def test_conformance_json_is_computed(tmp_path: Path):
    r = run_cli("conformance", str(DATA / "conformance"), "--json")
    assert r.returncode == 0, r.stdout
    out = json.loads(r.stdout)["vectors"]
    assert len(out) == len(list((DATA / "conformance").glob("*.json")))
    for v in out:
        vec = json.loads((DATA / "conformance" / v["file"]).read_text())
        assert v["state_sha256"] == vec["expected"]["state"]["state_sha256"]
        assert v["admission"] == vec["expected"]["admission"]
    # a vector whose expectation is wrong makes the run fail
    vec = json.loads((DATA / "conformance" / "03-registry-equivocation.json").read_text())
    true_sha = vec["expected"]["state"]["state_sha256"]
    vec["expected"]["state"]["equivocation_count"] = 0
    vec["expected"]["state"]["state_sha256"] = "0" * 64
    (tmp_path / "v").mkdir()
    write_json(tmp_path / "v" / "bad.json", vec)
    r = run_cli("conformance", str(tmp_path / "v"), "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["vectors"][0]["state_sha256"] == true_sha  # computed, not copied


def test_offline_store_commands(tmp_path: Path):
    cfg = write_config(tmp_path)
    pn, events = synthetic_subject(REG, 8, 10, MIRRORS)
    b1 = write_json(tmp_path / "b1.json", REG.bundle(pn, events, keys=MIRRORS))
    graph = [e for e in events if e["event_type"] == "graph_snapshot"]
    fork = REG.graph_snapshot(pn, "2026-06-06T00:00:00Z", prev=graph[0], title="fork")
    b2 = write_json(tmp_path / "b2.json", REG.bundle(pn, [*events, fork], keys=MIRRORS))
    r = run_cli("import", str(REAL_BUNDLE), str(b1), str(b2), "--json", config_path=cfg)
    assert r.returncode == 0, r.stderr
    imported = json.loads(r.stdout)["imported"]
    assert [len(e["new_event_ids"]) for e in imported] == [2, 10, 1]

    listing = json.loads(run_cli("list", "--json", config_path=cfg).stdout)
    assert {s["pith_number"] for s in listing} == {pn, "pith:2026:EL6A4QOTPLYS3LFEIZGOL5QVTM"}

    state = run_cli("state", "EL6A4QOTPLYS3LFEIZGOL5QVTM", "--json", config_path=cfg)
    assert json.loads(state.stdout)["state_sha256"] == REAL_STATE_SHA

    show = run_cli("show", pn, config_path=cfg)
    assert show.returncode == 0 and "EQUIVOCATION" in show.stdout and "Synthetic paper" in show.stdout

    eq = json.loads(run_cli("equivocations", "--json", config_path=cfg).stdout)["equivocations"]
    assert len(eq) == 1 and fork["event_id"] in eq[0]["event_ids"] and len(eq[0]["events"]) == 2
    assert json.loads(run_cli("equivocations", "--json", "--since", "2999-01-01T00:00:00Z", config_path=cfg).stdout)["equivocations"] == []

    missing = tmp_path / "no-such-dir" / "export.json"
    r = run_cli("export", "pith:EL6A4QOT", "-o", str(missing), config_path=cfg)
    assert r.returncode == 2 and "no directory" in r.stderr and not missing.parent.exists()

    out = tmp_path / "export.json"
    r = run_cli("export", "pith:EL6A4QOT", "-o", str(out), config_path=cfg)
    assert r.returncode == 0, r.stderr
    key = tmp_path / "data" / "node.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    v = json.loads(run_cli("verify", str(out), "--json", config_path=cfg).stdout)
    assert v["bundle_signature_ok"] and v["state_sha256"] == REAL_STATE_SHA and v["problems"] == []

    os.chmod(key, 0o644)
    r = run_cli("export", "pith:EL6A4QOT", config_path=cfg)
    assert r.returncode == 2 and "chmod 600" in r.stderr

    r = run_cli("show", "pith:ZZZZZZZZ", config_path=cfg)
    assert r.returncode == 2 and "no record matching" in r.stderr


def test_import_reports_rejections_and_bad_files(tmp_path: Path):
    cfg = write_config(tmp_path)
    bundle = json.loads(REAL_BUNDLE.read_text())
    bundle["events"][0]["created_at"] = "yesterday"
    bad = write_json(tmp_path / "bad.json", bundle)
    (tmp_path / "junk.json").write_text("[[[")
    r = run_cli("import", str(bad), str(tmp_path / "junk.json"), "--json", config_path=cfg)
    assert r.returncode == 1
    res = json.loads(r.stdout)
    assert res["imported"][0]["rejected"][0]["reason"] == "malformed" and res["imported"][1]["ok"] is False
    rej = json.loads(run_cli("rejections", "--json", config_path=cfg).stdout)["rejections"]
    assert rej[0]["reason"] == "malformed" and rej[0]["source"].startswith("file:")


def test_doctor_says_what_to_fix(tmp_path: Path):
    cfg = write_config(tmp_path)
    bundle = tmp_path / "b.json"
    bundle.write_bytes(REAL_BUNDLE.read_bytes())
    assert run_cli("import", str(bundle), "--no-progress", config_path=cfg).returncode == 0
    assert run_cli("export", "EL6A4QOTPLYS3LFEIZGOL5QVTM", "-o", str(tmp_path / "out.json"), config_path=cfg).returncode == 0
    ok = run_cli("doctor", "--offline", "--deep", "--json", config_path=cfg)
    report = json.loads(ok.stdout)
    assert ok.returncode == 0 and report["ok"], report
    assert any("every state equals a fresh merge" in c["detail"] for c in report["checks"])
    key = tmp_path / "data" / "node.key"
    os.chmod(key, 0o644)
    bad = run_cli("doctor", "--offline", config_path=cfg)
    assert bad.returncode == 1 and f"chmod 600 {key}" in bad.stdout
