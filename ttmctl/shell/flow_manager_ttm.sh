# shellcheck shell=bash source-path=SCRIPTDIR
# flow_manager_ttm.sh — RAG's flow_* API on ttmd's `rag` module.
#
#   source /path/to/flow_manager_ttm.sh      (finds and sources ttm.sh)
#
# Flows are transactions of the module `rag` ($TETRA_DIR/rag/txns/), whose
# FSM is built into ttmd and enforced:
#
#   NEW → SELECT → ASSEMBLE → SUBMIT → APPLY → VALIDATE → DONE
#   ASSEMBLE → SELECT;  APPLY → FOLD;  VALIDATE → FOLD
#   FOLD → SUBMIT (a new iteration: iteration + 1) | DONE
#   commit (DONE) and fail (FAIL) from any stage that is not final
#
# Every flow_* function calls ttmctl with `--module rag` whatever TTM_MODULE
# says, and returns non-zero when the call failed (ttmctl's message on
# stderr). As the original pointed the txn_* functions at the flows,
# sourcing this file sets TTM_MODULE=rag (exported) unless TTM_MODULE is
# already set and not empty, and then TTM_DIR=<TETRA_DIR>/rag and
# TTM_TXNS_DIR=<TETRA_DIR>/rag/txns unless the caller set those; it also
# defines the read-only STAGE_SUBMIT, STAGE_APPLY and STAGE_FOLD (each only
# when unset) besides ttm.sh's.
#
# ttm.sh is looked for, in this order, and must be the shims' ttm.sh:
#   1. beside this file, its symbolic links resolved (so a copy of or a link
#      to this file works when ttm.sh is beside the original);
#   2. $TTM_SRC/ttm.sh;
#   3. where ttmctl ($TTMCTL, else ttmctl on PATH) says: <bin>/../share/ttm/
#      (scripts/install.sh with PREFIX=<prefix>), <repo>/ttmctl/shell/ for a
#      <repo>/target/<profile>/ttmctl, then ~/.local/share/ttm/ (install.sh's
#      default);
#   4. each directory of PATH.

if [ -z "${BASH_VERSION:-}" ]; then
    echo "flow_manager_ttm.sh: source this file from bash" >&2
    # shellcheck disable=SC2317 # exit only when executed rather than sourced
    return 1 2>/dev/null || exit 1
fi

# _ttm_fm_find_ttm VAR: sets VAR to the shims' ttm.sh (see above), or
# prints what it tried and returns 1.
_ttm_fm_find_ttm() {
    local _ttm_ff_f=${BASH_SOURCE[0]} _ttm_ff_l _ttm_ff_c _ttm_ff_ctl _ttm_ff_d _ttm_ff_line _ttm_ff_n _ttm_ff_ok
    local -a _ttm_ff_try=() _ttm_ff_path=()
    # 1. Beside this file: as named, then with its links resolved.
    if [[ $_ttm_ff_f == */* ]]; then _ttm_ff_try+=("${_ttm_ff_f%/*}/ttm.sh"); else _ttm_ff_try+=("./ttm.sh"); fi
    while [[ -L $_ttm_ff_f ]]; do
        _ttm_ff_l=$(readlink -- "$_ttm_ff_f") || break
        if [[ $_ttm_ff_l == /* || $_ttm_ff_f != */* ]]; then _ttm_ff_f=$_ttm_ff_l; else _ttm_ff_f=${_ttm_ff_f%/*}/$_ttm_ff_l; fi
        if [[ $_ttm_ff_f == */* ]]; then _ttm_ff_try+=("${_ttm_ff_f%/*}/ttm.sh"); else _ttm_ff_try+=("./ttm.sh"); fi
    done
    # 2. $TTM_SRC.
    if [[ -n ${TTM_SRC:-} ]]; then _ttm_ff_try+=("$TTM_SRC/ttm.sh"); fi
    # 3. Where ttmctl is installed.
    _ttm_ff_ctl=${TTMCTL:-}
    if [[ -z $_ttm_ff_ctl ]]; then _ttm_ff_ctl=$(command -v ttmctl 2>/dev/null) || _ttm_ff_ctl=; fi
    if [[ $_ttm_ff_ctl == */* ]]; then
        while [[ -L $_ttm_ff_ctl ]]; do
            _ttm_ff_l=$(readlink -- "$_ttm_ff_ctl") || break
            if [[ $_ttm_ff_l == /* ]]; then _ttm_ff_ctl=$_ttm_ff_l; else _ttm_ff_ctl=${_ttm_ff_ctl%/*}/$_ttm_ff_l; fi
        done
        _ttm_ff_d=${_ttm_ff_ctl%/*}
        _ttm_ff_try+=("${_ttm_ff_d:-/}/../share/ttm/ttm.sh" "${_ttm_ff_d:-/}/../../ttmctl/shell/ttm.sh")
    fi
    if [[ -n ${HOME:-} ]]; then _ttm_ff_try+=("$HOME/.local/share/ttm/ttm.sh"); fi
    # 4. PATH.
    IFS=: read -r -a _ttm_ff_path <<<"${PATH:-}"
    for _ttm_ff_d in ${_ttm_ff_path[@]+"${_ttm_ff_path[@]}"}; do
        _ttm_ff_try+=("${_ttm_ff_d:-.}/ttm.sh")
    done
    for _ttm_ff_c in "${_ttm_ff_try[@]}"; do
        [[ -f $_ttm_ff_c && -r $_ttm_ff_c ]] || continue
        # Only the shims' ttm.sh (not the original bash TTM's): its header
        # says so within its first lines.
        _ttm_ff_n=0
        _ttm_ff_ok=
        while ((_ttm_ff_n < 5)) && IFS= read -r _ttm_ff_line; do
            _ttm_ff_n=$((_ttm_ff_n + 1))
            if [[ $_ttm_ff_line == *"thin calls of ttmctl"* ]]; then
                _ttm_ff_ok=1
                break
            fi
        done <"$_ttm_ff_c"
        if [[ -n $_ttm_ff_ok ]]; then
            printf -v "$1" '%s' "$_ttm_ff_c"
            return 0
        fi
    done
    printf 'flow_manager_ttm.sh: cannot find the TTM shims'"'"' ttm.sh; tried:\n' >&2
    printf '  %s\n' "${_ttm_ff_try[@]}" >&2
    printf 'put ttm.sh beside flow_manager_ttm.sh, set TTM_SRC to its directory, or install it (scripts/install.sh)\n' >&2
    return 1
}

if ! declare -F _ttm_ctl >/dev/null; then
    _ttm_fm_found=
    _ttm_fm_find_ttm _ttm_fm_found || {
        unset _ttm_fm_found
        unset -f _ttm_fm_find_ttm
        # shellcheck disable=SC2317 # exit only when executed rather than sourced
        return 1 2>/dev/null || exit 1
    }
    # shellcheck source=./ttm.sh
    source "$_ttm_fm_found" || {
        unset _ttm_fm_found
        # shellcheck disable=SC2317 # exit only when executed rather than sourced
        return 1 2>/dev/null || exit 1
    }
    unset _ttm_fm_found
fi
unset -f _ttm_fm_find_ttm

# The txn_* functions act on the flows, as in the original.
if [[ -z ${TTM_MODULE:-} ]]; then
    TTM_MODULE=rag
    export TTM_MODULE
fi
_ttm_set_vars
_ttm_stage_const SUBMIT
_ttm_stage_const APPLY
_ttm_stage_const FOLD

flow_active() { _ttm_ctl rag active; }

# get_active_flow_dir: the active flow's directory.
get_active_flow_dir() { _ttm_ctl rag dir; }

# generate_flow_id DESCRIPTION: an id of the form ttmd gives (a preview).
generate_flow_id() { generate_txn_id "$@"; }

# flow_create DESCRIPTION [AGENT]: creates a flow (target @local, agent
# `base` by default, as before), makes it the active one, gives it the
# fields the old wrapper started with (outcome null, artifacts/lessons/tags
# [], effort_minutes 0, token_usage 0, flow_type "inquiry"), prints the
# original's banner ("Flow created: ID", "Prompt: …", "Directory: …", next
# steps) on stderr and only the id on stdout, so that both `id=$(flow_create
# …)` and the original's `flow_create … | tail -n1` get the id.
flow_create() {
    local _ttm_id _ttm_dir
    if [[ $# -lt 1 || -z $1 ]]; then
        _ttm_usage flow_create "description required (usage: flow_create DESCRIPTION [AGENT])"
        return
    fi
    _ttm_id=$(_ttm_ctl rag create --target=@local --agent="${2:-base}" -- "$1") || return
    _ttm_ctl rag update --txn="$_ttm_id" -- '{"outcome":null,"artifacts":[],"lessons":[],"tags":[],"effort_minutes":0,"token_usage":0,"flow_type":"inquiry"}' || return
    _ttm_dir=$(_ttm_ctl rag dir --txn="$_ttm_id" 2>/dev/null) || _ttm_dir='?'
    {
        printf 'Flow created: %s\nPrompt: %s\nDirectory: %s\n\n' "$_ttm_id" "$1" "$_ttm_dir"
        printf 'Next steps:\n  1. Add evidence: /e add <file>\n  2. (Optional) Refine prompt: /p or /p "better question"\n'
        printf '  3. Assemble: /assemble\n  4. Submit: /submit @qa\n'
    } >&2
    printf '%s\n' "$_ttm_id"
}

# get_rag_dir [SCOPE]: RAG's directory, <TETRA_DIR>/rag (TETRA_DIR default
# ~/.tetra, or the tree TTM_DIR/TTM_TXNS_DIR name). The original's scopes —
# local ($PWD/.rag) and global ($TETRA_DIR/rag) — are one now: ttmd serves
# <TETRA_DIR>/<module>/txns only, so SCOPE is accepted and ignored. For
# flows per project, point TETRA_DIR at the project (TETRA_DIR=$PWD/.tetra).
get_rag_dir() {
    local _ttm_tree=''
    _ttm_root _ttm_tree || return
    _ttm_tree=${_ttm_tree:-${TETRA_DIR:-${HOME:-}/.tetra}}
    while [[ $_ttm_tree == */ && $_ttm_tree != / ]]; do _ttm_tree=${_ttm_tree%/}; done
    printf '%s/rag\n' "${_ttm_tree%/}"
}

# get_flows_dir [SCOPE]: where the flows' directories are: $(get_rag_dir)/txns
# (the original's …/flows: flows are transactions of the module rag now).
get_flows_dir() {
    local _ttm_rag
    _ttm_rag=$(get_rag_dir "$@") || return
    printf '%s/txns\n' "$_ttm_rag"
}

flow_get_state() { _ttm_ctl rag state ${1:+"--txn=$1"}; }
flow_update_state() { _ttm_update rag flow_update_state "$@"; }
flow_transition() { _ttm_transition rag flow_transition "$@"; }
flow_add_evidence() { _ttm_add_ctx rag flow_add_evidence "$@"; }
flow_list_evidence() { _ttm_list_ctx rag "$@"; }
flow_init_evidence_vars() { _ttm_evidence_vars rag flow_init_evidence_vars "$@"; }
# flow_list [STAGE]: the original's numbered list ("→ 1. <id>  <stage>
# <description>", → marking the active flow, oldest first), N being what
# flow_resume N takes.
flow_list() { _ttm_list rag flow_list "${1:-}"; }

# flow_list_all: the original listed the local flows, then the global ones;
# there is one tree now (see get_rag_dir), listed once after a blank line.
flow_list_all() {
    printf '\n'
    flow_list ""
}

# flow_status [ID]: the original's summary of a flow (its fields, then the
# directories).
flow_status() {
    local _ttm_st _ttm_id='?' _ttm_active='' _ttm_v _ttm_x _ttm_rag
    _ttm_st=$(_ttm_ctl rag --json state ${1:+"--txn=$1"}) || return
    _ttm_json_str _ttm_id "$_ttm_st" 2 txn_id || true
    _ttm_active=$(_ttm_ctl rag active 2>/dev/null) || _ttm_active=''
    if [[ $_ttm_active == "$_ttm_id" ]]; then
        printf 'Flow: %s (active)\n' "$_ttm_id"
    else
        printf 'Flow: %s\n' "$_ttm_id"
    fi
    for _ttm_v in Description:description Stage:stage Iteration:iteration Agent:agent Target:target \
        'Context digest:ctx_digest' 'Last updated:last_checkpoint'; do
        _ttm_x=none
        _ttm_json_str _ttm_x "$_ttm_st" 2 "${_ttm_v#*:}" || _ttm_json_num _ttm_x "$_ttm_st" 2 "${_ttm_v#*:}" || true
        if [[ ${_ttm_v#*:} == ctx_digest ]]; then _ttm_x=${_ttm_x:0:16}...; fi
        printf '%s %s\n' "${_ttm_v%%:*}:" "$_ttm_x"
    done
    _ttm_rag=$(get_rag_dir) || _ttm_rag='?'
    printf '\nDirectories:\n  RAG_DIR=%s\n  TXNS_DIR=%s/txns\n  flow=%s\n' "$_ttm_rag" "$_ttm_rag" "$_ttm_id"
}

# flow_inspect [ID]: flow_status, then the outcome, lessons, artifacts and
# tags recorded by flow_complete, and the ctx files (the original showed
# these "summaries" with flow_status ID true).
flow_inspect() {
    local _ttm_st _ttm_f _ttm_items _ttm_line _ttm_x
    flow_status "${1:-}" || return
    _ttm_st=$(_ttm_ctl rag --json state ${1:+"--txn=$1"}) || return
    printf '%s\n' '──────────────────────────────────────'
    _ttm_x=none
    _ttm_json_str _ttm_x "$_ttm_st" 2 outcome || true
    printf 'Outcome: %s\n' "$_ttm_x"
    for _ttm_f in lessons artifacts tags; do
        _ttm_items=''
        _ttm_flow_array _ttm_items "$_ttm_st" "$_ttm_f"
        [[ -n $_ttm_items ]] || continue
        printf '%s:\n' "${_ttm_f^}"
        while IFS= read -r _ttm_line; do
            _ttm_line=${_ttm_line#"${_ttm_line%%[! ]*}"}
            _ttm_line=${_ttm_line%,}
            [[ -n $_ttm_line ]] || continue
            if [[ $_ttm_line =~ ^\"(.*)\"$ ]]; then
                _ttm_json_unescape _ttm_line "${BASH_REMATCH[1]}"
            fi
            printf '  - %s\n' "$_ttm_line"
        done <<<"$_ttm_items"
    done
    _ttm_list_ctx rag "${1:-}"
}

# flow_promote [ID]: the original copied a project-local flow into the
# global tree. Every flow is in the one tree now (see get_rag_dir), so this
# only checks that the flow exists (exit 3 if not) and says where it is.
flow_promote() {
    local _ttm_dir
    _ttm_dir=$(_ttm_ctl rag dir ${1:+"--txn=$1"}) || return
    printf '✓ Flow is already global: %s\n  At: %s\n' "${_ttm_dir##*/}" "$_ttm_dir"
}

# flow_checkpoint STAGE [JSON] [ID]: moves the flow to STAGE, then merges
# JSON (an object; '' or {} for none) into its state.
flow_checkpoint() {
    if [[ $# -lt 1 || -z $1 ]]; then
        _ttm_usage flow_checkpoint "stage required (usage: flow_checkpoint STAGE [JSON] [ID])"
        return
    fi
    local _ttm_json=${2:-} _ttm_out _ttm_id=''
    _ttm_out=$(_ttm_ctl rag transition --print-move ${3:+"--txn=$3"} -- "$1") || return
    # Sets _ttm_id: the id the transition acted on, even if another flow
    # was activated meanwhile.
    _ttm_moved "$_ttm_out"
    if [[ -n $_ttm_json && ! $_ttm_json =~ ^[[:space:]]*\{[[:space:]]*\}[[:space:]]*$ ]]; then
        _ttm_id=${_ttm_id:-${3:-}}
        _ttm_ctl rag update ${_ttm_id:+"--txn=$_ttm_id"} -- "$_ttm_json" || return
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
        _ttm_state=$(_ttm_ctl rag --json state ${_ttm_id:+"--txn=$_ttm_id"}) || return
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

export -f get_rag_dir get_flows_dir flow_list_all flow_inspect flow_promote \
    flow_active get_active_flow_dir generate_flow_id flow_create flow_get_state \
    flow_update_state flow_transition flow_add_evidence flow_list_evidence \
    flow_init_evidence_vars flow_list flow_status flow_checkpoint flow_resume \
    flow_complete _ttm_flow_array
