#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# test_sequence.sh — the original bash TTM test sequence, on the shims.
#
# Runs against whatever ttmd ttmctl reaches (TETRA_DIR, TTM_SOCKET; ttmctl
# starts one unless TTM_NO_AUTOSTART=1) and creates two transactions in the
# `ttm` module. Needs no jq. Exit 0 when every step passed.
#
#   TTMCTL=./target/release/ttmctl TETRA_DIR=$(mktemp -d) bash ttmctl/shell/test_sequence.sh
set -euo pipefail

# shellcheck source=./ttm.sh
source "$(dirname "${BASH_SOURCE[0]}")/ttm.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/ttm-seq.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
    printf '✗ %s\n' "$*" >&2
    exit 1
}

# field JSON KEY: the top-level string or number KEY of pretty-printed JSON.
field() {
    local re=$'\n''  "'$2'": "?([^"]*)"?'
    [[ $1 =~ $re ]] && printf '%s\n' "${BASH_REMATCH[1]%,}"
}

echo "1. ttm_init"
ttm_init
ttm_init # idempotent

echo "2. txn_create"
txn_id=$(txn_create "test deployment" "@staging" "ci-agent")
[[ $txn_id =~ ^test-deployment-[0-9]{8}T[0-9]{6}(-[0-9]+)?$ ]] || fail "unexpected id: $txn_id"

echo "3. txn_active"
active=$(txn_active)
[[ $active == "$txn_id" ]] || fail "active is $active, expected $txn_id"

echo "4. txn_state"
state=$(txn_state)
[[ $(field "$state" txn_id) == "$txn_id" ]] || fail "state has no txn_id $txn_id"
[[ $(field "$state" target) == "@staging" ]] || fail "target is not @staging"
[[ $(field "$state" agent) == "ci-agent" ]] || fail "agent is not ci-agent"

echo "5. txn_add_ctx"
echo "Test artifact content" >"$work/test-artifact.txt"
added=$(txn_add_ctx "$work/test-artifact.txt" artifact)
[[ $added == "Added context: 100_artifact.txt" ]] || fail "txn_add_ctx said: $added"
dir=$(txn_dir)
[[ -f $dir/ctx/100_artifact.txt ]] || fail "no $dir/ctx/100_artifact.txt"

echo "6. txn_list_ctx"
listing=$(txn_list_ctx)
[[ $listing == *$'\n100_artifact.txt'* ]] || fail "txn_list_ctx does not show 100_artifact.txt: $listing"

echo "7. init_evidence_vars"
init_evidence_vars
[[ ${e1:-} == "$dir/ctx/100_artifact.txt" && -f $e1 ]] || fail "e1 is '${e1:-}'"
[[ ${e_count:-} == 1 ]] || fail "e_count is ${e_count:-unset}"

echo "8. txn_transition SELECT"
txn_transition SELECT
[[ $(field "$(txn_state)" stage) == SELECT ]] || fail "stage is not SELECT"

echo "9. txn_transition ASSEMBLE, txn_resolve_tes"
txn_transition ASSEMBLE
txn_resolve_tes
[[ $(field "$(txn_state)" tes_plan) == staging.local ]] || fail "tes_plan is not staging.local"

echo "10. txn_status"
txn_status >/dev/null

echo "11. txn_list"
txn_list >/dev/null

echo "12. txn_transition EXECUTE, VALIDATE, txn_commit"
txn_transition EXECUTE
txn_transition VALIDATE
txn_commit
[[ $(field "$(txn_state "$txn_id")" stage) == DONE ]] || fail "stage is not DONE"

echo "13. txn_fail"
txn_id2=$(txn_create "test failure" "@local" "human")
txn_fail "$txn_id2" "Intentional test failure"
state2=$(txn_state "$txn_id2")
[[ $(field "$state2" stage) == FAIL ]] || fail "stage is not FAIL"
[[ $(field "$state2" last_error) == "Intentional test failure" ]] || fail "last_error is not the message"

echo "14. txn_events"
events=$(txn_events "$txn_id")
[[ $events == *'"event":"txn_start"'* ]] || fail "no txn_start event"
[[ $(txn_events "$txn_id" txn_commit) == *'"event":"txn_commit"'* ]] || fail "no txn_commit event"

echo "=== All steps passed ($txn_id, $txn_id2) ==="
