# Shared by run.sh (sort peers) and jobs.sh (batch-job peers), which use one venv under
# $MILLRACE_PEERS_DIR: the exact pins (one place, so neither script reinstalls the other's
# versions), skip lines, pip, the venv and the Java check. Sourced after `peer` is set.

dir=${MILLRACE_PEERS_DIR:-$HOME/.cache/millrace-peers}
py=$dir/venv/bin/python
logs=$dir/logs

DUCKDB=duckdb==2.0.1
POLARS=polars==2.1.0
PYSPARK=pyspark==4.3.0
FLINK=apache-flink-libraries==2.3.0
PY4J=py4j==0.10.9.9
DATAFUSION=datafusion==55.0.0
PYARROW=pyarrow==26.0.1
NUMPY=numpy==2.4.6

# One line "PEER: skipped — WHY: HOW TO FIX" on stderr, exit 3.
skip() {
  echo "$peer: skipped — $*" >&2
  exit 3
}

pip_install() { # LOG_NAME PACKAGE… : installs into the venv, or skips naming the step
  local log=$logs/$1.log
  shift
  if ! "$dir/venv/bin/pip" install --disable-pip-version-check --no-input "$@" >"$log" 2>&1; then
    skip "pip install $* failed (is PyPI reachable? log: $log): fix and rerun"
  fi
}

setup_venv() {
  command -v python3 >/dev/null 2>&1 || skip "python3 not found: apt-get install python3 python3-venv"
  if [ ! -x "$py" ] || ! "$py" -c '' 2>/dev/null; then
    rm -rf "$dir/venv"
    if ! python3 -m venv "$dir/venv" >"$logs/venv.log" 2>&1; then
      rm -rf "$dir/venv"
      skip "python3 -m venv failed (log: $logs/venv.log): apt-get install python3-venv"
    fi
  fi
}

setup_java() { # [javac] : java 17 or newer (and javac when asked)
  command -v java >/dev/null 2>&1 || skip "java not found: apt-get install openjdk-17-jdk-headless"
  if [ "${1:-}" = javac ]; then
    command -v javac >/dev/null 2>&1 || skip "javac not found: apt-get install openjdk-17-jdk-headless"
  fi
  local version
  version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  if [ -z "$version" ] || [ "$version" -lt 17 ]; then
    skip "java 17 or newer needed, found ${version:-an unknown version}: apt-get install openjdk-17-jdk-headless"
  fi
}
