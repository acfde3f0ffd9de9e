#!/usr/bin/env bash
# A ttm hook that pings a Healthchecks-style monitor (healthchecks.io,
# its self-hosted version, or anything with the same URLs): `<url>/start`
# when a transaction starts, `<url>` when it commits, `<url>/fail` when it
# fails, stalls or runs past its deadline. The monitor alerts when the
# success ping does not come in time.
#
# The URL (e.g. https://hc-ping.com/<uuid>): $TTM_HC_URL, else the first
# line of `healthchecks.url` beside the hook.
#
# Install it under each name it answers:
#   for h in on-start on-commit on-fail on-stalled on-overdue; do
#     ln -s "$PWD/examples/hooks/healthchecks.sh" "$TETRA_DIR/backup/hooks/$h"
#   done
set -euo pipefail

here=$(dirname "$0")
url=${TTM_HC_URL:-}
if [[ -z "$url" && -r "$here/healthchecks.url" ]]; then
  read -r url <"$here/healthchecks.url" || true
fi
if [[ -z "$url" ]]; then
  echo "healthchecks.sh: no URL: set TTM_HC_URL or write it to $here/healthchecks.url" >&2
  exit 2
fi

case "${TTM_HOOK:-}" in
  on-start) ping="$url/start" ;;
  on-commit) ping="$url" ;;
  on-fail | on-stalled | on-overdue) ping="$url/fail" ;;
  *) exit 0 ;; # installed under a name it does not answer: nothing to say
esac
# The event line goes along as the ping's body (shown in the monitor's log).
curl --fail --silent --show-error --max-time 10 --retry 3 \
  --data-binary @- "$ping" >/dev/null
