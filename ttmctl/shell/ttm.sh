# shellcheck shell=bash
# ttm.sh — the bash TTM API as thin calls of ttmctl.
#
#   source /path/to/ttm.sh          (bash 4.2 or newer)
#
# Every function of the original bash TTM keeps its name, argument order and
# output, but does its work by calling `ttmctl` (`$TTMCTL`, else `ttmctl` on
# PATH), so every change goes through ttmd: validated, serialised, durable.
# The functions never touch the tree themselves and need no jq.
#
# Unlike the original, each function returns non-zero when its call failed
# (ttmctl's exit code: 2 usage, 3 not found, 4 refused, 5 conflict, 7 no
# daemon, … — see `ttmctl --help`), with ttmctl's message on stderr, so
# `set -e` scripts stop where they should.
#
# Environment: TETRA_DIR, TTM_SOCKET, TTM_MODULE, TTM_NO_AUTOSTART are
# ttmctl's. TTM_DIR / TTM_TXNS_DIR from an old set-up are honoured when they
# follow the layout (TTM_DIR=<root>/ttm, TTM_TXNS_DIR=<root>/ttm/txns means
# TETRA_DIR=<root>); any other value is refused with a message, since ttmd
# serves only <TETRA_DIR>/<module>/txns.
#
# Sourcing defines functions (txn_*, ttm*, init_evidence_vars,
# generate_txn_id and helpers named _ttm_*) and exports them, as the original
# did, for child bash processes. Like the original it also sets (see
# docs/bash.md, "Variables"), keeping any value the caller already set:
#   TTM_SRC         the directory of this file (exported)
#   TTM_DIR         <TETRA_DIR>/<module> (exported; module: $TTM_MODULE or ttm)
#   TTM_TXNS_DIR    $TTM_DIR/txns (exported)
#   TTM_CONFIG_DIR  $TTM_DIR/config     TTM_LOGS_DIR  $TTM_DIR/logs
#   TTM_MODULE_DIR  the directory of this file, as in the original
#   STAGE_NEW … STAGE_FAIL  read-only stage names (each only when unset)
# and the bookkeeping _TTM_DERIVED_DIR / _TTM_DERIVED_TXNS_DIR (exported),
# which let the shims tell the TTM_DIR they derived from one a user set. It
# changes no shell option. init_evidence_vars sets e1…eN and exports
# e_count, as the original did; bash's own BASH_REMATCH is overwritten, as
# by any [[ =~ ]].

if [ -z "${BASH_VERSION:-}" ]; then
    echo "ttm.sh: source this file from bash" >&2
    # shellcheck disable=SC2317 # exit only when executed rather than sourced
    return 1 2>/dev/null || exit 1
fi

# ---------------------------------------------------------------- helpers --
# Helpers that set a variable by name (printf -v) give their locals their
# own prefix, so no local can shadow the variable the caller named.

# _ttm_root VAR: sets VAR to the tree ttmctl must use when TTM_DIR or
# TTM_TXNS_DIR say where it is (empty: leave TETRA_DIR as it is). Returns 2
# with a message when they point outside the layout ttmd serves. Values the
# shims derived themselves at source time are not the user's: ignored.
_ttm_root() {
    local _ttm_rt_d=${TTM_DIR:-} _ttm_rt_t=${TTM_TXNS_DIR:-} _ttm_rt_r1='' _ttm_rt_r2='' _ttm_rt_e=${TETRA_DIR:-}
    if [[ -n $_ttm_rt_d && $_ttm_rt_d == "${_TTM_DERIVED_DIR:-}" ]]; then _ttm_rt_d=; fi
    if [[ -n $_ttm_rt_t && $_ttm_rt_t == "${_TTM_DERIVED_TXNS_DIR:-}" ]]; then _ttm_rt_t=; fi
    while [[ $_ttm_rt_d == */ && $_ttm_rt_d != / ]]; do _ttm_rt_d=${_ttm_rt_d%/}; done
    while [[ $_ttm_rt_t == */ && $_ttm_rt_t != / ]]; do _ttm_rt_t=${_ttm_rt_t%/}; done
    while [[ $_ttm_rt_e == */ && $_ttm_rt_e != / ]]; do _ttm_rt_e=${_ttm_rt_e%/}; done
    if [[ -n $_ttm_rt_d ]]; then
        case $_ttm_rt_d in
            ttm) _ttm_rt_r1=. ;;
            /ttm) _ttm_rt_r1=/ ;;
            */ttm) _ttm_rt_r1=${_ttm_rt_d%/ttm} ;;
            *)
                printf 'ttm.sh: TTM_DIR=%s does not follow the layout <TETRA_DIR>/ttm; ttmd serves <TETRA_DIR>/<module>/txns only: set TETRA_DIR to the root of the tree and unset TTM_DIR and TTM_TXNS_DIR\n' "$TTM_DIR" >&2
                return 2
                ;;
        esac
    fi
    if [[ -n $_ttm_rt_t ]]; then
        case $_ttm_rt_t in
            ttm/txns) _ttm_rt_r2=. ;;
            /ttm/txns) _ttm_rt_r2=/ ;;
            */ttm/txns) _ttm_rt_r2=${_ttm_rt_t%/ttm/txns} ;;
            *)
                printf 'ttm.sh: TTM_TXNS_DIR=%s does not follow the layout <TETRA_DIR>/ttm/txns; ttmd serves <TETRA_DIR>/<module>/txns only: set TETRA_DIR to the root of the tree and unset TTM_DIR and TTM_TXNS_DIR\n' "$TTM_TXNS_DIR" >&2
                return 2
                ;;
        esac
    fi
    if [[ -n $_ttm_rt_r1 && -n $_ttm_rt_r2 && $_ttm_rt_r1 != "$_ttm_rt_r2" ]]; then
        printf 'ttm.sh: TTM_DIR=%s and TTM_TXNS_DIR=%s name different trees; unset TTM_TXNS_DIR (or both, and set TETRA_DIR)\n' "$TTM_DIR" "$TTM_TXNS_DIR" >&2
        return 2
    fi
    _ttm_rt_r1=${_ttm_rt_r1:-$_ttm_rt_r2}
    if [[ -n $_ttm_rt_r1 && -n $_ttm_rt_e && $_ttm_rt_e != "$_ttm_rt_r1" ]]; then
        printf 'ttm.sh: TTM_DIR/TTM_TXNS_DIR name the tree %s but TETRA_DIR=%s; unset TTM_DIR and TTM_TXNS_DIR (ttmd serves the tree named by TETRA_DIR)\n' "$_ttm_rt_r1" "$TETRA_DIR" >&2
        return 2
    fi
    printf -v "$1" '%s' "$_ttm_rt_r1"
}

# _ttm_ctl MODULE ARGS…: runs ttmctl (in MODULE unless empty) with ARGS.
_ttm_ctl() {
    local _ttm_module=$1 _ttm_tree=
    shift
    _ttm_root _ttm_tree || return
    if [[ -n $_ttm_module ]]; then
        set -- --module="$_ttm_module" "$@"
    fi
    local _ttm_rc=0
    # TTM_DIR / TTM_TXNS_DIR are translated into TETRA_DIR here, so ttmctl
    # gets the tree once, without them.
    (
        unset TTM_DIR TTM_TXNS_DIR
        if [[ -n $_ttm_tree ]]; then
            # shellcheck disable=SC2030 # for ttmctl only, on purpose
            export TETRA_DIR=$_ttm_tree
        fi
        exec "${TTMCTL:-ttmctl}" "$@"
    ) || _ttm_rc=$?
    if ((_ttm_rc == 127)) && ! command -v -- "${TTMCTL:-ttmctl}" >/dev/null; then
        printf 'ttm.sh: cannot run %s: put ttmctl on PATH or set TTMCTL to its path\n' "${TTMCTL:-ttmctl}" >&2
    fi
    return "$_ttm_rc"
}

# _ttm_usage FUNCTION MESSAGE: a usage error (exit code 2, like ttmctl).
_ttm_usage() {
    printf '%s: %s\n' "$1" "$2" >&2
    return 2
}

# _ttm_json_unescape VAR RAW: sets VAR to the JSON string body RAW decoded.
_ttm_json_unescape() {
    local _ttm_ju_raw=$2 _ttm_ju_out='' _ttm_ju_c _ttm_ju_cp _ttm_ju_lo _ttm_ju_u
    while [[ $_ttm_ju_raw == *\\* ]]; do
        _ttm_ju_out+=${_ttm_ju_raw%%\\*}
        _ttm_ju_raw=${_ttm_ju_raw#*\\}
        _ttm_ju_c=${_ttm_ju_raw:0:1}
        _ttm_ju_raw=${_ttm_ju_raw:1}
        case $_ttm_ju_c in
            n) _ttm_ju_out+=$'\n' ;;
            t) _ttm_ju_out+=$'\t' ;;
            r) _ttm_ju_out+=$'\r' ;;
            b) _ttm_ju_out+=$'\b' ;;
            f) _ttm_ju_out+=$'\f' ;;
            u)
                if [[ $_ttm_ju_raw =~ ^[0-9a-fA-F]{4} ]]; then
                    _ttm_ju_cp=$((16#${_ttm_ju_raw:0:4}))
                    _ttm_ju_raw=${_ttm_ju_raw:4}
                    if ((_ttm_ju_cp >= 0xD800 && _ttm_ju_cp <= 0xDBFF)) &&
                        [[ $_ttm_ju_raw =~ ^\\u[dD][c-fC-F][0-9a-fA-F]{2} ]]; then
                        _ttm_ju_lo=$((16#${_ttm_ju_raw:2:4}))
                        _ttm_ju_raw=${_ttm_ju_raw:6}
                        _ttm_ju_cp=$((0x10000 + ((_ttm_ju_cp - 0xD800) << 10) + (_ttm_ju_lo - 0xDC00)))
                    fi
                    printf -v _ttm_ju_u '\\U%08x' "$_ttm_ju_cp"
                    printf -v _ttm_ju_c '%b' "$_ttm_ju_u"
                    _ttm_ju_out+=$_ttm_ju_c
                fi
                ;;
            *) _ttm_ju_out+=$_ttm_ju_c ;;
        esac
    done
    printf -v "$1" '%s' "$_ttm_ju_out$_ttm_ju_raw"
}

# _ttm_json_quote VAR TEXT: sets VAR to TEXT as a JSON string literal.
_ttm_json_quote() {
    local _ttm_jq_s=$2 _ttm_jq_i _ttm_jq_h _ttm_jq_c _ttm_jq_e _ttm_jq_bs=\\ _ttm_jq_q='"'
    _ttm_jq_s=${_ttm_jq_s//"$_ttm_jq_bs"/"$_ttm_jq_bs$_ttm_jq_bs"}
    _ttm_jq_s=${_ttm_jq_s//"$_ttm_jq_q"/"$_ttm_jq_bs$_ttm_jq_q"}
    for ((_ttm_jq_i = 1; _ttm_jq_i < 32; _ttm_jq_i++)); do
        printf -v _ttm_jq_h '%02x' "$_ttm_jq_i"
        printf -v _ttm_jq_c %b "\\x$_ttm_jq_h"
        if [[ $_ttm_jq_s == *"$_ttm_jq_c"* ]]; then
            case $_ttm_jq_i in
                8) _ttm_jq_e='\b' ;;
                9) _ttm_jq_e='\t' ;;
                10) _ttm_jq_e='\n' ;;
                12) _ttm_jq_e='\f' ;;
                13) _ttm_jq_e='\r' ;;
                *) printf -v _ttm_jq_e '\\u%04x' "$_ttm_jq_i" ;;
            esac
            _ttm_jq_s=${_ttm_jq_s//"$_ttm_jq_c"/"$_ttm_jq_e"}
        fi
    done
    printf -v "$1" '"%s"' "$_ttm_jq_s"
}

# _ttm_json_str VAR JSON INDENT KEY: sets VAR to the string value of KEY in
# ttmctl's pretty-printed JSON, among the keys indented by INDENT spaces
# (2: top level). Returns 1 when there is no such string.
_ttm_json_str() {
    local _ttm_js_pad _ttm_js_re
    printf -v _ttm_js_pad '%*s' "$3" ''
    _ttm_js_re=$'\n'$_ttm_js_pad'"'$4'": "(([^"\\]|\\.)*)"'
    [[ $2 =~ $_ttm_js_re ]] || return 1
    _ttm_json_unescape "$1" "${BASH_REMATCH[1]}"
}

# _ttm_json_num VAR JSON INDENT KEY: the same for a number.
_ttm_json_num() {
    local _ttm_jn_pad _ttm_jn_re
    printf -v _ttm_jn_pad '%*s' "$3" ''
    _ttm_jn_re=$'\n'$_ttm_jn_pad'"'$4'": (-?[0-9][0-9.eE+-]*)'
    [[ $2 =~ $_ttm_jn_re ]] || return 1
    printf -v "$1" '%s' "${BASH_REMATCH[1]}"
}

# _ttm_moved LINE: prints the original's line for a stage change,
# "Transaction transitioned: FROM → TO", from the line `ttmctl
# --print-move` printed, "ID<TAB>FROM<TAB>TO". FROM is the daemon's, read
# from the event the change wrote, so it is exact even when other scripts
# change the transaction at the same time, and it costs no second ttmctl.
# Sets the caller's _ttm_id to ID.
_ttm_moved() {
    local _ttm_rest=$1 _ttm_from=''
    _ttm_id=${_ttm_rest%%$'\t'*}
    if [[ $_ttm_rest == *$'\t'*$'\t'* ]]; then
        _ttm_rest=${_ttm_rest#*$'\t'}
        _ttm_from=${_ttm_rest%%$'\t'*}
        _ttm_rest=${_ttm_rest#*$'\t'}
    else
        _ttm_rest=''
    fi
    printf 'Transaction transitioned: %s → %s\n' "${_ttm_from:-?}" "${_ttm_rest:-?}"
}

# ------------------------------------------------- module-generic workers --
# Each takes the module first ('' = ttmctl's default: $TTM_MODULE or ttm);
# the public txn_* and flow_* functions are thin wrappers.

_ttm_create() { # MODULE FUNC DESCRIPTION [TARGET] [AGENT]
    if [[ $# -lt 3 || -z $3 ]]; then
        _ttm_usage "$2" "description required (usage: $2 DESCRIPTION [TARGET] [AGENT])"
        return
    fi
    _ttm_ctl "$1" create --target="${4:-}" --agent="${5:-}" -- "$3"
}

_ttm_transition() { # MODULE FUNC STAGE [ID]
    local _ttm_out _ttm_id
    if [[ $# -lt 3 || -z $3 ]]; then
        _ttm_usage "$2" "stage required (usage: $2 STAGE [ID])"
        return
    fi
    _ttm_out=$(_ttm_ctl "$1" transition --print-move ${4:+"--txn=$4"} -- "$3") || return
    _ttm_moved "$_ttm_out"
}

_ttm_commit() { # MODULE [ID]
    local _ttm_out _ttm_id='?'
    _ttm_out=$(_ttm_ctl "$1" commit --print-move ${2:+"--txn=$2"}) || return
    _ttm_moved "$_ttm_out"
    printf 'Transaction committed: %s\n' "${_ttm_id:-?}"
}

_ttm_fail() { # MODULE [ID] [ERROR]
    local _ttm_out _ttm_id='?' _ttm_msg=${3:-Unknown error}
    _ttm_out=$(_ttm_ctl "$1" fail --print-move ${2:+"--txn=$2"} -- "$_ttm_msg") || return
    _ttm_moved "$_ttm_out"
    printf 'Transaction failed: %s - %s\n' "${_ttm_id:-?}" "$_ttm_msg" >&2
}

_ttm_update() { # MODULE FUNC ID JSON
    if [[ $# -lt 4 || -z $4 ]]; then
        _ttm_usage "$2" "usage: $2 ID JSON"
        return
    fi
    _ttm_ctl "$1" update --txn="$3" -- "$4"
}

_ttm_add_ctx() { # MODULE FUNC FILE [DESCRIPTION] [ID]
    local _ttm_name
    if [[ $# -lt 3 || -z $3 ]]; then
        _ttm_usage "$2" "file required (usage: $2 FILE DESCRIPTION [ID])"
        return
    fi
    if [[ -n ${4:-} ]]; then
        _ttm_name=$(_ttm_ctl "$1" ctx add ${5:+"--txn=$5"} -- "$3" "$4") || return
    else
        _ttm_name=$(_ttm_ctl "$1" ctx add ${5:+"--txn=$5"} -- "$3") || return
    fi
    printf 'Added context: %s\n' "$_ttm_name"
}

_ttm_list_ctx() { # MODULE [ID]
    local _ttm_out _ttm_re _ttm_name
    _ttm_out=$(_ttm_ctl "$1" --json ctx list ${2:+"--txn=$2"}) || return
    printf 'Context files:\n'
    _ttm_re=$'\n''    "name": "(([^"\\]|\\.)*)"'
    while [[ $_ttm_out =~ $_ttm_re ]]; do
        _ttm_out=${_ttm_out#*"${BASH_REMATCH[0]}"}
        _ttm_json_unescape _ttm_name "${BASH_REMATCH[1]}"
        printf '%s\n' "$_ttm_name"
    done
}

# Reads `ttmctl ctx env` (single-quoted shell words) without eval: each
# value is taken apart at its quotes and assigned with printf -v, so no
# character of a path is ever interpreted.
_ttm_evidence_vars() { # MODULE FUNC [ID]
    local _ttm_out _ttm_rest _ttm_val _ttm_closed _ttm_count='' _ttm_i _ttm_old
    local -a _ttm_names=() _ttm_vals=()
    _ttm_out=$(_ttm_ctl "$1" ctx env ${3:+"--txn=$3"}) || return
    _ttm_rest=$_ttm_out
    while :; do
        if [[ $_ttm_rest =~ ^e_count=([0-9]+)$ ]]; then
            _ttm_count=${BASH_REMATCH[1]}
            break
        fi
        [[ $_ttm_rest =~ ^(e[1-9][0-9]*)=\' ]] || break
        _ttm_names+=("${BASH_REMATCH[1]}")
        _ttm_rest=${_ttm_rest:${#BASH_REMATCH[0]}}
        # The value runs to the next quote, where '\'' stands for one quote.
        _ttm_val=
        _ttm_closed=
        while [[ $_ttm_rest == *"'"* ]]; do
            _ttm_val+=${_ttm_rest%%"'"*}
            _ttm_rest=${_ttm_rest#*"'"}
            if [[ $_ttm_rest == "\\''"* ]]; then
                _ttm_val+="'"
                _ttm_rest=${_ttm_rest:3}
            else
                _ttm_closed=1
                break
            fi
        done
        [[ -n $_ttm_closed && $_ttm_rest == $'\n'* ]] || break
        _ttm_vals+=("$_ttm_val")
        _ttm_rest=${_ttm_rest:1}
    done
    if [[ -z $_ttm_count || $_ttm_count -ne ${#_ttm_vals[@]} || ${#_ttm_names[@]} -ne ${#_ttm_vals[@]} ]]; then
        printf '%s: cannot read the output of ttmctl ctx env\n' "$2" >&2
        return 1
    fi
    # Forget the previous transaction's files, as the original did.
    _ttm_old=${e_count:-0}
    [[ $_ttm_old =~ ^[0-9]+$ ]] || _ttm_old=0
    if ((_ttm_old < 9)); then _ttm_old=9; fi
    for ((_ttm_i = 1; _ttm_i <= _ttm_old; _ttm_i++)); do
        unset "e$_ttm_i"
    done
    for ((_ttm_i = 0; _ttm_i < ${#_ttm_vals[@]}; _ttm_i++)); do
        printf -v "${_ttm_names[_ttm_i]}" '%s' "${_ttm_vals[_ttm_i]}"
    done
    printf -v e_count '%s' "$_ttm_count"
    export e_count
    if ((_ttm_count > 0)); then
        printf 'Evidence variables initialized: %s file(s)\n' "$_ttm_count"
        for ((_ttm_i = 0; _ttm_i < ${#_ttm_vals[@]}; _ttm_i++)); do
            printf "  \$%s = %s\n" "${_ttm_names[_ttm_i]}" "${_ttm_vals[_ttm_i]}"
        done
    else
        printf 'No evidence files found\n'
    fi
    return 0
}

_ttm_resolve() { # MODULE [ID]
    local _ttm_out _ttm_target='?' _ttm_plan='?'
    _ttm_out=$(_ttm_ctl "$1" --json resolve ${2:+"--txn=$2"}) || return
    _ttm_json_str _ttm_target "$_ttm_out" 2 target || true
    _ttm_json_str _ttm_plan "$_ttm_out" 2 plan || true
    printf 'TES resolved: %s → %s\n' "$_ttm_target" "$_ttm_plan"
}

# _ttm_txn_records JSON: from `ttmctl --json list`, prints each transaction
# (oldest first) as three NUL-terminated fields: id, stage, description.
_ttm_txn_records() {
    local _ttm_rest=$1 _ttm_chunk _ttm_id _ttm_stage _ttm_desc
    [[ $_ttm_rest == *'"txns": ['* ]] || return 0
    _ttm_rest=${_ttm_rest#*'"txns": ['}
    while [[ $_ttm_rest == *$'\n    {'* ]]; do
        _ttm_rest=${_ttm_rest#*$'\n    {'}
        _ttm_chunk=$'\n'${_ttm_rest%%$'\n    }'*}
        _ttm_rest=${_ttm_rest#*$'\n    }'}
        _ttm_id='' _ttm_stage='' _ttm_desc=''
        _ttm_json_str _ttm_id "$_ttm_chunk" 6 txn_id || continue
        _ttm_json_str _ttm_stage "$_ttm_chunk" 6 stage || true
        _ttm_json_str _ttm_desc "$_ttm_chunk" 6 description || true
        printf '%s\0%s\0%s\0' "$_ttm_id" "$_ttm_stage" "$_ttm_desc"
    done
}

# _ttm_list MODULE FUNC [STAGE]: the original's listing. txn_list:
#   Transactions:  / a rule / "<→| > <id padded to 40>  <stage>  <description, 40 chars>"
# flow_list: Flows: / a rule / "<→| ><N>. <id>  <stage>  <description>", N
# the flow's place in the whole list (what flow_resume N takes, also when a
# STAGE filter hides others), then the original's tip. A module with no
# transaction yet lists nothing (exit 0), as the original did.
_ttm_list() {
    local _ttm_out _ttm_rc=0 _ttm_active='' _ttm_id _ttm_stage _ttm_desc _ttm_mark _ttm_n=0 _ttm_shown=0
    _ttm_out=$(_ttm_ctl "$1" --json list 2>/dev/null) || _ttm_rc=$?
    if ((_ttm_rc == 3)); then
        if [[ $2 == flow_list ]]; then printf 'No flows found\n'; else printf 'No transactions found\n'; fi
        return 0
    elif ((_ttm_rc != 0)); then
        # Again, for the message.
        _ttm_ctl "$1" --json list >/dev/null
        return
    fi
    _ttm_json_str _ttm_active "$_ttm_out" 2 active || true
    if [[ $2 == flow_list ]]; then printf 'Flows:\n'; else printf 'Transactions:\n'; fi
    printf '%s\n' '────────────────────────────────────────────────────────'
    while IFS= read -r -d '' _ttm_id && IFS= read -r -d '' _ttm_stage && IFS= read -r -d '' _ttm_desc; do
        _ttm_n=$((_ttm_n + 1))
        if [[ -n ${3:-} && $_ttm_stage != "$3" ]]; then continue; fi
        _ttm_shown=$((_ttm_shown + 1))
        _ttm_mark=' '
        if [[ $_ttm_id == "$_ttm_active" ]]; then _ttm_mark='→'; fi
        if [[ $2 == flow_list ]]; then
            printf '%s%2d. %-38s  %-10s  %s\n' "$_ttm_mark" "$_ttm_n" "$_ttm_id" "$_ttm_stage" "${_ttm_desc:0:40}"
        else
            printf '%s %-40s  %-10s  %s\n' "$_ttm_mark" "$_ttm_id" "$_ttm_stage" "${_ttm_desc:0:40}"
        fi
    done < <(_ttm_txn_records "$_ttm_out")
    if [[ $2 == flow_list ]]; then
        if ((_ttm_shown == 0)); then printf '  (none)\n'; fi
        printf "\nTip: Use '/flow resume <number>' to resume by index\n"
    fi
    return 0
}

# _ttm_status MODULE [ID]: the original's txn_status: the state's fields,
# the last five events, the ctx files.
_ttm_status() {
    local _ttm_out _ttm_st _ttm_ctx _ttm_ev _ttm_v _ttm_re _ttm_id='?' _ttm_err=''
    local -a _ttm_events=()
    _ttm_out=$(_ttm_ctl "$1" --json status ${2:+"--txn=$2"}) || return
    _ttm_st=${_ttm_out%%$'\n  "ctx": ['*}
    _ttm_ctx=${_ttm_out#*$'\n  "ctx": ['}
    _ttm_ev=${_ttm_ctx#*$'\n  "events": ['}
    _ttm_ctx=${_ttm_ctx%%$'\n  "events": ['*}
    _ttm_json_str _ttm_id "$_ttm_st" 4 txn_id || true
    printf 'Transaction: %s\n' "$_ttm_id"
    for _ttm_v in description stage target iteration agent ctx_digest last_checkpoint; do
        _ttm_re=none
        _ttm_json_str _ttm_re "$_ttm_st" 4 "$_ttm_v" || _ttm_json_num _ttm_re "$_ttm_st" 4 "$_ttm_v" || true
        case $_ttm_v in
            description) printf 'Description: %s\n' "$_ttm_re" ;;
            stage) printf 'Stage: %s\n' "$_ttm_re" ;;
            target) printf 'Target: %s\n' "$_ttm_re" ;;
            iteration) printf 'Iteration: %s\n' "$_ttm_re" ;;
            agent) printf 'Agent: %s\n' "$_ttm_re" ;;
            ctx_digest) printf 'Context digest: %s...\n' "${_ttm_re:0:16}" ;;
            last_checkpoint) printf 'Last updated: %s\n' "$_ttm_re" ;;
        esac
    done
    if _ttm_json_str _ttm_err "$_ttm_st" 4 last_error; then
        printf 'Last error: %s\n' "$_ttm_err"
    fi
    printf '\nRecent events:\n'
    _ttm_re=$'\n''      "ts": "([^"]*)",'$'\n''      "event": "([^"]*)"'
    while [[ $_ttm_ev =~ $_ttm_re ]]; do
        _ttm_ev=${_ttm_ev#*"${BASH_REMATCH[0]}"}
        _ttm_events+=("  [${BASH_REMATCH[1]}] ${BASH_REMATCH[2]}")
    done
    _ttm_v=$((${#_ttm_events[@]} > 5 ? ${#_ttm_events[@]} - 5 : 0))
    if ((${#_ttm_events[@]} > 0)); then printf '%s\n' "${_ttm_events[@]:_ttm_v}"; fi
    printf '\nContext files:\n'
    _ttm_re=$'\n''      "name": "(([^"\\]|\\.)*)"'
    _ttm_v=0
    while [[ $_ttm_ctx =~ $_ttm_re ]]; do
        _ttm_ctx=${_ttm_ctx#*"${BASH_REMATCH[0]}"}
        _ttm_json_unescape _ttm_err "${BASH_REMATCH[1]}"
        printf '  %s\n' "$_ttm_err"
        _ttm_v=1
    done
    if ((_ttm_v == 0)); then printf '  (none)\n'; fi
}

# ------------------------------------------------------------- public API --

# ttm_init: checks that ttmd answers (ttmctl starts it unless
# TTM_NO_AUTOSTART=1) and that TTM_DIR/TTM_TXNS_DIR make sense. ttmd makes
# $TETRA_DIR/ttm/txns when it starts, as the original's ttm_init did; the
# shims write nothing themselves. Safe to call any number of times.
ttm_init() {
    local _ttm_err _ttm_rc=0
    # The smallest question: which transaction is active. 3 (no module yet)
    # and 4 (none active) are answers too.
    _ttm_err=$(_ttm_ctl "" active 2>&1 >/dev/null) || _ttm_rc=$?
    if [[ $_ttm_rc -eq 0 || $_ttm_rc -eq 3 || $_ttm_rc -eq 4 ]]; then
        return 0
    fi
    printf '%s\n' "$_ttm_err" >&2
    return "$_ttm_rc"
}

# generate_txn_id DESCRIPTION: prints an id of the form ttmd gives
# (<slug>-<YYYYMMDDTHHMMSS>, UTC). Only a preview: ttmd allocates the real
# id at txn_create (adding -2, -3, … when the slug is taken that second).
generate_txn_id() {
    (
        LC_ALL=C
        s=${1:-}
        s=${s//[!abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789]/-}
        s=$(printf '%s' "$s" | tr 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' 'abcdefghijklmnopqrstuvwxyz')
        while [[ $s == *--* ]]; do s=${s//--/-}; done
        s=${s#-}
        s=${s:0:30}
        s=${s%-}
        printf '%s-%s\n' "${s:-txn}" "$(date -u +%Y%m%dT%H%M%S)"
    )
}

txn_active() { _ttm_ctl "" active; }
txn_dir() { _ttm_ctl "" dir ${1:+"--txn=$1"}; }
txn_state() { _ttm_ctl "" state ${1:+"--txn=$1"}; }
txn_create() { _ttm_create "" txn_create "$@"; }
txn_update() { _ttm_update "" txn_update "$@"; }
txn_transition() { _ttm_transition "" txn_transition "$@"; }
txn_commit() { _ttm_commit "" "$@"; }
txn_fail() { _ttm_fail "" "$@"; }
txn_add_ctx() { _ttm_add_ctx "" txn_add_ctx "$@"; }
txn_list_ctx() { _ttm_list_ctx "" "$@"; }
init_evidence_vars() { _ttm_evidence_vars "" init_evidence_vars "$@"; }
txn_ctx_digest() { _ttm_ctl "" ctx digest ${1:+"--txn=$1"}; }
txn_list() { _ttm_list "" txn_list "${1:-}"; }
txn_status() { _ttm_status "" "${1:-}"; }
txn_resolve_tes() { _ttm_resolve "" "$@"; }

# txn_lease NAME [ID]: acquires lease NAME (@target or a name) for the
# transaction, waiting in the queue (who holds it and the position go to
# stderr); prints the fencing token. Exit codes are ttmctl's (10 busy, 11 a
# wait ran out; TTM_LEASE_FLAGS may add --no-wait, --wait-timeout D, ...).
txn_lease() {
    [[ -n ${1:-} ]] || { _ttm_usage txn_lease "usage: txn_lease NAME [ID]"; return; }
    # shellcheck disable=SC2086 # TTM_LEASE_FLAGS is a list of flags
    _ttm_ctl "" lease acquire "$1" ${2:+"--txn=$2"} ${TTM_LEASE_FLAGS:-}
}

# txn_release NAME [ID]: lets go of lease NAME (or stops waiting for it).
txn_release() {
    [[ -n ${1:-} ]] || { _ttm_usage txn_release "usage: txn_release NAME [ID]"; return; }
    _ttm_ctl "" lease release "$1" ${2:+"--txn=$2"}
}

# txn_heartbeat_start [ID] [PERIOD]: keeps the transaction's leases alive,
# and it from being reported stalled (create --heartbeat), from the
# background, one `ttmctl heartbeat` every PERIOD seconds (default 10; keep
# it well under the lease TTL and the heartbeat period). The transaction is pinned now (the
# active one when no ID). It stops with txn_heartbeat_stop, when this shell
# exits (an EXIT trap, chained before any trap already set), or, if this
# shell is killed, at its next beat.
txn_heartbeat_start() {
    local _ttm_id=${1:-} _ttm_period=${2:-10}
    [[ $_ttm_period =~ ^[0-9]+([.][0-9]+)?$ ]] ||
        { _ttm_usage txn_heartbeat_start "PERIOD must be seconds, e.g. 10 or 0.5"; return; }
    if [[ -z $_ttm_id ]]; then _ttm_id=$(_ttm_ctl "" active) || return; fi
    txn_heartbeat_stop
    (
        _ttm_sleep=''
        trap '[[ -n $_ttm_sleep ]] && kill "$_ttm_sleep" 2>/dev/null; exit 0' TERM
        while kill -0 "$$" 2>/dev/null; do
            _ttm_ctl "" heartbeat --txn="$_ttm_id" >/dev/null 2>&1
            sleep "$_ttm_period" &
            _ttm_sleep=$!
            wait "$_ttm_sleep"
        done
    ) &
    _TTM_HEARTBEAT_PID=$!
    local _ttm_prev
    _ttm_prev=$(trap -p EXIT)
    if [[ $_ttm_prev != *_ttm_heartbeat_exit* ]]; then
        # `trap -p` prints the old command shell-quoted; unquote it by eval.
        eval "set -- ${_ttm_prev:-trap -- '' EXIT}"
        # shellcheck disable=SC2064 # the old trap is expanded now, on purpose
        trap "_ttm_heartbeat_exit${3:+; $3}" EXIT
    fi
}

# txn_heartbeat_stop: stops the background heartbeat (if any) and waits for it.
txn_heartbeat_stop() {
    if [[ -n ${_TTM_HEARTBEAT_PID:-} ]]; then
        kill -TERM "$_TTM_HEARTBEAT_PID" 2>/dev/null || true
        wait "$_TTM_HEARTBEAT_PID" 2>/dev/null || true
        _TTM_HEARTBEAT_PID=
    fi
    return 0
}

_ttm_heartbeat_exit() { txn_heartbeat_stop; }

# txn_events [ID] [TYPE]: the raw lines of events.ndjson (optionally one
# type). Like the original's grep: 0 when lines were printed, 1 when a TYPE
# was given and no event has it, >= 2 on errors (ttmctl's code; its generic
# 1 becomes 2, so that 1 always means "no match").
txn_events() {
    local _ttm_out _ttm_rc=0
    _ttm_out=$(_ttm_ctl "" --json events ${1:+"--txn=$1"} --type="${2:-}") || _ttm_rc=$?
    if ((_ttm_rc != 0)); then
        if ((_ttm_rc == 1)); then _ttm_rc=2; fi
        return "$_ttm_rc"
    fi
    if [[ -z $_ttm_out ]]; then
        [[ -z ${2:-} ]]
        return
    fi
    printf '%s\n' "$_ttm_out"
}

# txn_get_connector TARGET: the connector JSON of @TARGET (or a host).
txn_get_connector() {
    if [[ $# -lt 1 || -z $1 ]]; then
        _ttm_usage txn_get_connector "target required (usage: txn_get_connector TARGET)"
        return
    fi
    _ttm_ctl "" connector -- "$1"
}

# ---------------------------------------------------------------- events --
# The original's events.sh handed these to an optional in-process pubsub.
# Here an event is a line of the transaction's log, so any process sees it.

# ttm_publish EVENT [ID] [DATA]: appends a user event of type EVENT (e.g.
# txn.created, deploy.step: [a-z][a-z0-9_.]*) to the log of transaction ID
# (default: the active one), via `ttmctl event`. DATA that is a JSON object
# is the event's data; any other text is stored as {"value": DATA}. Prints
# nothing; returns ttmctl's code (the original always returned 0).
ttm_publish() {
    local _ttm_data=${3:-} _ttm_json='{}' _ttm_q
    if [[ $# -lt 1 || -z $1 ]]; then
        _ttm_usage ttm_publish "event name required (usage: ttm_publish EVENT [ID] [DATA])"
        return
    fi
    if [[ $_ttm_data =~ ^[[:space:]]*\{ ]]; then
        _ttm_json=$_ttm_data
    elif [[ -n $_ttm_data ]]; then
        _ttm_json_quote _ttm_q "$_ttm_data"
        _ttm_json="{\"value\":$_ttm_q}"
    fi
    _ttm_ctl "" event ${2:+"--txn=$2"} -- "$1" "$_ttm_json" >/dev/null
}

# ttm_subscribe EVENT HANDLER [ID]: runs HANDLER (a function or command name,
# never evaluated) as `HANDLER TYPE ID LINE` for every event of type EVENT
# appended to transaction ID's log (default: the one active now) from now
# on; LINE is the raw JSON line. EVENT `*` matches every event;
# txn.stage_changed (the original's name) matches each change of stage
# once: stage_transition (ttmd logs one before each txn_commit and
# txn_fail), txn_retry and stage_migrated. The subscription is a background
# `ttmctl events --follow` in a subshell (its pid is in $! afterwards); the
# handler runs there, asynchronously, with stdin from /dev/null. It ends by
# itself when the transaction ends (DONE or FAIL), when ttmd stops, or when
# the shell that subscribed exits (checked every second); ttm_unsubscribe
# ends it at once.
ttm_subscribe() {
    local _ttm_state _ttm_id='' _ttm_seq=''
    if [[ $# -lt 2 || -z $1 || -z $2 ]]; then
        _ttm_usage ttm_subscribe "usage: ttm_subscribe EVENT HANDLER [ID]"
        return
    fi
    if ! declare -F -- "$2" >/dev/null && ! command -v -- "$2" >/dev/null; then
        _ttm_usage ttm_subscribe "no function or command named '$2'"
        return
    fi
    _ttm_state=$(_ttm_ctl "" --json state ${3:+"--txn=$3"}) || return
    _ttm_json_str _ttm_id "$_ttm_state" 2 txn_id || true
    _ttm_json_num _ttm_seq "$_ttm_state" 2 seq || true
    if [[ -z $_ttm_id || ! $_ttm_seq =~ ^[0-9]+$ ]]; then
        printf 'ttm_subscribe: cannot read the state of the transaction\n' >&2
        return 1
    fi
    # From the event after the last one now: nothing later is missed.
    _ttm_subscription "$1" "$2" "$_ttm_id" "$((_ttm_seq + 1))" &
    _TTM_SUBSCRIPTIONS+=("$!"$'\x1f'"$1"$'\x1f'"$2")
    return 0
}

# ttm_unsubscribe [EVENT [HANDLER]]: ends the subscriptions of this shell
# to EVENT with HANDLER (all of EVENT's without HANDLER; all of them without
# arguments) and waits for each to exit. Returns 0, like the original, also
# when none matched.
ttm_unsubscribe() {
    local _ttm_e _ttm_pid _ttm_ev _ttm_cb
    local -a _ttm_keep=()
    for _ttm_e in ${_TTM_SUBSCRIPTIONS[@]+"${_TTM_SUBSCRIPTIONS[@]}"}; do
        _ttm_pid=${_ttm_e%%$'\x1f'*}
        _ttm_ev=${_ttm_e#*$'\x1f'}
        _ttm_cb=${_ttm_ev#*$'\x1f'}
        _ttm_ev=${_ttm_ev%%$'\x1f'*}
        if [[ (-z ${1:-} || $1 == "$_ttm_ev") && (-z ${2:-} || $2 == "$_ttm_cb") ]]; then
            kill -TERM "$_ttm_pid" 2>/dev/null || true
            wait "$_ttm_pid" 2>/dev/null || true
        else
            _ttm_keep+=("$_ttm_e")
        fi
    done
    _TTM_SUBSCRIPTIONS=(${_ttm_keep[@]+"${_ttm_keep[@]}"})
    return 0
}

# _ttm_subscription EVENT HANDLER ID FROM: the body of a subscription, run
# in a background subshell (see ttm_subscribe).
_ttm_subscription() {
    set +e +u +o pipefail
    local _ttm_parent=$$ _ttm_fd _ttm_ctl_pid='' _ttm_line _ttm_buf='' _ttm_rc _ttm_type _ttm_re
    # Stopping: end ttmctl too, and wait (2 s at most) until it is gone, so
    # nothing follows the log once ttm_unsubscribe has returned.
    trap 'if [[ -n $_ttm_ctl_pid ]] && kill -TERM "$_ttm_ctl_pid" 2>/dev/null; then
              for _ttm_line in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
                  kill -0 "$_ttm_ctl_pid" 2>/dev/null || break
                  sleep 0.1
              done
          fi
          exit 0' TERM INT HUP
    exec {_ttm_fd}< <(
        _ttm_root _ttm_tree || exit
        unset TTM_DIR TTM_TXNS_DIR
        # shellcheck disable=SC2031 # for ttmctl only, on purpose
        if [[ -n $_ttm_tree ]]; then export TETRA_DIR=$_ttm_tree; fi
        printf '%s\n' "$BASHPID"
        exec "${TTMCTL:-ttmctl}" --json events --follow --txn="$3" --from="$4"
    )
    IFS= read -r -u "$_ttm_fd" _ttm_ctl_pid || exit 0
    _ttm_re='"event":"([^"\\]*)"'
    while :; do
        _ttm_rc=0
        IFS= read -r -t 1 -u "$_ttm_fd" _ttm_line || _ttm_rc=$?
        if ((_ttm_rc > 128)); then
            # A timeout: keep what came so far; stop if the subscriber is gone.
            _ttm_buf+=$_ttm_line
            if ! kill -0 "$_ttm_parent" 2>/dev/null; then
                kill -TERM "$_ttm_ctl_pid" 2>/dev/null
                exit 0
            fi
            continue
        elif ((_ttm_rc != 0)); then
            break
        fi
        _ttm_line=$_ttm_buf$_ttm_line
        _ttm_buf=
        [[ $_ttm_line =~ $_ttm_re ]] || continue
        _ttm_type=${BASH_REMATCH[1]}
        case $1 in
            "*" | "$_ttm_type") ;;
            txn.stage_changed)
                case $_ttm_type in
                    stage_transition | txn_retry | stage_migrated) ;;
                    *) continue ;;
                esac
                ;;
            *) continue ;;
        esac
        "$2" "$_ttm_type" "$3" "$_ttm_line" </dev/null
    done
    exit 0
}

# _ttm_is_txn WORD: whether WORD has the form of a transaction id (letters,
# digits and -, 128 at most: the daemon's ids are <slug>-<YYYYMMDD>T<HHMMSS>)
# and names an existing transaction of the module.
_ttm_is_txn() {
    [[ $1 =~ ^[a-zA-Z0-9][a-zA-Z0-9-]{0,127}$ ]] && _ttm_ctl "" dir --txn="$1" >/dev/null 2>&1
}

# ttm VERB ARGS…: the original dispatcher.
ttm() {
    if [[ $# -eq 0 ]]; then
        ttm help
        return
    fi
    local _ttm_verb=$1
    shift
    case $_ttm_verb in
        create) txn_create "$@" ;;
        commit) txn_commit "$@" ;;
        fail)
            # `ttm fail "message"` (the QUICK_START form): a first argument
            # that names no transaction is the active one's message.
            if [[ $# -ge 1 ]] && ! _ttm_is_txn "$1"; then
                txn_fail "" "$@"
            else
                txn_fail "$@"
            fi
            ;;
        publish) ttm_publish "$@" ;;
        transition) txn_transition "$@" ;;
        add) txn_add_ctx "$@" ;;
        list-ctx) txn_list_ctx "$@" ;;
        init-vars) init_evidence_vars "$@" ;;
        active) txn_active ;;
        status) txn_status "$@" ;;
        list) txn_list "$@" ;;
        state) txn_state "$@" ;;
        events) txn_events "$@" ;;
        resolve) txn_resolve_tes "$@" ;;
        dir) txn_dir "$@" ;;
        update) txn_update "$@" ;;
        digest) txn_ctx_digest "$@" ;;
        connector) txn_get_connector "$@" ;;
        init) ttm_init ;;
        help | h | -h | --help)
            cat <<'EOF'
Usage: ttm <command> [args]      (the bash TTM API on ttmd, via ttmctl)

Transaction lifecycle:
  create "<desc>" [@target] [agent]   create a transaction (prints its id)
  commit [txn_id]                     move to DONE
  fail [txn_id] ["<error>"]           move to FAIL, recording the error
  fail "<error>"                      the same for the active transaction
  transition <stage> [txn_id]         move to another stage (forward only)

Context:
  add <file> <desc> [txn_id]          store an evidence file (100_<desc>.<ext>, …)
  list-ctx [txn_id]                   list the ctx files
  init-vars [txn_id]                  set $e1, $e2, … and $e_count
  digest [txn_id]                     the ctx digest

Queries:
  active                              the active transaction's id
  status [txn_id]                     summary
  list [stage]                        all transactions (optionally one stage)
  state [txn_id]                      state.json
  events [txn_id] [event_type]        the event log (NDJSON)
  dir [txn_id]                        the transaction's directory
  update <txn_id> '<json>'            merge fields into the state

Targets:
  resolve [txn_id]                    resolve the target (@staging → staging.local)
  connector <@target>                 the target's connector JSON

Events:
  publish <event> [txn_id] [data]     append a user event (ttm_publish)

Examples:
  ttm create "deploy api v2.1" @staging human
  ttm add build/api.tar.gz artifact
  ttm transition EXECUTE
  ttm resolve
  ttm commit
EOF
            ;;
        *)
            printf "ttm: unknown command: %s (see 'ttm help')\n" "$_ttm_verb" >&2
            return 2
            ;;
    esac
}

# ------------------------------------------------------------- variables --

# _ttm_file_dir VAR FILE: sets VAR to the physical directory of FILE, its
# symbolic links resolved (a copy or a link of the file both work).
_ttm_file_dir() {
    local _ttm_fd_f=$2 _ttm_fd_l _ttm_fd_d
    while [[ -L $_ttm_fd_f ]]; do
        _ttm_fd_l=$(readlink -- "$_ttm_fd_f") || break
        if [[ $_ttm_fd_l == /* || $_ttm_fd_f != */* ]]; then
            _ttm_fd_f=$_ttm_fd_l
        else
            _ttm_fd_f=${_ttm_fd_f%/*}/$_ttm_fd_l
        fi
    done
    if [[ $_ttm_fd_f == */* ]]; then _ttm_fd_d=${_ttm_fd_f%/*}; else _ttm_fd_d=.; fi
    _ttm_fd_d=$(cd -P -- "${_ttm_fd_d:-/}" 2>/dev/null && pwd) || _ttm_fd_d=
    printf -v "$1" '%s' "$_ttm_fd_d"
}

# _ttm_set_vars: the original's variables (see the top of this file). A
# value the caller set is kept; one the shims derived before (another
# TETRA_DIR or module since) is derived again. TTM_DIR is the directory of
# the module the txn_* functions act on: <TETRA_DIR>/ttm unless TTM_MODULE
# says another (the flow manager makes it rag).
_ttm_set_vars() {
    local _ttm_sv_root=${TETRA_DIR:-${HOME:-}/.tetra} _ttm_sv_old=${_TTM_DERIVED_DIR:-} _ttm_sv_dir
    while [[ $_ttm_sv_root == */ && $_ttm_sv_root != / ]]; do _ttm_sv_root=${_ttm_sv_root%/}; done
    if [[ -z ${TTM_DIR:-} || $TTM_DIR == "$_ttm_sv_old" ]]; then
        TTM_DIR=$_ttm_sv_root/${TTM_MODULE:-ttm}
        _TTM_DERIVED_DIR=$TTM_DIR
    fi
    if [[ -z ${TTM_TXNS_DIR:-} || $TTM_TXNS_DIR == "${_TTM_DERIVED_TXNS_DIR:-}" ]]; then
        TTM_TXNS_DIR=$TTM_DIR/txns
        _TTM_DERIVED_TXNS_DIR=$TTM_TXNS_DIR
    fi
    if [[ -z ${TTM_CONFIG_DIR:-} || $TTM_CONFIG_DIR == "$_ttm_sv_old/config" ]]; then
        TTM_CONFIG_DIR=$TTM_DIR/config
    fi
    if [[ -z ${TTM_LOGS_DIR:-} || $TTM_LOGS_DIR == "$_ttm_sv_old/logs" ]]; then
        TTM_LOGS_DIR=$TTM_DIR/logs
    fi
    _ttm_file_dir _ttm_sv_dir "${BASH_SOURCE[0]}"
    if [[ -z ${TTM_SRC:-} ]]; then TTM_SRC=$_ttm_sv_dir; fi
    if [[ -z ${TTM_MODULE_DIR:-} ]]; then TTM_MODULE_DIR=$_ttm_sv_dir; fi
    export TTM_SRC TTM_DIR TTM_TXNS_DIR _TTM_DERIVED_DIR _TTM_DERIVED_TXNS_DIR
    # Read-only like the original's; each only when unset, so sourcing
    # twice (or after the original) is fine.
    local _ttm_sv_s
    for _ttm_sv_s in NEW SELECT ASSEMBLE EXECUTE VALIDATE DONE FAIL; do
        _ttm_stage_const "$_ttm_sv_s"
    done
}

# _ttm_stage_const NAME: declares STAGE_<NAME>=NAME read-only unless
# STAGE_<NAME> is already set.
_ttm_stage_const() {
    local _ttm_sc_v=STAGE_$1
    if [[ -z ${!_ttm_sc_v+set} ]]; then
        declare -gr "$_ttm_sc_v=$1"
    fi
}

_ttm_set_vars

# Exported, as the original did, so child bash processes (bash -c, xargs,
# find -exec) can call them too.
export -f _ttm_root _ttm_ctl _ttm_usage _ttm_json_unescape _ttm_json_quote \
    _ttm_json_str _ttm_json_num _ttm_moved _ttm_create _ttm_transition _ttm_commit \
    _ttm_fail _ttm_update _ttm_add_ctx _ttm_list_ctx _ttm_evidence_vars _ttm_resolve \
    _ttm_file_dir _ttm_set_vars _ttm_stage_const _ttm_txn_records _ttm_list _ttm_status \
    ttm_publish ttm_subscribe ttm_unsubscribe _ttm_subscription _ttm_is_txn \
    ttm_init generate_txn_id txn_active txn_dir txn_state txn_create txn_update \
    txn_transition txn_commit txn_fail txn_add_ctx txn_list_ctx init_evidence_vars \
    txn_ctx_digest txn_list txn_status txn_resolve_tes txn_events txn_get_connector ttm \
    txn_lease txn_release txn_heartbeat_start txn_heartbeat_stop _ttm_heartbeat_exit
