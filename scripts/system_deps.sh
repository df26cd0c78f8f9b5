#!/usr/bin/env bash
# System packages simlab needs outside pip. Idempotent: safe to run from CI and setup on every run.
#
# - wordnet-base: the WordNet 3.0 database (/usr/share/wordnet) behind the `wordnet` similarity
#   source (simlab/similarity/wordnet.py). We read it with NLTK's WordNetCorpusReader instead of calling
#   nltk.download() at run time, because build and test machines have no internet beyond the
#   package registries. Required: the script fails without it.
# - chromium (optional): the headless browser of the MLflow UI test
#   (tests/test_sweep_run.py::test_mlflow_ui_in_a_headless_browser_shows_the_trials). Best effort:
#   where it cannot be installed the test skips with its reason. SIMLAB_NO_CHROMIUM=1 skips it here.
set -euo pipefail

WORDNET_DIR=${SIMLAB_WORDNET_DIR:-/usr/share/wordnet}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
}

if [ -f "$WORDNET_DIR/data.noun" ] || [ -f "$WORDNET_DIR/lexnames" ]; then
  echo "system_deps: WordNet database present in $WORDNET_DIR"
else
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "system_deps: no apt-get; install Debian/Ubuntu's wordnet-base (or NLTK's 'wordnet' data)" \
         "by hand, or set SIMLAB_WORDNET_DIR" >&2
    exit 1
  fi
  echo "system_deps: installing wordnet-base (WordNet 3.0 database) with apt-get"
  apt_update
  $SUDO apt-get install -y -qq --no-install-recommends wordnet-base
  test -f "$WORDNET_DIR/data.noun" || { echo "system_deps: $WORDNET_DIR/data.noun still missing" >&2; exit 1; }
  echo "system_deps: WordNet database installed in $WORDNET_DIR"
fi

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "system_deps: chromium present"
elif [ "${SIMLAB_NO_CHROMIUM:-0}" = "1" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system_deps: chromium not installed (optional: the headless MLflow UI test will skip)"
else
  echo "system_deps: installing chromium (optional, for the headless MLflow UI test) with apt-get"
  if (apt_update && $SUDO apt-get install -y -qq --no-install-recommends chromium); then
    echo "system_deps: chromium installed"
  else
    echo "system_deps: chromium could not be installed; the headless MLflow UI test will skip" >&2
  fi
fi
