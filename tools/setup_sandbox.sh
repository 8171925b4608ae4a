#!/usr/bin/env bash
# Installs what the grading sandbox needs, when it is missing: Debian's bubblewrap (namespaces) and
# util-linux's setpriv (dropping to an unprivileged uid). Without them `tfcourse grade` refuses to grade
# (unless --unsafe) and the sandbox tests skip, saying why.
set -euo pipefail
if ! command -v bwrap >/dev/null 2>&1 || ! command -v setpriv >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing bubblewrap (Debian package) for the grading sandbox"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap util-linux >/dev/null
    else
        echo "bubblewrap is missing and cannot be installed here; the grading sandbox tests will be skipped" >&2
    fi
fi
