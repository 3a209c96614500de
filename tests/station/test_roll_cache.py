"""The prepared gallery is cached encrypted, bound to the package and the kiosk."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
from nacl.signing import SigningKey

from agent.match import Matcher
from agent.roll.installed import GALLERY_CACHE, ROLL_FILE, load_roll
from agent.roll.package import Kiosk, build_package
from agent.runtime.keys import generate_keys
from hardware_sim.voters import make_roll


def _install(ref_data: Path, tmp_path: Path) -> tuple[Path, Path, SigningKey]:
    keys_dir, state = tmp_path / "keys", tmp_path / "state"
    keys = generate_keys(keys_dir)
    cec = SigningKey.generate()
    roll = make_roll(ref_data, "s-0001", "osh-city",
                     (Kiosk("kiosk-a", keys.verify_key_hex, keys.box_public_hex),),
                     extra_voters=20)
    state.mkdir()
    (state / ROLL_FILE).write_bytes(build_package(roll, cec))
    return keys_dir, state, cec


def test_second_start_loads_the_encrypted_cache(ref_data: Path, tmp_path: Path) -> None:
    from agent.runtime.keys import load_keys

    keys_dir, state, cec = _install(ref_data, tmp_path)
    keys, m = load_keys(keys_dir), Matcher()
    first = load_roll(state, keys, cec.verify_key, "s-0001", m)
    second = load_roll(state, keys, cec.verify_key, "s-0001", m)
    assert not first.from_cache and second.from_cache
    assert np.array_equal(first.owners, second.owners)
    probe = second.templates_of(3)[0]
    assert np.array_equal(first.gallery.scores(probe), second.gallery.scores(probe))
    cache = state / GALLERY_CACHE
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    raw = cache.read_bytes()
    # only the format marker and nonce are in clear: no cache or gallery header, no arrays
    assert raw.startswith(b"KESPGC02")
    assert b"KESPGAL1" not in raw and b"KESPGAL\x00" not in raw
    assert second.gallery.words.tobytes()[:4096] not in raw


def test_damaged_or_foreign_cache_is_rebuilt(ref_data: Path, tmp_path: Path) -> None:
    from agent.runtime.keys import load_keys

    keys_dir, state, cec = _install(ref_data, tmp_path)
    keys, m = load_keys(keys_dir), Matcher()
    load_roll(state, keys, cec.verify_key, "s-0001", m)
    cache = state / GALLERY_CACHE
    data = bytearray(cache.read_bytes())
    data[100] ^= 0xFF
    cache.write_bytes(bytes(data))
    rebuilt = load_roll(state, keys, cec.verify_key, "s-0001", m)
    assert not rebuilt.from_cache and len(rebuilt.gallery) == len(rebuilt.owners)
    assert load_roll(state, keys, cec.verify_key, "s-0001", m).from_cache
    # another package (a new roll version) never reuses the old roll's gallery
    roll = make_roll(ref_data, "s-0001", "osh-city",
                     (Kiosk("kiosk-a", keys.verify_key_hex, keys.box_public_hex),),
                     extra_voters=21)
    (state / ROLL_FILE).write_bytes(build_package(roll, cec))
    fresh = load_roll(state, keys, cec.verify_key, "s-0001", m)
    assert not fresh.from_cache and len(fresh.roll.voters) == 61


def test_the_cache_gives_way_to_the_stores_on_a_small_or_filling_disk(
        ref_data: Path, tmp_path: Path) -> None:
    """The cache only saves time: it never takes the room the stores need, and a disk
    that fills while it is written leaves neither a cache nor a temp file."""
    from agent.runtime.keys import load_keys
    from hardware_sim.powerfs import PowerFs

    PowerFs.check_available()
    keys_dir, state, cec = _install(ref_data, tmp_path)
    keys, m = load_keys(keys_dir), Matcher()
    with PowerFs(tmp_path / "backing", tmp_path / "disk") as fs:
        disk = tmp_path / "disk"
        (disk / ROLL_FILE).write_bytes((state / ROLL_FILE).read_bytes())
        roll = load_roll(disk, keys, cec.verify_key, "s-0001", m, write_cache=False)
        fs.quota(4 << 20)  # a 4 MB card: less free than the stores' reserve
        assert not roll.persist_cache(disk, keys, keep_free=16 << 20)
        fs.quota(0)
        fs.enospc(0)  # the disk fills as the cache is written
        assert not roll.persist_cache(disk, keys, keep_free=16 << 20)
        fs.enospc(None)
        assert sorted(p.name for p in disk.iterdir()) == [ROLL_FILE]
        assert roll.persist_cache(disk, keys, keep_free=16 << 20)
        assert load_roll(disk, keys, cec.verify_key, "s-0001", m).from_cache
