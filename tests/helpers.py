"""Shared test helpers: a synthetic registry the node is configured to trust,
config files, and running the real `pithnode` CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pithnode.config import Config, load_config
from pithnode.testing.synth import SynthMirror, SynthRegistry

DATA = Path(__file__).parent / "data"
REAL_BUNDLE = DATA / "EL6A4QOTPLYS3LFEIZGOL5QVTM.bundle.json"
REAL_RECORD = DATA / "CNPMIFD42NONUMCBYNP4XLPY53.record.json"
REAL_STATE_SHA = "cfe1261c0ec9563426c531fa715bd7f53ded5921c755420c3e91715f93542aa6"

REG = SynthRegistry()
MIRRORS = [SynthMirror("mirror-a"), SynthMirror("mirror-b")]


def write_config(tmp: Path, **extra: Any) -> Path:
    """A config trusting both the real registry and the synthetic one."""
    settings = {"data_dir": str(tmp / "data"),
                "registry_fingerprints": ["8d4b5ee74e4693bcd1df2446408b0d54", REG.fingerprint],
                "allow_private_addresses": True, "retries": 1, "total_timeout": 5.0, **extra}
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    e = REG.config_entry()
    lines.append(f'registry_keys = [{{key_id = "{e["key_id"]}", public_key_b64 = "{e["public_key_b64"]}", '
                 f'fingerprint_sha256_hex = "{e["fingerprint_sha256_hex"]}"}}]')
    path = tmp / "pithnode.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp: Path, **extra: Any) -> Config:
    return load_config(write_config(tmp, **extra), env={})


def run_cli(*args: str, config_path: Path | None = None, input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pithnode", *args]
    if config_path is not None:
        cmd += ["--config", str(config_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITHNODE_")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          input=input.decode() if input else None)


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path
