"""Encryption of a peer session's frames (libsodium, through PyNaCl's bindings; no I/O).

The signed HELLOs (:mod:`agent.peers.wire`) each carry a fresh X25519 public
key. Both kiosks derive a pair of one-direction keys from the two (libsodium
``crypto_kx``: initiator = client, responder = server), bound to the session
id, and every later frame's payload travels in a ``crypto_secretstream``
(XChaCha20-Poly1305): confidentiality against a listener on the station LAN,
forward secrecy (the X25519 keys live only as long as the connection), and a
stream that refuses reordered, replayed or dropped messages on its own. The
first sealed payload in each direction starts with the stream's 24-byte header.

Frames stay signed by the sending kiosk over the ciphertext, so a forged frame
is refused before anything is decrypted.
"""

from __future__ import annotations

import hashlib

from nacl import bindings as sodium
from nacl.exceptions import CryptoError

KX_LEN = sodium.crypto_kx_PUBLIC_KEY_BYTES
_HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_TAG = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


class ChannelError(ValueError):
    """A sealed payload did not decrypt (altered, replayed, reordered or foreign)."""


class KxKeys:
    """A connection's ephemeral X25519 key pair (never stored, never sent but the public half)."""

    def __init__(self) -> None:
        self.public, self._secret = sodium.crypto_kx_keypair()

    def channel(self, peer_public: bytes, *, initiator: bool, session: bytes) -> Channel:
        """The session's channel once the peer's public key is known."""
        if len(peer_public) != KX_LEN:
            raise ChannelError("peer key exchange key has the wrong length")
        try:
            if initiator:
                rx, tx = sodium.crypto_kx_client_session_keys(
                    self.public, self._secret, peer_public)
            else:
                rx, tx = sodium.crypto_kx_server_session_keys(
                    self.public, self._secret, peer_public)
        except CryptoError as exc:
            raise ChannelError("unusable peer key exchange key") from exc
        return Channel(_bind(tx, session), _bind(rx, session))


def _bind(key: bytes, session: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=32, key=session, person=b"kesp-peer-chan").digest()


class Channel:
    """Both directions of one session: :meth:`seal` what we send, :meth:`open` what we get."""

    def __init__(self, tx_key: bytes, rx_key: bytes) -> None:
        self._tx_key, self._rx_key = tx_key, rx_key
        self._tx: sodium.crypto_secretstream_xchacha20poly1305_state | None = None
        self._rx: sodium.crypto_secretstream_xchacha20poly1305_state | None = None

    def seal(self, plain: bytes) -> bytes:
        """Encrypt the next outgoing payload (the first one carries the stream header)."""
        prefix = b""
        if self._tx is None:
            self._tx = sodium.crypto_secretstream_xchacha20poly1305_state()
            prefix = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._tx,
                                                                            self._tx_key)
        return prefix + sodium.crypto_secretstream_xchacha20poly1305_push(self._tx, plain,
                                                                          None, _TAG)

    def open(self, sealed: bytes) -> bytes:
        """Decrypt the next incoming payload; :class:`ChannelError` if it is not the next one."""
        try:
            if self._rx is None:
                if len(sealed) < _HEADER:
                    raise ChannelError("first sealed payload shorter than the stream header")
                state = sodium.crypto_secretstream_xchacha20poly1305_state()
                sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, sealed[:_HEADER],
                                                                       self._rx_key)
                self._rx, sealed = state, sealed[_HEADER:]
            plain, _tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._rx, sealed)
        except (CryptoError, ValueError, TypeError) as exc:
            raise ChannelError("sealed payload does not decrypt") from exc
        return bytes(plain)
