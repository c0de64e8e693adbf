"""Check what `blockd run` would need of a valid configuration, before it runs.

The configuration's own validation (blockd.config) checks each value; this checks what
the values point at and how they fit together: the pinned trust policy reads and verifies,
every configured list is one the trust policy authorises, referenced files are readable,
the notice page builds, no two listeners claim one port, and an existing audit log is kept
under the configured origin and key name. Every problem is one line naming the setting, so
`check-config` reports them all at once.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from blockd import control
from blockd.audit import identity
from blockd.config import Config, ConfigError, TsigKeyError, read_tsig_key, split_endpoint
from blockd.dns import tlsconf
from blockd.feeds.model import TrustPolicy
from blockd.feeds.store import ListStore
from blockd.feeds.trust import TrustError, load_trust
from blockd.feeds.verify import Rejected, verify_list
from blockd.http.notice import NoticeError, NoticePage


def problems(config: Config) -> list[str]:
    """Return every problem `run` would meet with config, one line each ('path: what')."""
    return [
        *_trust(config),
        *_files(config),
        *_notice(config),
        *_listeners(config),
        *_control(config),
        *_audit_log(config),
        *_fleet(config),
        *_rpz(config),
        *_certificate(config),
    ]


def _certificate(config: Config) -> Iterator[str]:
    """Say whether the DoT/DoH certificate and key load together (the demo makes its own)."""
    e = config.dns.encrypted
    if not e.enabled or e.certificate is None or e.private_key is None:
        return
    try:
        tlsconf.server_context(e.certificate, e.private_key, tlsconf.DOT_ALPN)
    except (OSError, ssl.SSLError) as error:
        yield f"dns.encrypted.certificate: cannot use {e.certificate} with {e.private_key}: {error}"


def _trust(config: Config) -> Iterator[str]:
    try:
        trust = load_trust(
            config.trust.pinned, ListStore(config.state.dir).trust_updates(), datetime.now(UTC)
        )
    except TrustError as e:
        yield f"trust.pinned: {e}"
        return
    for i, cfg in enumerate(config.lists):
        authority = trust.authority(cfg.authority)
        if authority is None:
            yield (
                f"lists.{i}: authority {cfg.authority!r} is not in trust policy "
                f"v{trust.version} (it names: {', '.join(a.id for a in trust.authorities)})"
            )
        elif cfg.list not in authority.lists:
            yield (
                f"lists.{i}: {cfg.authority} may not publish list {cfg.list!r} under trust "
                f"policy v{trust.version} (it may publish: {', '.join(authority.lists)})"
            )


def _files(config: Config) -> Iterator[str]:
    wanted: list[tuple[str, Path | None]] = [("admin.token_file", config.admin.token_file)]
    wanted += [(f"lists.{i}.ca_file", c.ca_file) for i, c in enumerate(config.lists)]
    for i, c in enumerate(config.lists):
        if c.source.startswith("file://"):
            wanted.append((f"lists.{i}.source", Path(c.source.removeprefix("file://"))))
    for path, file in wanted:
        if file is None:
            continue
        try:
            file.read_bytes()
        except OSError as e:
            yield f"{path}: cannot read {file}: {e.strerror or e}"


def _fleet(config: Config) -> Iterator[str]:
    """Say why the Redis password could not be used, if it could not."""
    if config.fleet is None:
        return
    try:
        config.fleet.password()
    except ConfigError as e:
        yield str(e)


def _notice(config: Config) -> Iterator[str]:
    try:
        NoticePage(config.http.notice)
    except NoticeError as e:
        yield f"http.notice: {e}"


def _audit_log(config: Config) -> list[str]:
    """Say where an existing audit log was kept under another origin or key name."""
    audit = config.audit
    if not audit.enabled:
        return []
    return identity.name_changes(audit.directory(config.state.dir), *audit.names())


def _listeners(config: Config) -> Iterator[str]:
    """Say where two listeners would claim one address and port (port 0 never clashes)."""
    claimed: list[tuple[str, str, str, int]] = []  # (setting, protocol, address, port)
    groups: list[tuple[str, list[str], tuple[str, ...]]] = [
        ("dns.listen", list(config.dns.listen), ("udp", "tcp")),
        ("http.listen", list(config.http.listen), ("tcp",)),
        ("http.tls_listen", list(config.http.tls_listen), ("tcp",)),
        ("admin.listen", list(config.admin.listen), ("tcp",)),
        ("dns.encrypted.dot_listen", list(config.dns.encrypted.dot_listen), ("tcp",)),
        ("dns.encrypted.doh_listen", list(config.dns.encrypted.doh_listen), ("tcp",)),
    ]
    if config.rpz.enabled:
        groups.append(("rpz.listen", list(config.rpz.listen), ("udp", "tcp")))
    if config.http.demo_origin:
        groups.append(("http.demo_origin", [config.http.demo_origin], ("tcp",)))
    for setting, endpoints, protocols in groups:
        for i, endpoint in enumerate(endpoints):
            host, port = split_endpoint(endpoint)
            if port == 0:
                continue
            name = f"{setting}.{i}" if setting != "http.demo_origin" else setting
            for protocol in protocols:
                for other, o_protocol, o_host, o_port in claimed:
                    if (o_protocol, o_port) == (protocol, port) and _overlap(host, o_host):
                        yield (
                            f"{name}: {endpoint} ({protocol}) is also claimed by {other}; "
                            "each listener needs its own port"
                        )
                        break
                claimed.append((name, protocol, host, port))


def _overlap(a: str, b: str) -> bool:
    """Say whether two bound addresses collide: the same, or one is a wildcard."""
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    return x == y or x.is_unspecified or y.is_unspecified


def _control(config: Config) -> Iterator[str]:
    """Say what would stop the control socket from being made (not a daemon running)."""
    path = config.admin.control_path(config.state.dir)
    setting = "admin.control_socket" if config.admin.control_socket else "state.dir"
    if len(os.fsencode(path)) > control.MAX_PATH - 12:
        yield (
            f"{setting}: the control socket {path} is too long for a Unix socket (at most "
            f"{control.MAX_PATH - 12} bytes); set admin.control_socket to a shorter path"
        )
    elif path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.lstat().st_mode)):
        yield f"{setting}: {path} exists and is not a socket; blockd will not replace it"


HASHED_NOT_SERVED = (
    "is a hashed (sha256) list: RPZ carries plaintext names, so a hashed list cannot be "
    "served; remove it from rpz.lists (it is still enforced by blockd itself)"
)


def _rpz(config: Config) -> Iterator[str]:
    """Say what would stop the RPZ zone from being served: its key, a hashed served list."""
    rpz = config.rpz
    if not rpz.enabled:
        return
    if rpz.tsig_key_file is not None:
        try:
            read_tsig_key(rpz.tsig_key_file)
        except TsigKeyError as e:
            yield f"rpz.tsig_key_file: {e}"
    try:
        store = ListStore(config.state.dir)
        trust = load_trust(config.trust.pinned, store.trust_updates(), datetime.now(UTC))
    except TrustError:
        return  # said under trust.pinned
    for i, ref in enumerate(rpz.lists):
        authority_id, _, list_id = ref.partition("/")
        authority = trust.authority(authority_id)
        if (authority is not None and set(authority.formats) == {"sha256"}) or stored_format(
            store, trust, authority_id, list_id
        ) == "sha256":
            yield f"rpz.lists.{i}: {ref} {HASHED_NOT_SERVED}"


def stored_format(store: ListStore, trust: TrustPolicy, authority: str, list_id: str) -> str | None:
    """Return the entry format of a list's enforced stored version, if it verifies."""
    version = store.state(authority, list_id).active
    if version is None:
        return None
    try:
        envelope, _ = store.load_version(authority, list_id, version)
        verified = verify_list(
            envelope, trust, datetime.now(UTC), expect=(authority, list_id), freshness=False
        )
    except (OSError, ValueError, Rejected):
        return None
    return verified.payload.format if verified is not None else None
