#!/usr/bin/env bash
# One-command setup, tests and demo.
#
#   ./build.sh          setup: .venv with pinned deps, JVM jars via Maven, wheel + --py-files zip in dist/
#   ./build.sh test     setup (+ Chromium for the report test, from apt, when missing), then pytest (args go to it)
#   ./build.sh demo     setup, then the end-to-end demo (local broker -> stream -> Delta -> report)
#   ./build.sh lint     setup, then ruff
#   ./build.sh bench    setup, then the benchmarks in bench/
#   ./build.sh pack     setup, then dist/dsgd_env.tar.gz: a packed virtualenv for spark-submit --archives
#
# Idempotent: each step records a stamp (hash of its inputs) and is skipped when the stamp matches,
# so a second run makes no network request. Network is needed only for the first setup (PyPI and
# Maven Central).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
JARS="$ROOT/.jars"
PY="${PYTHON:-python3.11}"
MVN_SETTINGS="$ROOT/jvm/settings.xml"

say() { printf '[build] %s\n' "$*" >&2; }
die() { printf '[build] ERROR: %s\n' "$*" >&2; exit 1; }

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

check_tools() {
  command -v "$PY" >/dev/null 2>&1 || PY=python3
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' 2>/dev/null \
    || die "Python 3.11+ is required (found: $("$PY" --version 2>&1 || echo none)); install python3.11"
  command -v java >/dev/null 2>&1 || die "java not found: install a Java 17 JDK (e.g. apt-get install openjdk-17-jdk)"
  local jv
  jv="$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -1)"
  [[ -n "$jv" && "$jv" -ge 17 ]] || die "Java 17 or newer is required (found: ${jv:-unknown}); install openjdk-17-jdk"
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Apache Maven 3.8+ (e.g. apt-get install maven)"
}

setup_venv() {
  local stamp="$VENV/.dsgd-stamp" want
  want="$(hash_of requirements.txt pyproject.toml)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    say "python env up to date ($VENV)"
  else
    say "creating python env in $VENV"
    [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
  fi
}

# resolve_jars <pom folder> <target folder> [dedup]
resolve_jars() {
  local pomdir="$1" target="$2" dedup="${3:-}" stamp want
  stamp="$target/.dsgd-stamp"
  want="$(hash_of "$pomdir/pom.xml" "$MVN_SETTINGS")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    say "jars up to date ($target)"
    return
  fi
  say "resolving jars of $pomdir with Maven into $target"
  rm -rf "$target.tmp" && mkdir -p "$target.tmp"
  # Maven 3.8 prints colour resets even in batch mode: strip escape codes from what it says
  mvn -q -B -s "$MVN_SETTINGS" -f "$pomdir/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$target.tmp" 2>&1 | sed $'s/\x1b\\[[0-9;]*m//g' >&2 \
    || die "Maven could not resolve $pomdir/pom.xml (network needed on first setup)"
  if [[ -n "$dedup" ]]; then
    # drop jars whose artifact pyspark/jars already ships (any version)
    local pyjars
    pyjars="$("$VENV/bin/python" -c 'import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
    for jar in "$target.tmp"/*.jar; do
      local name
      name="$(basename "$jar" | sed -E 's/-[0-9][^-]*(-[A-Za-z0-9.]+)?\.jar$//')"
      if compgen -G "$pyjars/${name}-[0-9]*.jar" >/dev/null; then rm -f "$jar"; fi
    done
  fi
  rm -rf "$target" && mv "$target.tmp" "$target"
  echo "$want" > "$stamp"
  say "$(ls "$target" | wc -l) jars in $target"
}

build_dist() {
  local want stamp="$ROOT/dist/.dsgd-stamp"
  want="$(find dsgd streaming batch conf pyproject.toml requirements.txt -type f \( -name '*.py' -o -name '*.toml' \
          -o -name '*.template' -o -name '*.txt' \) -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    say "dist up to date"
    return
  fi
  say "building wheel and --py-files zip into dist/"
  rm -rf dist build && mkdir -p dist
  "$VENV/bin/python" -m build --wheel --no-isolation --outdir dist . >/dev/null 2>&1 \
    || "$VENV/bin/python" -m build --wheel --no-isolation --outdir dist .
  rm -rf build ./*.egg-info
  "$VENV/bin/python" -c 'from dsgd.ops.packaging import build_pyfiles_zip; build_pyfiles_zip(".", "dist/dsgd_pyfiles.zip")' 
  echo "$want" > "$stamp"
}

# A packed virtualenv (wheel + pinned deps) for spark-submit --archives on clusters whose nodes lack the
# Python dependencies. venv-pack refuses editable installs, so a separate env holds the wheel.
pack_env() {
  local penv="$ROOT/.venv-pack" out="$ROOT/dist/dsgd_env.tar.gz" stamp="$ROOT/dist/.pack-stamp" want whl
  whl="$(ls dist/dsgd_stream-*.whl | head -1)"
  want="$(hash_of requirements.txt pyproject.toml "$whl")"
  if [[ -f "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then say "packed env up to date ($out)"; return; fi
  say "packing the runtime env (wheel + pinned deps) for --archives into $out"
  rm -rf "$penv" "$out" && "$PY" -m venv "$penv"
  "$penv/bin/python" -m pip install -q --disable-pip-version-check "$whl"
  "$VENV/bin/venv-pack" -p "$penv" -o "$out"
  echo "$want" > "$stamp"
}

# The report test opens the page of `dsgd report` in a real headless browser: Chromium from Debian's
# packages, installed here (test mode only) when missing.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return
  command -v apt-get >/dev/null 2>&1 \
    || die "chromium not found and no apt-get to install it: install Chromium (Debian/Ubuntu: apt-get install chromium); the report test needs it"
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo -n"
  say "installing chromium (Debian package) for the report's browser test"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } >&2 \
    || die "could not install chromium with apt-get (root or sudo needed): run 'apt-get install chromium' and re-run; the report test needs it"
  command -v chromium >/dev/null 2>&1 || die "apt-get installed no 'chromium' command; the report test needs it"
}

setup() {
  check_tools
  setup_venv
  resolve_jars jvm/spark-extras "$JARS/spark" dedup
  resolve_jars jvm/kafka-broker "$JARS/kafka"
  build_dist
  say "setup done"
}

cmd="${1:-setup}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  setup) setup ;;
  test)
    setup
    ensure_chromium
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    exec "$VENV/bin/python" -m pytest "$@" ;;
  demo)
    setup
    exec "$VENV/bin/dsgd" demo "$@" ;;
  lint)
    setup
    exec "$VENV/bin/ruff" check . ;;
  pack)
    setup
    pack_env ;;
  bench)
    setup
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    for b in bench/bench_*.py; do say "running $b"; "$VENV/bin/python" "$b" "$@"; done ;;
  -h|--help|help) sed -n '2,13p' "$0" ;;
  *) die "unknown command '$cmd'; use one of: setup, test, demo, lint, bench, pack" ;;
esac
