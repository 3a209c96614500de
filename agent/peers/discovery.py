"""Where the station's peers are: addresses from provisioning.

Provisioning writes every kiosk's ``host:port`` into ``AgentConfig.peers``
(the same list on every kiosk of the station; a kiosk skips its own entry)
and the address this kiosk listens on into ``AgentConfig.peer_listen``.
mDNS discovery is not implemented (see docs/PEERS.md): identity never comes
from the address anyway, only from the handshake signature, so discovery
only decides whom to dial.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from agent.peers.parameters import DEFAULT_PORT
from agent.runtime.config import ConfigError


@dataclass(frozen=True, order=True)
class PeerAddress:
    """A TCP endpoint of a station peer."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(
    text: str, *, field: str = "peers", default_port: int | None = None
) -> PeerAddress:
    """Parse ``host:port`` or ``[v6]:port`` (``host`` alone with ``default_port``).

    Raises :class:`ConfigError` naming ``field`` when the text is not an address.
    """
    raw = text.strip()
    port_s = ""
    if raw.startswith("["):
        close = raw.find("]")
        host, rest = raw[1:close], raw[close + 1 :]
        if close < 0 or (rest and not rest.startswith(":")):
            raise ConfigError(f"{text!r} is not [v6]:port", field=field)
        port_s = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ConfigError(f"bad IPv6 address in {text!r}", field=field) from exc
    elif raw.count(":") == 1:
        host, port_s = raw.split(":")
    elif ":" in raw:
        raise ConfigError(f"{text!r}: write IPv6 addresses as [addr]:port", field=field)
    else:
        host = raw
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"{text!r} has no valid host", field=field)
    if not port_s:
        if default_port is None:
            raise ConfigError(f"{text!r} has no port", field=field)
        port_s = str(default_port)
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError(f"bad port in {text!r}", field=field)
    return PeerAddress(host=host, port=int(port_s))


def configured_peers(peers: tuple[str, ...], listen: PeerAddress) -> tuple[PeerAddress, ...]:
    """The addresses to dial: every configured peer except this kiosk's own listener."""
    out: list[PeerAddress] = []
    for i, text in enumerate(peers):
        addr = parse_address(text, field=f"peers[{i}]", default_port=DEFAULT_PORT)
        if addr == listen or addr in out:
            continue
        out.append(addr)
    return tuple(out)
