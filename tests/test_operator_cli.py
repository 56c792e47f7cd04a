"""The real `pithnode` command as an operator meets it: exit codes, one-line
errors and no tracebacks for every kind of bad input, validated options,
logging options on every command, help text, read-only stores."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import MIRRORS, REAL_BUNDLE, REG, run_cli, write_config, write_json
from pithnode.testing.synth import synthetic_subject


def one_line_error(r: subprocess.CompletedProcess[str], command: str) -> str:
    """The error a command printed: one line, `pithnode COMMAND: error: ...`, no traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith(f"pithnode {command}: error: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_bad_listen_addresses_exit_2_before_serving(tmp_path: Path):
    cfg = write_config(tmp_path)
    for listen in ("nonsense", "127.0.0.1:99999", ":8780", "127.0.0.1:80x"):
        r = run_cli("run", "--listen", listen, config_path=cfg, timeout=30)
        assert r.returncode == 2, (listen, r.stderr)
        assert "--listen" in one_line_error(r, "run")


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("run", "--listen", f"127.0.0.1:{port}", config_path=write_config(tmp_path), timeout=30)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(r, "run")


def test_a_data_dir_under_a_file_is_unusable_input(tmp_path: Path):
    (tmp_path / "afile").write_text("x")
    cfg = write_config(tmp_path, data_dir=str(tmp_path / "afile" / "data"))
    for args in (["run", "--listen", "127.0.0.1:0"], ["import", str(REAL_BUNDLE)],
                 ["sync", "pith:2026:EL6A4QOTPLYS3LFEIZGOL5QVTM", "--mirror", "http://127.0.0.1:9"]):
        r = run_cli(*args, config_path=cfg, timeout=30)
        assert r.returncode == 2, (args, r.stderr)
        assert "data dir" in one_line_error(r, args[0])
    r = run_cli("doctor", "--offline", "--json", config_path=cfg)
    report = json.loads(r.stdout)
    assert r.returncode == 1 and not report["ok"]
    assert [c for c in report["checks"] if c["check"] == "data dir" and not c["ok"]], report


def test_import_of_a_missing_file_is_exit_2_and_imports_nothing(tmp_path: Path):
    cfg = write_config(tmp_path)
    r = run_cli("import", str(REAL_BUNDLE), str(tmp_path / "missing.json"), config_path=cfg)
    assert r.returncode == 2
    assert "missing.json" in one_line_error(r, "import")
    assert not (tmp_path / "data" / "pithnode.sqlite3").exists()  # found before any work


def test_sync_refuses_bad_ids_and_urls_at_once(tmp_path: Path):
    cfg = write_config(tmp_path, retries=3, total_timeout=60.0)
    for args in (["not-an-id", "--mirror", "http://127.0.0.1:9"], ["pith:2026:EL6A4QOTPLYS3LFEIZGOL5QVTM",
                                                                   "--mirror", "not-a-url"],
                 ["pith:2026:EL6A4QOTPLYS3LFEIZGOL5QVTM", "--timeout", "soon"]):
        r = run_cli("sync", *args, config_path=cfg, timeout=30)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and "error:" in r.stderr


def make_equivocation(tmp_path: Path) -> tuple[Path, str]:
    cfg = write_config(tmp_path)
    pn, events = synthetic_subject(REG, 9100, 6, MIRRORS)
    # a second first snapshot: the two equivocate with no previous event
    fork = REG.graph_snapshot(pn, "2026-06-06T00:00:00Z", prev=None, title="fork")
    bundle = write_json(tmp_path / "b.json", REG.bundle(pn, [*events, fork], keys=MIRRORS))
    assert run_cli("import", str(bundle), config_path=cfg).returncode == 0
    return cfg, fork["event_id"]


def test_equivocations_for_monitors(tmp_path: Path):
    cfg, fork_id = make_equivocation(tmp_path)
    r = run_cli("equivocations", "--exit-code", config_path=cfg)
    assert r.returncode == 3 and fork_id in r.stdout and "None" not in r.stdout
    assert run_cli("equivocations", config_path=cfg).returncode == 0  # without the flag: 0, as before
    for since in ("2999-01-01", "2999-01-01T00:00:00Z", "2999-01-01T00:00:00+02:00"):
        r = run_cli("equivocations", "--exit-code", "--since", since, "--json", config_path=cfg)
        assert r.returncode == 0 and json.loads(r.stdout)["equivocations"] == [], since
    for since in ("24h", "7d", "2020-01-01"):
        r = run_cli("equivocations", "--exit-code", "--since", since, "--json", config_path=cfg)
        assert r.returncode == 3 and len(json.loads(r.stdout)["equivocations"]) == 1, since
    for since in ("yesterday", "24x", "2026-13-01"):
        r = run_cli("equivocations", "--since", since, config_path=cfg)
        assert r.returncode == 2 and "--since" in r.stderr and "Traceback" not in r.stderr, since
        r = run_cli("rejections", "--since", since, config_path=cfg)
        assert r.returncode == 2, since


def test_show_and_verify_print_no_none(tmp_path: Path):
    cfg, _ = make_equivocation(tmp_path)
    pn = json.loads(run_cli("list", "--json", config_path=cfg).stdout)[0]["pith_number"]
    r = run_cli("show", pn, config_path=cfg)
    assert r.returncode == 0 and "EQUIVOCATION" in r.stdout and "None" not in r.stdout
    r = run_cli("export", pn, "-o", str(tmp_path / "e.json"), config_path=cfg)
    assert r.returncode == 0, r.stderr
    r = run_cli("verify", str(tmp_path / "e.json"), config_path=cfg)
    assert "equivocations: 1" in r.stdout and "None" not in r.stdout


def test_logging_options_on_every_command(tmp_path: Path):
    cfg = write_config(tmp_path)
    assert run_cli("import", str(REAL_BUNDLE), config_path=cfg).returncode == 0
    for args in (["list", "-v"], ["list", "-vv", "--log-format", "json"], ["-v", "list", "--log-level", "error"],
                 ["state", "EL6A4QOTPLYS3LFEIZGOL5QVTM", "--log-level", "debug", "--log-format", "json"]):
        r = run_cli(*args, config_path=cfg)
        assert r.returncode == 0, (args, r.stderr)
    r = run_cli("list", "--log-level", "bogus", config_path=cfg)
    assert r.returncode == 2 and "--log-level" in r.stderr
    # JSON lines, as a log shipper reads them (the one error line stays the CLI's)
    r = run_cli("sync", "pith:2026:EL6A4QOTPLYS3LFEIZGOL5QVTM", "--mirror", "http://127.0.0.1:9", "-vv",
                "--log-format", "json", "--timeout", "10", config_path=cfg)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert r.returncode == 1 and logged, r.stderr
    assert all({"time", "level", "logger", "message"} <= set(doc) for doc in logged)
    assert len(lines) == len(logged) + 1 and one_line_error(r, "sync")


def test_every_subcommand_has_a_description_and_points_at_installed_files(tmp_path: Path):
    r = run_cli("--help")
    listing = r.stdout.split("  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    commands = [line.split()[0] for line in listing.splitlines()]
    assert len(commands) >= 12 and "status" in commands
    texts = [r.stdout]
    for command in commands:
        text = run_cli(command, "--help").stdout
        texts.append(text)
        head = text.split("\n\n")
        assert head[0].startswith("usage: pithnode"), command
        assert not head[1].lstrip().startswith(("positional arguments", "options")), f"{command} has no description"
    example = Path(re.search(r"Every setting:\s+(\S+)", r.stdout).group(1))
    assert example.is_file() and "listen =" in example.read_text()  # shipped in the package
    for text in texts:  # nothing sends a pip user to a file only a clone has
        assert "docs/" not in text and "config/" not in text
    # nor does the error about a broken store
    cfg = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pithnode.sqlite3").write_bytes(b"not a database" * 500)
    r = run_cli("list", config_path=cfg)
    assert r.returncode == 1 and "docs/" not in one_line_error(r, "list")


def as_other_user() -> list[str]:
    """Run as nobody when we are root (root writes whatever the mode bits say)."""
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv to drop root")
def test_readers_work_on_a_store_they_may_not_write_and_doctor_says_so():
    base = Path(tempfile.mkdtemp(prefix="pithnode-ro-"))  # outside pytest's 0700 tmp dirs: `nobody` reads it
    try:
        os.chmod(base, 0o755)
        cfg = write_config(base)
        assert run_cli("import", str(REAL_BUNDLE), config_path=cfg).returncode == 0
        data = base / "data"
        for p in (data, *data.iterdir()):
            os.chmod(p, stat.S_IMODE(os.stat(p).st_mode) & ~0o222 | 0o444 | (0o111 if p.is_dir() else 0))
        cmd = [*as_other_user(), sys.executable, "-m", "pithnode"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PITHNODE_")}
        r = subprocess.run([*cmd, "list", "--json", "--config", str(cfg)], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        assert [s["pith_number"] for s in json.loads(r.stdout)] == ["pith:2026:EL6A4QOTPLYS3LFEIZGOL5QVTM"]
        r = subprocess.run([*cmd, "doctor", "--offline", "--json", "--config", str(cfg)], capture_output=True,
                           text=True, timeout=60, env=env)
        report = json.loads(r.stdout)
        assert r.returncode == 1
        bad = {c["check"]: c for c in report["checks"] if not c["ok"]}
        assert "data dir" in bad and "not writable" in bad["data dir"]["detail"], report
        assert bad.get("store") is None, report  # the store itself reads fine
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_license_file_is_the_one_pyproject_names():
    root = Path(__file__).parent.parent
    assert 'license = { text = "Apache-2.0" }' in (root / "pyproject.toml").read_text()
    text = (root / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text
