#!/usr/bin/env bash
# System packages simlab needs outside pip. Idempotent: safe to run from CI and setup on every run.
#
# - wordnet-base: the WordNet 3.0 database (/usr/share/wordnet) behind the `wordnet` similarity
#   source (simlab/wordnet.py). We read it with NLTK's WordNetCorpusReader instead of calling
#   nltk.download() at run time, because build and test machines have no internet beyond the
#   package registries.
set -euo pipefail

WORDNET_DIR=${SIMLAB_WORDNET_DIR:-/usr/share/wordnet}

if [ -f "$WORDNET_DIR/data.noun" ] || [ -f "$WORDNET_DIR/lexnames" ]; then
  echo "system_deps: WordNet database present in $WORDNET_DIR"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system_deps: no apt-get; install Debian/Ubuntu's wordnet-base (or NLTK's 'wordnet' data)" \
       "by hand, or set SIMLAB_WORDNET_DIR" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

echo "system_deps: installing wordnet-base (WordNet 3.0 database) with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends wordnet-base
test -f "$WORDNET_DIR/data.noun" || { echo "system_deps: $WORDNET_DIR/data.noun still missing" >&2; exit 1; }
echo "system_deps: WordNet database installed in $WORDNET_DIR"
