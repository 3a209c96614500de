"""Optional mDNS / DNS-SD discovery of station peers (``AgentConfig.peer_mdns``).

Each kiosk announces ``<device_id>._kesp-peer._tcp.local.`` with its listen
port and a TXT record naming its station and kiosk id, and browses for the
others. An announcement only tells PeerSync whom to dial: an mDNS answer is
not authenticated, so identity still comes from the signed handshake alone.
A rogue announcing itself gets dialled and its handshake refused (reported as
``peer_rejected``); it cannot become a peer. Announcements for another
station, from kiosks not in the roll package, or beyond a small cap of
addresses are ignored.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Collection

import ifaddr
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from agent.peers.discovery import PeerAddress
from agent.peers.parameters import MAX_DIALERS

log = logging.getLogger(__name__)

SERVICE_TYPE = "_kesp-peer._tcp.local."
#: At most this many discovered addresses are passed on (a station has a handful of kits).
MAX_DISCOVERED = MAX_DIALERS
_RESOLVE_TIMEOUT_MS = 2000


def local_ipv4_addresses() -> list[str]:
    """Non-loopback IPv4 addresses of this machine (what a 0.0.0.0 listener is reachable on)."""
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                addr = ipaddress.IPv4Address(ip.ip)
                if not addr.is_loopback and not addr.is_link_local and str(addr) not in out:
                    out.append(str(addr))
    return out


class MdnsDiscovery:
    """Announce this kiosk and report same-station peers found on the local link.

    ``on_found(kiosk, address)`` is called from zeroconf's thread for every
    acceptable announcement (repeats included; the caller deduplicates).
    """

    def __init__(
        self,
        *,
        device_id: str,
        station_id: str,
        listen: PeerAddress,
        known_kiosks: Collection[str],
        on_found: Callable[[str, PeerAddress], None],
    ) -> None:
        self._me = device_id
        self._station = station_id
        self._listen = listen
        self._known = frozenset(known_kiosks)
        self._on_found = on_found
        self._seen: set[PeerAddress] = set()
        self._zc: Zeroconf | None = None
        self._info: ServiceInfo | None = None
        self._browser: ServiceBrowser | None = None

    def start(self) -> None:
        """Register our service and start browsing."""
        host = self._listen.host
        addresses = local_ipv4_addresses() if host in ("0.0.0.0", "") else [host]
        zc = Zeroconf(ip_version=IPVersion.V4Only)
        self._zc = zc
        self._info = ServiceInfo(
            SERVICE_TYPE,
            f"{self._me}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(a) for a in addresses],
            port=self._listen.port,
            properties={"station": self._station, "kiosk": self._me, "v": "1"},
            server=f"{self._me}.local.",
        )
        zc.register_service(self._info)
        self._browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_change])

    def stop(self) -> None:
        """Withdraw the announcement and stop browsing. Idempotent."""
        zc, self._zc = self._zc, None
        if zc is None:
            return
        if self._browser is not None:
            self._browser.cancel()
        if self._info is not None:
            zc.unregister_service(self._info)
        zc.close()

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        info = zeroconf.get_service_info(service_type, name, timeout=_RESOLVE_TIMEOUT_MS)
        if info is None or info.port is None:
            return
        props = info.properties
        station = (props.get(b"station") or b"").decode("utf-8", "replace")
        kiosk = (props.get(b"kiosk") or b"").decode("utf-8", "replace")
        if station != self._station or kiosk == self._me or kiosk not in self._known:
            log.debug("ignoring mDNS announcement %s (station %r, kiosk %r)", name, station, kiosk)
            return
        for host in info.parsed_addresses(IPVersion.V4Only):
            addr = PeerAddress(host, info.port)
            if addr not in self._seen:
                if len(self._seen) >= MAX_DISCOVERED:
                    log.warning("ignoring mDNS address %s: %d already known", addr, MAX_DISCOVERED)
                    continue
                self._seen.add(addr)
            self._on_found(kiosk, addr)
