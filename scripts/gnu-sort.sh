#!/usr/bin/env bash
# Peer baseline: GNU sort on a gensort ASCII file (lines of 98 characters + \r\n), durable output.
# GNU sort orders whole lines bytewise (LC_ALL=C), which is key order for gensort ASCII records.
# Usage: scripts/gnu-sort.sh INPUT OUTPUT [THREADS]
# Prints the wall time in seconds; `millrace bench sort --ascii` runs the same command itself.
set -euo pipefail
input=$1 output=$2 threads=${3:-$(nproc)}
start=$(date +%s%N)
LC_ALL=C sort --parallel="$threads" -S 50% -o "$output" "$input"
sync "$output"
end=$(date +%s%N)
echo "gnu sort: $(( (end - start) / 1000000 )) ms"
millrace_bin=${MILLRACE:-target/release/millrace}
if [ -x "$millrace_bin" ]; then "$millrace_bin" validate "$output"; fi
