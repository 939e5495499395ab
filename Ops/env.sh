# Sourced by the Ops scripts: toolchain on PATH and the release build's CPU flags.
export PATH="/opt/swift/usr/bin:$PATH"
# The binary kernels need popcnt and AVX2 (x86-64-v3); without a target CPU Swift emits neither and runs ~3× slower.
# The binary checks at start that the CPU it runs on has what these flags assume.
# BITFLEET_AVX2 compiles the AVX2 intrinsics tile of the XNOR kernel (Swift cannot compile those intrinsics without
# the target CPU, so the define travels with the flag).
if [ "$(uname -m)" = x86_64 ]; then
  BITFLEET_CPU_FLAGS=(-Xcc -march=x86-64-v3 -Xswiftc -DBITFLEET_AVX2)
else
  BITFLEET_CPU_FLAGS=()
fi
BITFLEET_RELEASE_FLAGS=(-c release "${BITFLEET_CPU_FLAGS[@]}")
# Tests are built for the same CPU as the release binary (so they test the kernels that ship) when this CPU has
# AVX2; on one without, they build portable and test the portable kernels.
if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  BITFLEET_TEST_FLAGS=("${BITFLEET_CPU_FLAGS[@]}")
else
  BITFLEET_TEST_FLAGS=()
fi
