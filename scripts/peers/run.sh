#!/usr/bin/env bash
# The peers of `millrace bench sort --peers …`: installs what a peer needs, and runs one sort.
#
#   scripts/peers/run.sh setup PEER               install (venv, pip, javac); prints one version line
#   scripts/peers/run.sh run PEER INPUT OUTPUT    sort INPUT into OUTPUT once (after setup)
#
# Peers on gensort ASCII files (lines of 98 characters + \r\n; OUTPUT is a file):
#   gnu-sort  LC_ALL=C sort --parallel=CORES -S 50%
#   duckdb    COPY (… ORDER BY substr(line, 1, 10)) TO OUTPUT          (pip duckdb)
#   polars    scan_csv → sort(str.slice(0, 10)) → sink_csv, streaming  (pip polars)
# Peers on gensort binary files (OUTPUT is a folder of part files; concatenated in name order
# they are the sorted file: cat OUTPUT/part-* > sorted):
#   hadoop    java/HadoopTeraSort.java, local job runner  (Hadoop jars of pip pyspark)
#   spark     java/SparkTeraSort.java, local[2]            (pip pyspark)
#   flink     java/FlinkTeraSort.java, BATCH mode, p=2     (pip apache-flink-libraries)
#
# MILLRACE_PEERS_DIR holds the venv and the compiled classes (default ~/.cache/millrace-peers);
# the bench sets it to a folder that outlives it, so pip runs once. PEER_HEAP sets the JVMs'
# -Xmx (default 8g).
# When something cannot be installed (no java, no venv, a failed download), `setup` prints one
# line "PEER: skipped — WHY: HOW TO FIX" on stderr and exits 3; any other failure exits 1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  echo "usage: $0 setup PEER | run PEER INPUT OUTPUT (PEER: gnu-sort duckdb polars hadoop spark flink)" >&2
  exit 2
}
[ $# -ge 2 ] || usage
action=$1 peer=$2
case $peer in gnu-sort | duckdb | polars | hadoop | spark | flink) ;; *) usage ;; esac

# shellcheck source=common.sh
. "$here/common.sh"

# The venv's site-packages (where pip puts pyspark/jars and pyflink/lib).
site_packages() {
  "$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

jars_of() {
  case $1 in
    hadoop | spark) echo "$(site_packages)/pyspark/jars" ;;
    flink) echo "$(site_packages)/pyflink/lib" ;;
  esac
}

class_of() {
  case $1 in
    hadoop) echo HadoopTeraSort ;;
    spark) echo SparkTeraSort ;;
    flink) echo FlinkTeraSort ;;
  esac
}

# The compiled classes of a JVM peer, keyed by a hash of its sources and of the jars' names.
classes_of() {
  local hash
  hash=$(cat "$here/java/Splitters.java" "$here/java/$(class_of "$1").java" <(ls "$(jars_of "$1")") |
    sha256sum | cut -c1-16)
  echo "$dir/classes/$1-$hash"
}

setup() {
  mkdir -p "$dir" "$logs"
  # One setup at a time per folder: two benches must not pip into the same venv at once.
  exec 9>"$dir/.lock"
  command -v flock >/dev/null 2>&1 && flock 9
  case $peer in
    gnu-sort)
      local first
      first=$(sort --version 2>/dev/null | head -n1 || true)
      case $first in
        *"GNU coreutils"*) echo "$first" ;;
        *) skip "sort is not GNU sort (${first:-not found}): apt-get install coreutils" ;;
      esac
      ;;
    duckdb | polars)
      setup_venv
      local module=$peer spec
      spec=$([ "$peer" = duckdb ] && echo "$DUCKDB" || echo "$POLARS")
      "$py" -c "import $module" 2>/dev/null && [ "$("$py" -c "import $module; print($module.__version__)")" = "${spec#*==}" ] ||
        pip_install "pip-$peer" "$spec"
      echo "$peer $("$py" -c "import $module; print($module.__version__)")"
      ;;
    hadoop | spark | flink)
      setup_java javac
      setup_venv
      local spec jars classes
      spec=$([ "$peer" = flink ] && echo "$FLINK" || echo "$PYSPARK")
      # Only the jars are used (no Python API), so no dependencies.
      "$dir/venv/bin/pip" show "${spec%==*}" 2>/dev/null | grep -qx "Version: ${spec#*==}" ||
        pip_install "pip-$peer" --no-deps "$spec"
      jars=$(jars_of "$peer")
      [ -d "$jars" ] || skip "$spec has no $jars: reinstall it (rm -rf $dir/venv)"
      classes=$(classes_of "$peer")
      if [ ! -d "$classes" ]; then
        rm -rf "$classes.tmp"
        mkdir -p "$classes.tmp"
        javac -nowarn -d "$classes.tmp" -cp "$jars/*" \
          "$here/java/Splitters.java" "$here/java/$(class_of "$peer").java" >"$logs/javac-$peer.log" 2>&1 || {
          cat "$logs/javac-$peer.log" >&2
          echo "$peer: javac failed (log: $logs/javac-$peer.log)" >&2
          exit 1
        }
        mv "$classes.tmp" "$classes"
      fi
      local what
      case $peer in
        hadoop) what="Hadoop $(basename "$jars"/hadoop-client-api-*.jar .jar | sed 's/hadoop-client-api-//') (${spec})" ;;
        spark) what="Spark ${spec#*==}" ;;
        flink) what="Flink ${spec#*==}" ;;
      esac
      echo "$what, $(java -version 2>&1 | head -n1)"
      ;;
  esac
}

# JVM flags: the module openings Spark needs on Java 17 (harmless for the others), quiet logs.
jvm_flags=(
  "-Xmx${PEER_HEAP:-8g}" -XX:+UseParallelGC
  "-Dlog4j2.configurationFile=file:$here/log4j2.properties"
  "-Dlog4j.configurationFile=file:$here/log4j2.properties"
  -Djdk.reflect.useDirectMethodHandle=false -Dio.netty.tryReflectionSetAccessible=true
  --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.invoke=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED --add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/sun.nio.cs=ALL-UNNAMED
  --add-opens=java.base/sun.security.action=ALL-UNNAMED --add-opens=java.base/sun.util.calendar=ALL-UNNAMED
)

run() {
  [ $# -eq 2 ] || usage
  local input=$1 output=$2
  case $peer in
    gnu-sort)
      LC_ALL=C exec sort --parallel="$(nproc)" -S 50% -o "$output" "$input"
      ;;
    duckdb | polars)
      [ -x "$py" ] || { echo "$peer: not set up; run: $0 setup $peer" >&2; exit 1; }
      POLARS_MAX_THREADS=$(nproc) exec "$py" "$here/${peer}_sort.py" "$input" "$output"
      ;;
    hadoop | spark | flink)
      local jars classes tmp status=0
      jars=$(jars_of "$peer")
      classes=$(classes_of "$peer")
      [ -d "$classes" ] || { echo "$peer: not set up; run: $0 setup $peer" >&2; exit 1; }
      tmp=$output.tmp
      export SPARK_LOCAL_IP=127.0.0.1
      rm -rf "$output" "$tmp"
      mkdir -p "$tmp"
      # The JVM dies with this script (which dies with the bench) rather than outliving it.
      local die=()
      command -v setpriv >/dev/null 2>&1 && die=(setpriv --pdeathsig KILL)
      "${die[@]}" java "${jvm_flags[@]}" -cp "$classes:$jars/*" "$(class_of "$peer")" "$input" "$output" "$tmp" || status=$?
      rm -rf "$tmp"
      return "$status"
      ;;
  esac
}

case $action in
  setup) setup ;;
  run) shift 2 && run "$@" ;;
  *) usage ;;
esac
