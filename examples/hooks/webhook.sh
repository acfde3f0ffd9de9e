#!/usr/bin/env bash
# A ttm hook that POSTs the event as JSON to a webhook (Slack, Mattermost,
# a chat bridge, your own service) with curl.
#
# The URL: $TTM_WEBHOOK_URL, else the first line of `webhook.url` beside
# the hook (in the module's hooks/ directory). Keep that file private
# (chmod 600): a webhook URL is a secret.
#
# Install it under the names of the events to send, e.g.:
#   ln -s "$PWD/examples/hooks/webhook.sh" "$TETRA_DIR/deploy/hooks/on-commit"
# The body: {"text": "<one line for people>", "module", "txn_id", "stage",
# "event", "seq", "line": <the event's JSON line as logged>}.
set -euo pipefail

here=$(dirname "$0")
url=${TTM_WEBHOOK_URL:-}
if [[ -z "$url" && -r "$here/webhook.url" ]]; then
  read -r url <"$here/webhook.url" || true
fi
if [[ -z "$url" ]]; then
  echo "webhook.sh: no URL: set TTM_WEBHOOK_URL or write it to $here/webhook.url" >&2
  exit 2
fi

line=$(cat)
# Names, ids and stages are [A-Za-z0-9._@-]: safe inside JSON strings.
text="ttm ${TTM_MODULE}: ${TTM_EVENT} ${TTM_TXN_ID} (stage ${TTM_STAGE})"
printf '{"text":"%s","module":"%s","txn_id":"%s","stage":"%s","event":"%s","seq":%s,"line":%s}\n' \
  "$text" "$TTM_MODULE" "$TTM_TXN_ID" "$TTM_STAGE" "$TTM_EVENT" "${TTM_SEQ:-0}" "${line:-null}" |
  curl --fail --silent --show-error --max-time 10 --retry 2 \
    -H 'Content-Type: application/json' --data-binary @- "$url" >/dev/null
