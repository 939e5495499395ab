# Sourced by the Ops scripts: toolchain on PATH and the release build's CPU flags.
export PATH="/opt/swift/usr/bin:$PATH"
# The release build targets x86-64-v2 (POPCNT, SSE4.2: every x86-64 server CPU since 2009), so one binary runs on
# every server of a mixed fleet. The hot kernels are C with per-function target attributes (AVX2, AVX-512
# VPOPCNTDQ, VNNI, AMX) and are chosen at run time from what the CPU reports; Swift code gets `popcnt` from the flag
# (without a target CPU Swift emits no `popcnt` at all).
if [ "$(uname -m)" = x86_64 ]; then
  BITFLEET_CPU_FLAGS=(-Xcc -march=x86-64-v2)
else
  BITFLEET_CPU_FLAGS=()
fi
BITFLEET_RELEASE_FLAGS=(-c release "${BITFLEET_CPU_FLAGS[@]}")
# Tests are built with the release binary's flags (so they test what ships), and run every kernel path this CPU
# supports.
if grep -qw popcnt /proc/cpuinfo 2>/dev/null; then
  BITFLEET_TEST_FLAGS=("${BITFLEET_CPU_FLAGS[@]}")
else
  BITFLEET_TEST_FLAGS=()
fi
