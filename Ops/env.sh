# Sourced by the Ops scripts: toolchain on PATH and the release build's CPU flags.
export PATH="/opt/swift/usr/bin:$PATH"
# The binary kernels need popcnt and AVX2 (x86-64-v3); without a target CPU Swift emits neither and runs ~3× slower.
# The binary checks at start that the CPU it runs on has what these flags assume.
if [ "$(uname -m)" = x86_64 ]; then
  BITFLEET_RELEASE_FLAGS=(-c release -Xcc -march=x86-64-v3)
else
  BITFLEET_RELEASE_FLAGS=(-c release)
fi
