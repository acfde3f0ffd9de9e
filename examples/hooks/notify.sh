#!/usr/bin/env bash
# A ttm hook that tells a person about an event: a desktop notification
# (notify-send) when there is a desktop session, else a line on the
# terminals of logged-in users (wall) when TTM_NOTIFY_WALL=1, else a bell
# and a line on stderr, which ttmd copies to its log (journal).
#
# Install it under the names of the events to hear about, e.g.:
#   ln -s "$PWD/examples/hooks/notify.sh" "$TETRA_DIR/backup/hooks/on-fail"
#   ln -s "$PWD/examples/hooks/notify.sh" "$TETRA_DIR/backup/hooks/on-stalled"
# ttmd gives the event's JSON line on stdin and TTM_EVENT, TTM_MODULE,
# TTM_TXN_ID, TTM_STAGE in the environment.
set -euo pipefail

line=$(cat)
# The failure's error text, without jq: "error":"..." (quotes left escaped).
error=$(sed -n 's/.*"error":"\(\([^"\\]\|\\.\)*\)".*/\1/p' <<<"$line")
title="ttm ${TTM_MODULE:-?}: ${TTM_EVENT:-event} ${TTM_TXN_ID:-?}"
body="stage ${TTM_STAGE:-?}${error:+: $error}"

if [[ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]] && command -v notify-send >/dev/null; then
  urgency=normal
  case "${TTM_EVENT:-}" in txn_fail | txn_stalled | txn_overdue) urgency=critical ;; esac
  notify-send --urgency="$urgency" --app-name=ttm "$title" "$body"
elif [[ "${TTM_NOTIFY_WALL:-0}" == 1 ]] && command -v wall >/dev/null; then
  printf '%s\n%s\n' "$title" "$body" | wall
else
  printf '\a%s: %s\n' "$title" "$body" >&2
fi
