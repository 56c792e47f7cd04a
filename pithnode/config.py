"""Configuration: defaults, then a TOML file, then environment, then flags.

Every key is documented in config/pithnode.example.toml.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .core.keys import REGISTRY_FINGERPRINT, KeyRing, default_registry_ring
from .errors import InputError

PRIMARY_RESOLVER = "https://pith.science"
ENV_PREFIX = "PITHNODE_"


class ConfigError(ValueError, InputError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class Config:
    data_dir: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("pithnode")))
    # Trusted registry keys: fingerprints, and the keys themselves when they are
    # not the built-in one (operator-configured rotation).
    registry_fingerprints: tuple[str, ...] = (REGISTRY_FINGERPRINT,)
    registry_keys: tuple[dict[str, Any], ...] = ()
    mirrors: tuple[str, ...] = (PRIMARY_RESOLVER,)
    durability: str = "full"
    max_bundle_bytes: int = 64 * 1024 * 1024
    connect_timeout: float = 10.0
    total_timeout: float = 60.0
    retries: int = 3
    allow_private_addresses: bool = False
    # the long-lived node
    listen: str = "127.0.0.1:8780"
    http_workers: int = 0  # front processes serving the public port (0: the node process serves it)
    public_url: str | None = None
    peers: tuple[str, ...] = ()
    follow: tuple[str, ...] = ()
    poll_interval: float = 900.0
    gossip_interval: float = 30.0
    storage_renewal_days: float = 30.0
    attest: bool = True  # sign own witness / storage / mirror-hint events for each record held
    on_equivocation: str | None = None
    max_concurrent_fetches: int = 8
    # against floods of authentic events and of requests
    max_signers_per_subject: int = 1000
    max_events_per_signer: int = 10000
    max_store_bytes: int = 32 * 1024**3  # 0: no cap (docs/SECURITY.md, budgets)
    peer_rate_limit: float = 50.0  # peer-protocol requests per second per client address (burst 4x)
    # what one source we did not name (a client address, a learned peer) may make us store, and spend
    peer_new_records_per_hour: int = 2000
    peer_new_keys_per_hour: int = 2000
    peer_cpu_share: float = 0.25  # reconciliation CPU seconds per second per client address (burst 20x)
    max_connections_per_address: int = 64  # HTTP, per client address but loopback (a proxy in front); 0: none

    @property
    def db_path(self) -> Path:
        return self.data_dir / "pithnode.sqlite3"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "node.key"

    def trusted_ring(self) -> KeyRing:
        ring = default_registry_ring()
        refused = ring.add_entries(list(self.registry_keys))
        if refused:
            raise ConfigError(f"{len(refused)} registry_keys entries do not hash to their fingerprint")
        return ring

    @property
    def operator_urls(self) -> tuple[str, ...]:
        """The URLs the operator named (config, environment, flags): fetched as
        given, on private addresses too (net/fetch.py's guard is for learned ones)."""
        return (*self.mirrors, *self.peers)

    @property
    def registry(self) -> frozenset[str]:
        return frozenset(self.registry_fingerprints)


_TUPLES = {f.name for f in fields(Config) if "tuple" in str(f.type)}
_TYPES = {f.name: str(f.type) for f in fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    kind = _TYPES[name]
    if name == "data_dir":
        return Path(os.path.expanduser(str(value)))
    if name in _TUPLES:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list")
        return tuple(value)
    if kind == "bool":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return None if value in ("", None) else str(value)


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("pithnode")) / "pithnode.toml"


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
                **overrides: Any) -> Config:
    """Defaults < TOML file (`path`, $PITHNODE_CONFIG, or the user config dir) < env < overrides."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    explicit = path or env.get(ENV_PREFIX + "CONFIG")
    file = Path(explicit) if explicit else default_config_path()
    if explicit or file.exists():
        try:
            with open(file, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {file}") from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {file}: {exc}") from exc
        for key, value in raw.items():
            if key not in _TYPES:
                raise ConfigError(f"{file}: unknown key {key!r}")
            values[key] = value
    for name in _TYPES:
        if name == "registry_keys":
            continue
        if (v := env.get(ENV_PREFIX + name.upper())) is not None:
            values[name] = v
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = replace(Config(), **{k: _coerce(k, v) for k, v in values.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad configuration value: {exc}") from exc
    if not 0 <= cfg.http_workers <= 64:
        raise ConfigError("http_workers must be between 0 and 64")
    if cfg.durability not in ("full", "normal"):
        raise ConfigError("durability must be 'full' or 'normal'")
    check_listen(cfg.listen)
    for name, urls in (("public_url (--public-url)", [cfg.public_url] if cfg.public_url else []),
                       ("mirrors (--mirror)", cfg.mirrors), ("peers (--peer)", cfg.peers)):
        for url in urls:
            if not is_http_url(url):
                raise ConfigError(f"{name}: {url!r} is not an http(s) URL with a host")
    return cfg


def check_listen(listen: str) -> None:
    """`host:port` (port 0-65535; 0 lets the OS pick) or `unix:PATH`, else ConfigError:
    an out-of-range port would otherwise wrap around silently (99999 -> 34463)."""
    if listen.startswith("unix:"):
        return
    host, sep, port = listen.rpartition(":")
    if not (sep and host.strip("[]") and port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ConfigError(f"listen (--listen): {listen!r} is not host:port with a port from 0 to 65535")


def is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
