#!/usr/bin/env bash
# The cluster against one process, on this machine: TeraSort of the same input by
# `millrace sort` (one process), then submitted to local clusters of 1, 2 and 4 workers
# (`millrace cluster up`), each run validated. Prints a Markdown table: wall seconds, the
# cluster's throughput as a share of the single process's, CPU seconds per GB, and the
# submission → first subtask latency.
#
#   scripts/bench-cluster.sh [RECORDS] [DIR]     # default 40M (4 GB) in bench-data/cluster
#
# Needs 2 × the input free in DIR. MILLRACE (default: the release binary) is the binary used.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-40M}
dir=${2:-bench-data/cluster}
millrace=${MILLRACE:-$PWD/target/release/millrace}
[ -x "$millrace" ] || cargo build --release -q
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
export MILLRACE_HOME="$dir/home"
"$millrace" cluster down >/dev/null 2>&1 || true
cd "$dir"
rm -rf data && mkdir -p data
checksum=$("$millrace" gen --json "$records" data/in.dat | python3 -c 'import json,sys; print(json.load(sys.stdin)["checksum"])')
bytes=$(stat -c %s data/in.dat)
cat > terasort.toml <<'SPEC'
name = "terasort"
[[step]]
name = "records"
source = { records = { path = "data/in.dat" } }
[[step]]
name = "sorted"
sort = { by = ["key"] }
[[step]]
name = "out"
sink = { records = { path = "data/sorted.dat" } }
SPEC
check() {
  "$millrace" validate --json data/sorted.dat | python3 -c "
import json, sys
d = json.load(sys.stdin)
assert d['ordered'] and d['checksum'] == '$checksum', d"
}
# One process right before each cluster run (the same page-cache state; `sync` first so
# that no run pays for the previous run's writeback). Every worker gets the memory the single
# process has (half the RAM): one job runs on one worker.
memory=$(awk '/MemTotal/ {printf "%d", $2 * 1024 / 2}' /proc/meminfo)
single() {
  sync
  "$millrace" sort data/in.dat data/sorted.dat --force --json --memory "$memory" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["wall_ms"] / 1e3, d["cpu_s"])'
  check
}
echo "| run | wall s | one process, s | throughput ÷ one process | CPU s/GB | submit → first subtask ms |"
echo "|---|--:|--:|--:|--:|--:|"
for workers in 1 2 4; do
  read -r single_wall single_cpu < <(single)
  "$millrace" cluster up --workers "$workers" --memory "$memory" >/dev/null
  sync
  "$millrace" submit terasort.toml --wait --force >/dev/null 2>&1
  check
  id=$("$millrace" jobs --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])')
  "$millrace" status "$id" --json | python3 -c "
import json, sys
d = json.load(sys.stdin)
r = d['report']
wall = d['duration_ms'] / 1e3  # placement to the coordinator's record of the end
cpu = r['summary'].get('cpu_seconds', 0)
print('| cluster, $workers workers | %.2f | %.2f | %.2f | %.2f | %.1f |' % (wall, $single_wall, $single_wall / wall, cpu / ($bytes / 1e9), r['submit_to_first_subtask_ms']))"
  "$millrace" cluster down >/dev/null
done
rm -rf "$dir/data"
