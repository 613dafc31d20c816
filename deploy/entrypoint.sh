#!/bin/sh
# Entrypoint of the Understudy image: ROLE (or the first argument) picks what runs, then execs
# it so signals (docker stop: SIGTERM) reach the process and the request log is flushed.
#
#   gateway    (default)  understudy serve [ARGS...]
#   distiller             understudy distill schedule [ARGS...]
#   any other command     run as given, e.g. `understudy tasks` or `sh`
#
# Every setting comes from UNDERSTUDY_* variables (every one is listed in docs/settings.md).
set -eu

role="${ROLE:-gateway}"
if [ "$#" -gt 0 ]; then
    case "$1" in
        gateway | distiller)
            role="$1"
            shift
            ;;
        -*) ;;
        *) exec "$@" ;;
    esac
fi

case "$role" in
    gateway) exec understudy serve "$@" ;;
    distiller) exec understudy distill schedule "$@" ;;
    *)
        echo "entrypoint: unknown ROLE '$role' (use gateway or distiller)" >&2
        exit 64
        ;;
esac
