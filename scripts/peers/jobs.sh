#!/usr/bin/env bash
# The peers of `millrace bench jobs`: the same batch queries (wordcount, groupby, join) run by
# DuckDB, Polars, DataFusion and Spark on the same files; see jobs.py for the queries.
#
#   scripts/peers/jobs.sh setup PEER                      install; prints one version line
#   scripts/peers/jobs.sh gen KIND OUT --rows N [--seed S] [--format csv|parquet]
#   scripts/peers/jobs.sh run PEER QUERY OUT --input PATH… [--memory-limit BYTES]
#   scripts/peers/jobs.sh compare A B [C…] [--json]        each with each; exit 1 on a difference
#                                                         (an output: a CSV file or a folder of parts)
#
# PEER: duckdb datafusion polars spark, or gen (only what `gen` and `compare` need: numpy,
# pyarrow; every peer's setup installs them too). KIND: text sales join. QUERY: wordcount
# groupby join. `run` prints one JSON line on stdout (peer, query, version, wall_s, rows_out, …);
# OUT is one CSV file with a header, sorted by the key.
#
# Same venv, logs and lock as run.sh: MILLRACE_PEERS_DIR (default ~/.cache/millrace-peers).
# PEER_HEAP sets Spark's driver heap when no --memory-limit is given (default 8g).
# When something cannot be installed (no java, no venv, a failed download), `setup` prints one
# line "PEER: skipped — WHY: HOW TO FIX" on stderr and exits 3; any other failure exits 1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat >&2 <<EOF
usage: $0 setup PEER | gen KIND OUT --rows N [--seed S] [--format csv|parquet]
       | run PEER QUERY OUT --input PATH... [--memory-limit BYTES] | compare A B [C...] [--json]
  (PEER: duckdb datafusion polars spark gen; KIND: text sales join; QUERY: wordcount groupby join)
EOF
  exit 2
}
[ $# -ge 1 ] || usage
action=$1
peer=${2:-}

# shellcheck source=common.sh
. "$here/common.sh"

# Installs the specs (NAME==VERSION) that are missing or at another version, in one pip run.
ensure() {
  local spec missing=()
  for spec in "$@"; do
    "$dir/venv/bin/pip" show "${spec%==*}" 2>/dev/null | grep -qx "Version: ${spec#*==}" ||
      missing+=("$spec")
  done
  [ ${#missing[@]} -eq 0 ] || pip_install "pip-jobs-$peer" "${missing[@]}"
}

version_of() { # MODULE
  "$py" -c "import $1; print($1.__version__)"
}

setup() {
  case $peer in duckdb | datafusion | polars | spark | gen) ;; *) usage ;; esac
  mkdir -p "$dir" "$logs"
  # One setup at a time per folder (shared with run.sh): two benches must not pip into one venv.
  exec 9>"$dir/.lock"
  command -v flock >/dev/null 2>&1 && flock 9
  [ "$peer" = spark ] && setup_java
  setup_venv
  case $peer in
    duckdb) ensure "$NUMPY" "$PYARROW" "$DUCKDB" ;;
    datafusion) ensure "$NUMPY" "$PYARROW" "$DATAFUSION" ;;
    polars) ensure "$NUMPY" "$PYARROW" "$POLARS" ;;
    # run.sh installs pyspark without dependencies (it uses the jars only); the Python API
    # needs py4j as well.
    spark) ensure "$NUMPY" "$PYARROW" "$PYSPARK" "$PY4J" ;;
    gen) ensure "$NUMPY" "$PYARROW" ;;
  esac
  "$py" -c 'import numpy, pyarrow' 2>/dev/null ||
    skip "numpy or pyarrow does not import: rm -rf $dir/venv and rerun"
  case $peer in
    duckdb | datafusion | polars)
      "$py" -c "import $peer" 2>/dev/null || skip "$peer does not import: rm -rf $dir/venv and rerun"
      echo "$peer $(version_of "$peer")"
      ;;
    spark)
      "$py" -c "import pyspark, py4j" 2>/dev/null || skip "pyspark does not import: rm -rf $dir/venv and rerun"
      echo "Spark $(version_of pyspark) (pyspark, local[2]), $(java -version 2>&1 | head -n1)"
      ;;
    gen) echo "numpy $(version_of numpy), pyarrow $(version_of pyarrow)" ;;
  esac
}

[ -x "$py" ] || [ "$action" = setup ] || {
  echo "not set up; run: $0 setup ${peer:-gen}" >&2
  exit 1
}

case $action in
  setup)
    [ $# -eq 2 ] || usage
    setup
    ;;
  gen | compare)
    shift
    exec "$py" "$here/jobs.py" "$action" "$@"
    ;;
  run)
    [ $# -ge 4 ] || usage
    export SPARK_LOCAL_IP=127.0.0.1 POLARS_MAX_THREADS=${POLARS_MAX_THREADS:-$(nproc)}
    # The engine (and Spark's JVM) dies with this script rather than outliving it.
    die=()
    command -v setpriv >/dev/null 2>&1 && die=(setpriv --pdeathsig KILL)
    exec "${die[@]}" "$py" "$here/jobs.py" "$@"
    ;;
  *) usage ;;
esac
