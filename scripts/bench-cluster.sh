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
# One process: wall and CPU from its own summary (the page cache is warm for every run).
single=$("$millrace" sort data/in.dat data/sorted.dat --force --json)
check
read -r single_wall single_cpu < <(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print(d["wall_ms"] / 1e3, d["cpu_s"])' "$single")
echo "| run | wall s | throughput ÷ one process | CPU s/GB | submit → first subtask ms |"
echo "|---|--:|--:|--:|--:|"
awk -v w="$single_wall" -v c="$single_cpu" -v b="$bytes" 'BEGIN {printf "| millrace sort (one process) | %.2f | 1.00 | %.2f | – |\n", w, c / (b / 1e9)}'
for workers in 1 2 4; do
  "$millrace" cluster up --workers "$workers" >/dev/null
  "$millrace" submit terasort.toml --wait --force >/dev/null 2>&1
  check
  id=$("$millrace" jobs --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])')
  "$millrace" status "$id" --json | python3 -c "
import json, sys
d = json.load(sys.stdin)
r = d['report']
wall = d['duration_ms'] / 1e3  # placement to the coordinator's record of the end
cpu = r['summary'].get('cpu_seconds', 0)
print('| cluster, $workers workers | %.2f | %.2f | %.2f | %.1f |' % (wall, $single_wall / wall, cpu / ($bytes / 1e9), r['submit_to_first_subtask_ms']))"
  "$millrace" cluster down >/dev/null
done
rm -rf "$dir/data"
