#!/usr/bin/env bash
# A script written for the ORIGINAL bash TTM, the way its README, QUICK_START
# and test suite used it: stage constants, `ttm fail "message"`,
# ttm_publish, `if txn_events …` as a grep, and the original's text outputs
# read with grep. Keep it unchanged: it is what exists in the wild. Only the
# path it sources (TTM_SH) and its scratch directory (WORK) come from the
# caller (tests/it/compat.rs).
# shellcheck disable=SC1090,SC2154 # sources $TTM_SH, which sets $e1
set -e

source "$TTM_SH"

ttm_init

txn_id=$(txn_create "deploy to staging" "@staging" "human")
[[ "$(txn_active)" == "$txn_id" ]]
[[ -d "$TTM_TXNS_DIR/$txn_id" ]]

echo "artifact" >"$WORK/app.tar.gz"
txn_add_ctx "$WORK/app.tar.gz" "artifact"
[[ -f "$(txn_dir)/ctx/100_artifact.tar.gz" ]]

txn_transition "$STAGE_SELECT"
txn_transition "$STAGE_ASSEMBLE"
txn_resolve_tes
txn_transition "$STAGE_EXECUTE"

init_evidence_vars
cp "$e1" "$WORK/deployed.tar.gz"
ttm_publish "deploy.uploaded" "$txn_id" "$e1"

if txn_events "$txn_id" "txn_fail"; then
    echo "unexpected failure event"
    exit 1
fi
txn_events "$txn_id" "deploy.uploaded" >/dev/null

txn_transition "$STAGE_VALIDATE"
txn_commit
txn_status "$txn_id" | grep -q "^Stage: DONE"
txn_list | grep -q "$txn_id  *DONE"

second=$(txn_create "broken deploy")
ttm fail "health check failed"
txn_state "$second" | grep -q '"last_error": "health check failed"'
txn_list "$STAGE_FAIL" | grep -q "^→ $second"

echo "legacy script done: $txn_id $second"
