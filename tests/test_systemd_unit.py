"""config/pithnode.service against what a running node does: every system
call, socket family and memory mapping a real node makes (traced with
strace while it admits events in its worker processes, serves readers
through a front process and stops) must pass the unit's sandbox, every file
it creates must lie where the unit lets it write, and `systemd-analyze
verify` must accept the unit."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
import trio

from helpers import MIRRORS, REG, write_config
from nodes import free_port, wait_up
from pithnode.node import peer
from pithnode.node.http import Limits
from pithnode.testing.synth import synthetic_subject

UNIT = Path(__file__).parent.parent / "config" / "pithnode.service"

needs_tools = pytest.mark.skipif(not (shutil.which("strace") and shutil.which("systemd-analyze")),
                                 reason="needs strace and systemd-analyze (Debian: apt-get install strace systemd)")


def directives() -> list[tuple[str, str]]:
    out = []
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.append((key.strip(), value.strip()))
    return out


@functools.cache
def expand(name: str) -> frozenset[str]:
    """A system call group (@name) as the system calls in it, as systemd reads it."""
    if not name.startswith("@"):
        return frozenset([name])
    text = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                          check=True).stdout
    items: set[str] = set()
    for line in text.splitlines()[1:]:
        if (line := line.strip()) and not line.startswith("#"):
            items |= expand(line)
    return frozenset(items)


def allowed_syscalls() -> set[str]:
    """SystemCallFilter= lines in order: the first (an allow list) sets the list,
    a later `~` line takes its calls out, a later plain line adds them back."""
    allowed: set[str] | None = None
    for key, value in directives():
        if key != "SystemCallFilter":
            continue
        deny = value.startswith("~")
        names = set().union(*(expand(n) for n in value.lstrip("~").split()))
        if allowed is None:
            assert not deny, "the first SystemCallFilter= is an allow list"
            allowed = names
        elif deny:
            allowed -= names
        else:
            allowed |= names
    assert allowed is not None
    return allowed


def trace_node(workdir: Path) -> tuple[str, Path]:
    """Run a node under strace as an unprivileged user (as DynamicUser= does):
    admit a push in the worker processes, serve documents through a front,
    stop it with SIGTERM. Returns the trace and the data dir."""
    cfg = write_config(workdir, mirrors=[], gossip_interval=3600.0, poll_interval=3600.0, http_workers=1)
    data = workdir / "data"
    data.mkdir(mode=0o700)
    drop = []
    if os.geteuid() == 0:  # root: as `nobody`, so nothing root-only (SQLite's fchown of its -wal) is traced;
        os.chown(data, 65534, 65534)  # reading (only) past a 0700 home that holds the interpreter
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "trace.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITHNODE_")}
    env["TMPDIR"] = str(workdir / "tmp")  # PrivateTmp=: the node's /tmp is its own
    (workdir / "tmp").mkdir(mode=0o777)
    os.chmod(workdir / "tmp", 0o1777)
    log.touch()
    os.chmod(log, 0o666)
    proc = subprocess.Popen([*drop, "strace", "-f", "-qq", "-s", "256", "-o", str(log), sys.executable, "-m",
                             "pithnode", "run", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async def exercise() -> None:
            with trio.fail_after(120):
                await wait_up(url, timeout=60)
                async with httpx.AsyncClient(timeout=60) as client:
                    pn, evs = synthetic_subject(REG, 8800, 200, MIRRORS)  # enough for the worker processes
                    keys = [REG.entry(), *(m.entry() for m in MIRRORS)]
                    body = peer.encode({"v": 1, "events": [json.dumps(e).encode() for e in evs], "keys": keys})
                    r = await client.post(f"{url}/peer/v1/push", content=body)
                    assert r.status_code == 200, r.text
                    code = pn.rsplit(":", 1)[-1]
                    for path in (f"/pith/{code}/bundle.json", f"/pith/{code}/state.json", "/status.json", "/metrics"):
                        assert (await client.get(url + path, headers={"accept-encoding": "gzip"})).status_code == 200

        trio.run(exercise)
        node_pid = json.loads((data / "node.lock").read_text())["pid"]
        os.kill(node_pid, signal.SIGTERM)  # the node, not strace (which would only detach)
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text(), data


@needs_tools
def test_the_unit_lets_a_real_node_do_all_it_does():
    workdir = Path(tempfile.mkdtemp(prefix="pithnode-unit-"))
    try:
        os.chmod(workdir, 0o755)
        trace, data = trace_node(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    calls = re.findall(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)(?:\(| resumed>)", trace, re.M)
    assert "setpriority" in calls and "accept4" in calls and "execve" in calls  # workers, readers, fronts traced
    killed = set(calls) - allowed_syscalls()
    assert not killed, f"system calls the unit's SystemCallFilter kills the node for: {sorted(killed)}"

    families = set(re.findall(r"\bsocket(?:pair)?\((AF_[A-Z0-9]+)", trace))
    allowed_families = dict(directives())["RestrictAddressFamilies"].split()
    assert families and not families - set(allowed_families)

    if dict(directives()).get("MemoryDenyWriteExecute") == "yes":
        wx = [line for line in trace.splitlines()
              if re.search(r"\b(mmap|mprotect)\(.*PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE", line)]
        assert not wx, wx[:3]

    # ProtectSystem=strict: writes go to the StateDirectory (the data dir) or the private /tmp only
    created = re.findall(r'(?:openat\(AT_FDCWD, "([^"]+)", [^)\n]*O_CREAT|mkdir\("([^"]+)"|'
                         r'bind\(\d+, \{sa_family=AF_UNIX, sun_path="([^"]+)")', trace)
    paths = {p for groups in created for p in groups if p and not p.startswith("@")}
    outside = {p for p in paths if not p.startswith((str(data), str(workdir / "tmp"), "/dev/shm"))}
    assert paths and not outside, outside


@needs_tools
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    text = UNIT.read_text()
    start = dict(directives())["ExecStart"]
    assert start.split()[0] == "pithnode"  # found on systemd's search path: pip's and pipx's /usr/local/bin
    exe = shutil.which("pithnode", path=str(Path(sys.executable).parent))
    assert exe
    unit = tmp_path / "pithnode.service"  # the same unit, with this checkout's pithnode (verify needs it to exist)
    unit.write_text(text.replace("ExecStart=pithnode ", f"ExecStart={exe} "))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_the_unit_allows_more_files_than_the_node_takes_connections():
    limit = int(dict(directives())["LimitNOFILE"])
    # every connection is a descriptor; add the store, worker pipes, peers' client pool and fronts
    assert limit >= Limits().max_connections + 1024
