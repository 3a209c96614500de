# The CPU the kiosk's Numba cache is compiled for, sourced by build-rootfs.sh
# (build time) and written into the unit's drop-in by customize.sh (run
# time), so both use the same key. Numba keys its cache on the LLVM CPU name
# AND feature string; these are exactly what LLVM 20 reports on the board
# (tests/images/test_numba_target.py checks them under qemu-user with the
# board's /proc/cpuinfo).
# Raspberry Pi 4 (BCM2711, Cortex-A72: no crypto extensions).
KESP_PI4_CPU=cortex-a72
KESP_PI4_FEATURES=-aes,+crc,+fp-armv8,+neon,-rand,-sha2,-sve
# amd64 test image: the 128-bit x86 baseline with hardware popcount.
KESP_X86_64_V2_FEATURES=+cx16,+popcnt,+sahf,+sse3,+sse4.1,+sse4.2,+ssse3
