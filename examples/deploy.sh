#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# deploy.sh — a complete deploy driven by the TTM bash shims, on @local.
#
#   examples/deploy.sh [VERSION]            build, upload, restart, validate, commit
#   examples/deploy.sh rollback ID [WHY]    fail transaction ID on request (and put
#                                           the previous release back if ID's is live)
#
# Everything happens on this machine, no network: the "upload" copies the
# artifact tarball into $DEPLOY_ROOT/releases/<txn_id>/ and unpacks it, the
# "restart" switches $DEPLOY_ROOT/current to it and writes
# $DEPLOY_ROOT/restart.marker, and the validation compares the sha256 of
# every deployed file with the manifest built next to the artifact. A failed
# check fails the transaction, puts the previous release back and exits 1.
#
# Environment:
#   DEPLOY_ROOT      where releases go [default: ${TMPDIR:-/tmp}/ttm-deploy-<uid>]
#   DEPLOY_CORRUPT=1 corrupt the upload, to see a failed validation
#   TTMCTL           the ttmctl to call [default: ttmctl on PATH], e.g.
#                    TTMCTL=./target/release/ttmctl after `cargo build --release`
#                    (it starts ttmd by itself unless TTM_NO_AUTOSTART=1)
#   TTM_SH           the ttm.sh to source [default: the repository's
#                    ttmctl/shell/ttm.sh, else the one scripts/install.sh put
#                    beside this script, else ${PREFIX:-~/.local}/share/ttm/ttm.sh]
#   TETRA_DIR, TTM_SOCKET, TTM_MODULE   as for ttmctl
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shim=${TTM_SH:-$here/../ttmctl/shell/ttm.sh}
if [[ ! -f $shim ]]; then
    shim=$here/../ttm.sh # installed by scripts/install.sh
fi
if [[ ! -f $shim ]]; then
    shim=${PREFIX:-$HOME/.local}/share/ttm/ttm.sh
fi
# shellcheck source=../ttmctl/shell/ttm.sh
source "$shim"

deploy_root=${DEPLOY_ROOT:-${TMPDIR:-/tmp}/ttm-deploy-$(id -u)}

say() { printf '==> %s\n' "$*"; }

# sha256 FILE: the file's hex sha256.
sha256() {
    local sum
    if command -v sha256sum >/dev/null; then
        sum=$(sha256sum -- "$1")
    else
        sum=$(shasum -a 256 -- "$1")
    fi
    printf '%s\n' "${sum%% *}"
}

# switch_to DIR: points $deploy_root/current at DIR ('' removes it).
switch_to() {
    if [[ -n $1 ]]; then
        ln -sfn "$1" "$deploy_root/current"
    else
        rm -f "$deploy_root/current"
    fi
}

# rollback ID [WHY]: fails the transaction, then, if its release is the live
# one, restores the release that was live before it.
rollback() {
    local id=${1:-} why=${2:-rollback requested} dir release previous=''
    if [[ -z $id ]]; then
        echo "usage: $0 rollback ID [WHY]" >&2
        exit 2
    fi
    dir=$(txn_dir "$id")
    txn_fail "$id" "$why"
    if [[ -f $dir/artifacts/release ]]; then
        release=$(<"$dir/artifacts/release")
        if [[ -f $dir/artifacts/previous ]]; then
            previous=$(<"$dir/artifacts/previous")
        fi
        if [[ $(readlink "$deploy_root/current" 2>/dev/null || true) == "$release" ]]; then
            switch_to "$previous"
            say "restored the previous release: ${previous:-(none)}"
        fi
    fi
    say "rolled back $id"
}

if [[ ${1:-} == rollback ]]; then
    shift
    rollback "$@"
    exit 0
fi

version=${1:-1.0.$(date -u +%Y%m%d%H%M%S)}

# ---------------------------------------------------------------- NEW --
ttm_init
id=$(txn_create "deploy app $version" @local "${USER:-human}")
dir=$(txn_dir "$id")
say "transaction $id ($dir)"

# Whatever stops this script before the end fails the transaction.
finished=''
on_exit() {
    local status=$?
    if [[ -z $finished && $status -ne 0 ]]; then
        txn_fail "$id" "deploy.sh stopped (exit $status) before it finished" >/dev/null || true
    fi
}
trap on_exit EXIT

# ------------------------------------------------------------- SELECT --
txn_transition SELECT
src=$dir/build/src/app
mkdir -p "$src/bin" "$src/config"
printf '%s\n' "$version" >"$src/VERSION"
printf '#!/bin/sh\necho "app %s"\n' "$version" >"$src/bin/app"
chmod +x "$src/bin/app"
printf 'listen = 127.0.0.1:8080\nversion = %s\n' "$version" >"$src/config/app.conf"

# ----------------------------------------------------------- ASSEMBLE --
txn_transition ASSEMBLE
tar -czf "$dir/build/app.tar.gz" -C "$dir/build/src" app
(
    cd "$dir/build/src"
    for file in app/VERSION app/bin/app app/config/app.conf; do
        printf '%s  %s\n' "$(sha256 "$file")" "$file"
    done
) >"$dir/build/manifest.sha256"
txn_add_ctx "$dir/build/app.tar.gz" artifact # $e1
txn_add_ctx "$dir/build/manifest.sha256" manifest     # $e2
init_evidence_vars >/dev/null
# shellcheck disable=SC2154 # e1, e2 are set by init_evidence_vars
say "artifact \$e1 = $e1; manifest \$e2 = $e2 ($e_count evidence files)"
txn_resolve_tes
txn_get_connector @local | grep -q '"type": "local"' || {
    echo "deploy.sh: @local is not a local target in this topology" >&2
    exit 1
}

# ------------------------------------------------------------ EXECUTE --
txn_transition EXECUTE
release=$deploy_root/releases/$id
mkdir -p "$release"
cp -- "$e1" "$release/app.tar.gz" # the "upload"
tar -xzf "$release/app.tar.gz" -C "$release"
if [[ ${DEPLOY_CORRUPT:-} == 1 ]]; then
    say "DEPLOY_CORRUPT=1: corrupting the upload"
    printf 'garbage\n' >>"$release/app/config/app.conf"
fi
previous=$(readlink "$deploy_root/current" 2>/dev/null || true)
printf '%s\n' "$previous" >"$dir/artifacts/previous"
printf '%s\n' "$release" >"$dir/artifacts/release"
switch_to "$release"
restarted=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf 'txn=%s version=%s restarted=%s\n' "$id" "$version" "$restarted" >"$deploy_root/restart.marker"
txn_update "$id" "{\"release\":\"$id\",\"restarted_at\":\"$restarted\"}"
say "released $release, restarted"

# ----------------------------------------------------------- VALIDATE --
txn_transition VALIDATE
problems=()
if [[ $(sha256 "$release/app.tar.gz") != "$(sha256 "$e1")" ]]; then
    problems+=("uploaded tarball differs from the artifact")
fi
while read -r want file; do
    got=$(sha256 "$deploy_root/current/$file" 2>/dev/null || echo missing)
    if [[ $got != "$want" ]]; then
        problems+=("checksum mismatch: $file")
    fi
done <"$e2"
if ! grep -qx "txn=$id version=$version restarted=$restarted" "$deploy_root/restart.marker"; then
    problems+=("restart marker does not name this release")
fi
printf '%s\n' "${problems[@]+"${problems[@]}"}" >"$dir/artifacts/validate.log"

if [[ ${#problems[@]} -gt 0 ]]; then
    switch_to "$previous"
    txn_fail "$id" "validation failed: ${problems[*]}"
    finished=1
    say "validation FAILED (${problems[*]}); previous release restored: ${previous:-(none)}" >&2
    exit 1
fi

cp -- "$e2" "$dir/artifacts/deployed.sha256"
txn_commit "$id"
finished=1
say "deployed $id: $deploy_root/current -> $release"
