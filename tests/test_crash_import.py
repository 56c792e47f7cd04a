"""`kill -9` of a real `pithnode import` at random moments, then restart: the
store is intact, no bundle is half applied, every state is a fresh merge."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import MIRRORS, REG, config, write_config, write_json
from pithnode.core import canonical_bytes, merge
from pithnode.store import Store
from pithnode.testing.synth import synthetic_subject
from pithnode.views import events_of

KILLS = 20


def check_store(cfg, expected: dict[str, set[str]]) -> int:
    with Store(cfg.db_path) as store:
        assert store.integrity_check() == ["ok"]
        ring = cfg.trusted_ring().merged(store.key_ring())
        for s in store.subjects():
            events = events_of(store, s)
            assert {e["event_id"] for e in events} == expected[s.pith_number], "bundle half applied"
            assert store.state_bytes(s.pith_number) == canonical_bytes(merge(s.pith_number, events, ring, cfg.registry))
        return len(store.subjects())


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # gone meanwhile
        return []


def grandchildren(pid: int) -> list[int]:
    """The import's workers: children of its fork server, itself a child."""
    return [g for c in children(pid) for g in children(c)]


def test_kill_9_during_import_never_half_applies(tmp_path: Path):
    cfg_path = write_config(tmp_path, durability="normal")
    cfg = config(tmp_path, durability="normal")
    files, expected = [], {}
    for n in range(250):
        pn, events = synthetic_subject(REG, 1000 + n, 40, MIRRORS)
        expected[pn] = {e["event_id"] for e in events}
        files.append(str(write_json(tmp_path / f"b{n}.json", REG.bundle(pn, events, keys=MIRRORS))))
    rng = random.Random(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITHNODE_")}
    killed_mid_way = 0
    for _ in range(KILLS):
        rng.shuffle(files)
        proc = subprocess.Popen([sys.executable, "-m", "pithnode", "import", *files, "--no-progress",
                                 "--config", str(cfg_path)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_way += 1
        proc.wait(timeout=30)
        if cfg.db_path.exists():
            check_store(cfg, expected)
    assert killed_mid_way >= KILLS // 2, "the kills should mostly land mid-import"
    done = subprocess.run([sys.executable, "-m", "pithnode", "import", *files, "--no-progress", "--json",
                           "--config", str(cfg_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert check_store(cfg, expected) == len(expected)


def test_a_checking_process_killed_stops_the_import_cleanly(tmp_path: Path):
    """`pithnode import` checks bundles in worker processes: one killed (the OOM
    killer) stops the import with a clear error, exit 1, nothing half-applied;
    run again, it imports the rest."""
    cfg_path = write_config(tmp_path)
    cfg = config(tmp_path)
    files, expected = [], {}
    for n in range(400):
        pn, events = synthetic_subject(REG, 3000 + n, 40, MIRRORS)
        expected[pn] = {e["event_id"] for e in events}
        files.append(str(write_json(tmp_path / f"b{n}.json", REG.bundle(pn, events, keys=MIRRORS))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITHNODE_")}
    cmd = [sys.executable, "-m", "pithnode", "import", *files, "--no-progress", "--json", "--config", str(cfg_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline and not (workers := grandchildren(proc.pid)):
        time.sleep(0.01)
    assert proc.poll() is None and workers, "the import should still be running when its workers start"
    time.sleep(0.3)
    os.kill(workers[-1], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "worker processes died" in out and "Traceback" not in err
    assert check_store(cfg, expected) < len(expected)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert check_store(cfg, expected) == len(expected)
