#!/usr/bin/env bash
# Installs what the browser test of the built book needs, when it is missing:
#   - Debian's chromium (the test drives it through Playwright; Playwright's own browser download is not used);
#   - a local copy of MathJax 3 from the npm registry, served in place of the CDN so the test runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=.cache/browser

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium (Debian package) for the browser test"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing and cannot be installed here; the browser test will be skipped" >&2
    fi
fi

if [ ! -f "$cache/node_modules/mathjax/es5/tex-mml-chtml.js" ]; then
    if command -v npm >/dev/null 2>&1; then
        echo "installing MathJax 3 into $cache for the browser test"
        npm install --silent --no-audit --no-fund --prefix "$cache" mathjax@3.2.2 >/dev/null
    else
        echo "npm is missing: MathJax cannot be served locally; the browser test will be skipped" >&2
    fi
fi
