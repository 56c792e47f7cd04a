"""The node's own Ed25519 key: created on first use, mode 0600, refused if wider."""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from .core.keys import KeyRing, fingerprint_hex
from .errors import InputError


class KeyFileError(InputError):
    """A key file that cannot be used (mode, contents); the message says how to fix it."""


@dataclass(frozen=True)
class NodeIdentity:
    key: SigningKey
    signer_id: str  # the node's public base URL

    @property
    def public_raw(self) -> bytes:
        return bytes(self.key.verify_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint_hex(self.public_raw)

    @property
    def key_id(self) -> str:
        return "pithnode-" + self.fingerprint[:8]

    @property
    def signer(self) -> dict[str, str]:
        return {"signer_id": self.signer_id, "signer_type": "pith_mirror", "key_id": self.key_id,
                "public_key_fingerprint": self.fingerprint}

    def ring(self) -> KeyRing:
        ring = KeyRing()
        ring.add_raw(self.public_raw, self.key_id)
        return ring


def load_or_create_key(path: Path) -> SigningKey:
    """Read the 32-byte seed (base64) at `path`, creating it atomically with
    mode 0600 if absent. A key readable by others is refused, not fixed. Two
    processes creating it at once (`run` and `export` on a new data dir) end
    with one key: the file is linked into place only if none is there yet."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = SigningKey.generate()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, base64.b64encode(bytes(key)) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made one meanwhile: that one is the key
        except FileExistsError:
            return load_or_create_key(path)
        finally:
            os.unlink(tmp)
        return key
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyFileError(f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: run `chmod 600 {path}`")
    try:
        seed = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (ValueError, OSError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
    if len(seed) != 32:
        raise KeyFileError(f"key file {path} does not hold a 32-byte Ed25519 seed")
    return SigningKey(seed)
