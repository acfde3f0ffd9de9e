# shellcheck shell=bash source-path=SCRIPTDIR
# flow_manager_ttm.sh — RAG's flow_* API on ttmd's `rag` module.
#
#   source /path/to/flow_manager_ttm.sh      (sources ttm.sh beside it)
#
# Flows are transactions of the module `rag` ($TETRA_DIR/rag/txns/), whose
# FSM is built into ttmd and enforced:
#
#   NEW → SELECT → ASSEMBLE → SUBMIT → APPLY → VALIDATE → DONE
#   ASSEMBLE → SELECT;  APPLY → FOLD;  VALIDATE → FOLD
#   FOLD → SUBMIT (a new iteration: iteration + 1) | DONE
#   commit (DONE) and fail (FAIL) from any stage that is not final
#
# Every function calls ttmctl with `--module rag` whatever TTM_MODULE says,
# and returns non-zero when the call failed (ttmctl's message on stderr).

if [ -z "${BASH_VERSION:-}" ]; then
    echo "flow_manager_ttm.sh: source this file from bash" >&2
    # shellcheck disable=SC2317 # exit only when executed rather than sourced
    return 1 2>/dev/null || exit 1
fi

if ! declare -F _ttm_ctl >/dev/null; then
    if [[ ${BASH_SOURCE[0]} == */* ]]; then
        # shellcheck source=./ttm.sh
        source "${BASH_SOURCE[0]%/*}/ttm.sh" || return
    else
        # shellcheck source=./ttm.sh
        source ttm.sh || return
    fi
fi

flow_active() { _ttm_ctl rag active; }

# get_active_flow_dir: the active flow's directory.
get_active_flow_dir() { _ttm_ctl rag dir; }

# generate_flow_id DESCRIPTION: an id of the form ttmd gives (a preview).
generate_flow_id() { generate_txn_id "$@"; }

# flow_create DESCRIPTION [AGENT]: creates a flow (target @local, agent
# `base` by default, as before), makes it the active one, gives it the
# fields the old wrapper started with (outcome null, artifacts/lessons/tags
# [], effort_minutes 0, token_usage 0, flow_type "inquiry") and prints only
# its id.
flow_create() {
    local _ttm_id
    if [[ $# -lt 1 || -z $1 ]]; then
        _ttm_usage flow_create "description required (usage: flow_create DESCRIPTION [AGENT])"
        return
    fi
    _ttm_id=$(_ttm_ctl rag create --target=@local --agent="${2:-base}" -- "$1") || return
    _ttm_ctl rag update --txn="$_ttm_id" -- '{"outcome":null,"artifacts":[],"lessons":[],"tags":[],"effort_minutes":0,"token_usage":0,"flow_type":"inquiry"}' || return
    printf '%s\n' "$_ttm_id"
}

flow_get_state() { _ttm_ctl rag state --txn="${1:-}"; }
flow_update_state() { _ttm_update rag flow_update_state "$@"; }
flow_transition() { _ttm_transition rag flow_transition "$@"; }
flow_add_evidence() { _ttm_add_ctx rag flow_add_evidence "$@"; }
flow_list_evidence() { _ttm_list_ctx rag "$@"; }
flow_init_evidence_vars() { _ttm_evidence_vars rag flow_init_evidence_vars "$@"; }
flow_list() { _ttm_ctl rag list --stage="${1:-}"; }
flow_status() { _ttm_ctl rag status --txn="${1:-}"; }

# flow_checkpoint STAGE [JSON] [ID]: moves the flow to STAGE, then merges
# JSON (an object; '' or {} for none) into its state.
flow_checkpoint() {
    if [[ $# -lt 1 || -z $1 ]]; then
        _ttm_usage flow_checkpoint "stage required (usage: flow_checkpoint STAGE [JSON] [ID])"
        return
    fi
    local _ttm_json=${2:-} _ttm_out _ttm_id=''
    _ttm_out=$(_ttm_ctl rag --json transition --txn="${3:-}" -- "$1") || return
    _ttm_moved rag "$_ttm_out" 2
    if [[ -n $_ttm_json && ! $_ttm_json =~ ^[[:space:]]*\{[[:space:]]*\}[[:space:]]*$ ]]; then
        # The id the transition acted on, even if another flow was
        # activated meanwhile.
        _ttm_json_str _ttm_id "$_ttm_out" 2 txn_id || _ttm_id=${3:-}
        _ttm_ctl rag update --txn="$_ttm_id" -- "$_ttm_json" || return
    fi
    return 0
}

# flow_resume ID|N: makes the flow (or the N-th one of flow_list, 1 = the
# oldest) the active one, shows its stage and sets its evidence variables.
flow_resume() {
    local _ttm_id=${1:-} _ttm_out _ttm_re _ttm_n=0 _ttm_stage='?'
    if [[ -z $_ttm_id ]]; then
        _ttm_usage flow_resume "usage: flow_resume ID|INDEX"
        return
    fi
    if [[ $_ttm_id =~ ^[0-9]+$ ]]; then
        _ttm_out=$(_ttm_ctl rag --json list) || return
        _ttm_re=$'\n''      "txn_id": "([^"\\]+)"'
        _ttm_id=''
        while [[ $_ttm_out =~ $_ttm_re ]]; do
            _ttm_out=${_ttm_out#*"${BASH_REMATCH[0]}"}
            _ttm_n=$((_ttm_n + 1))
            if ((_ttm_n == 10#$1)); then
                _ttm_id=${BASH_REMATCH[1]}
                break
            fi
        done
        if [[ -z $_ttm_id ]]; then
            printf 'flow_resume: no flow number %s (see flow_list)\n' "$1" >&2
            return 3
        fi
    fi
    _ttm_out=$(_ttm_ctl rag --json activate -- "$_ttm_id") || return
    _ttm_json_str _ttm_stage "$_ttm_out" 2 stage || true
    printf 'Resuming flow: %s\nCurrent stage: %s\n' "$_ttm_id" "$_ttm_stage"
    _ttm_evidence_vars rag flow_resume "$_ttm_id"
}

# flow_complete [ID] [--outcome X] [--lesson L]… [--artifact A]… [--tag T]…
#               [--effort N]
# Records the outcome (success, partial, abandoned, failed; default success)
# and effort_minutes, appends the lessons, artifacts and tags to the state's
# arrays, then ends the flow: success and partial commit it (DONE); failed
# and abandoned fail it (FAIL, last_error "flow failed" / "flow abandoned",
# plus the first lesson). The state is changed with compare-and-set on its
# seq, so items another script appends at the same time are not lost.
flow_complete() {
    local _ttm_id='' _ttm_outcome=success _ttm_effort='' _ttm_opt _ttm_q _ttm_i
    local _ttm_state _ttm_seq _ttm_patch _ttm_field _ttm_items _ttm_old _ttm_rc _ttm_try
    local _ttm_badge _ttm_msg _ttm_err
    local -a _ttm_lessons=() _ttm_artifacts=() _ttm_tags=()
    if [[ $# -gt 0 && $1 != -* ]]; then
        _ttm_id=$1
        shift
    fi
    while [[ $# -gt 0 ]]; do
        _ttm_opt=$1
        case $_ttm_opt in
            --outcome | -o | --lesson | -l | --artifact | -a | --tag | -t | --effort | -e)
                if [[ $# -lt 2 ]]; then
                    _ttm_usage flow_complete "$_ttm_opt needs a value"
                    return
                fi
                ;;
            *)
                _ttm_usage flow_complete "unknown option $_ttm_opt (usage: flow_complete [ID] [--outcome X] [--lesson L] [--artifact A] [--tag T] [--effort N])"
                return
                ;;
        esac
        case $_ttm_opt in
            --outcome | -o) _ttm_outcome=$2 ;;
            --lesson | -l) _ttm_lessons+=("$2") ;;
            --artifact | -a) _ttm_artifacts+=("$2") ;;
            --tag | -t) _ttm_tags+=("$2") ;;
            --effort | -e) _ttm_effort=$2 ;;
        esac
        shift 2
    done
    case $_ttm_outcome in
        success) _ttm_badge='✓' ;;
        partial) _ttm_badge='⚠' ;;
        abandoned) _ttm_badge='○' ;;
        failed) _ttm_badge='✗' ;;
        *)
            _ttm_usage flow_complete "outcome must be success, partial, abandoned or failed, not '$_ttm_outcome'"
            return
            ;;
    esac
    if [[ -n $_ttm_effort ]]; then
        if ! [[ $_ttm_effort =~ ^([0-9]{1,15})(\.[0-9]{1,15})?$ ]]; then
            _ttm_usage flow_complete "effort must be a number of minutes, not '$_ttm_effort'"
            return
        fi
        _ttm_effort=$((10#${BASH_REMATCH[1]}))${BASH_REMATCH[2]}
    fi

    # Read, merge, write only if nothing changed in between; retry if it did.
    for ((_ttm_try = 1; ; _ttm_try++)); do
        _ttm_state=$(_ttm_ctl rag --json state --txn="$_ttm_id") || return
        if [[ -z $_ttm_id ]]; then
            # Pin the flow: the active one may change under us.
            _ttm_json_str _ttm_id "$_ttm_state" 2 txn_id || {
                printf 'flow_complete: cannot read the flow id\n' >&2
                return 1
            }
        fi
        _ttm_json_num _ttm_seq "$_ttm_state" 2 seq || {
            printf 'flow_complete: cannot read the flow state\n' >&2
            return 1
        }
        _ttm_json_quote _ttm_q "$_ttm_outcome"
        _ttm_patch="{\"outcome\":$_ttm_q"
        for _ttm_field in lessons artifacts tags; do
            _ttm_items=''
            case $_ttm_field in
                lessons) set -- ${_ttm_lessons[@]+"${_ttm_lessons[@]}"} ;;
                artifacts) set -- ${_ttm_artifacts[@]+"${_ttm_artifacts[@]}"} ;;
                tags) set -- ${_ttm_tags[@]+"${_ttm_tags[@]}"} ;;
            esac
            [[ $# -gt 0 ]] || continue
            for _ttm_i in "$@"; do
                _ttm_json_quote _ttm_q "$_ttm_i"
                _ttm_items+=${_ttm_items:+,}$_ttm_q
            done
            _ttm_old=''
            _ttm_flow_array _ttm_old "$_ttm_state" "$_ttm_field"
            _ttm_patch+=",\"$_ttm_field\":[$_ttm_old${_ttm_old:+,}$_ttm_items]"
        done
        if [[ -n $_ttm_effort ]]; then
            _ttm_patch+=",\"effort_minutes\":$_ttm_effort"
        fi
        _ttm_patch+='}'
        _ttm_rc=0
        _ttm_err=$(_ttm_ctl rag update --txn="$_ttm_id" --expect-seq="$_ttm_seq" -- "$_ttm_patch" 2>&1 >/dev/null) || _ttm_rc=$?
        if ((_ttm_rc == 0)); then
            break
        fi
        # 5: another change came first; read again and merge again.
        if ((_ttm_rc != 5 || _ttm_try >= 20)); then
            printf '%s\n' "$_ttm_err" >&2
            return "$_ttm_rc"
        fi
    done

    case $_ttm_outcome in
        success | partial)
            _ttm_commit rag "$_ttm_id" || return
            ;;
        *)
            _ttm_msg="flow $_ttm_outcome"
            if [[ ${#_ttm_lessons[@]} -gt 0 ]]; then
                _ttm_msg+=": ${_ttm_lessons[0]}"
            fi
            _ttm_fail rag "$_ttm_id" "$_ttm_msg" || return
            ;;
    esac
    printf '\n%s Flow completed: %s\n  Outcome: %s\n' "$_ttm_badge" "$_ttm_id" "$_ttm_outcome"
    for _ttm_i in ${_ttm_lessons[@]+"${_ttm_lessons[@]}"}; do printf '  Lesson: %s\n' "$_ttm_i"; done
    for _ttm_i in ${_ttm_artifacts[@]+"${_ttm_artifacts[@]}"}; do printf '  Artifact: %s\n' "$_ttm_i"; done
    for _ttm_i in ${_ttm_tags[@]+"${_ttm_tags[@]}"}; do printf '  Tag: %s\n' "$_ttm_i"; done
    if [[ -n $_ttm_effort ]]; then printf '  Effort: %s minutes\n' "$_ttm_effort"; fi
    return 0
}

# _ttm_flow_array VAR STATE KEY: sets VAR to the items of the top-level
# array KEY in pretty-printed STATE, as raw JSON text (empty when the array
# is empty, missing or not an array, which is then replaced).
_ttm_flow_array() {
    local _ttm_fa_rest _ttm_fa_head=$'\n''  "'$3'": ['
    case $2 in
        *"$_ttm_fa_head"$'\n'*)
            _ttm_fa_rest=${2#*"$_ttm_fa_head"}
            _ttm_fa_rest=${_ttm_fa_rest%%$'\n''  ]'*}
            printf -v "$1" '%s' "$_ttm_fa_rest"
            ;;
        *) printf -v "$1" '%s' '' ;;
    esac
}

export -f flow_active get_active_flow_dir generate_flow_id flow_create flow_get_state \
    flow_update_state flow_transition flow_add_evidence flow_list_evidence \
    flow_init_evidence_vars flow_list flow_status flow_checkpoint flow_resume \
    flow_complete _ttm_flow_array
