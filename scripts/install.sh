#!/usr/bin/env bash
# install.sh — installs the bash shims where scripts can source them.
#
#   scripts/install.sh                  → ~/.local/share/ttm/
#   PREFIX=/usr/local scripts/install.sh → /usr/local/share/ttm/
#   scripts/install.sh --uninstall      removes them again
#
# Installs ttm.sh, flow_manager_ttm.sh and test_sequence.sh from
# ttmctl/shell/ and the deploy example as examples/deploy.sh. ttmctl and ttmd
# themselves come from `cargo install --locked --path ttmctl` and
# `cargo install --locked --path ttmd` (see README).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${DESTDIR:-}${PREFIX:-$HOME/.local}/share/ttm

case ${1:-} in
    --uninstall)
        rm -f "$dest/ttm.sh" "$dest/flow_manager_ttm.sh" "$dest/test_sequence.sh" "$dest/examples/deploy.sh"
        rmdir "$dest/examples" "$dest" 2>/dev/null || true
        echo "removed the TTM shims from $dest"
        exit 0
        ;;
    '') ;;
    *)
        echo "usage: $0 [--uninstall]   (PREFIX, DESTDIR: where to)" >&2
        exit 2
        ;;
esac

install -d "$dest" "$dest/examples"
install -m 0644 "$repo/ttmctl/shell/ttm.sh" "$repo/ttmctl/shell/flow_manager_ttm.sh" "$dest/"
install -m 0755 "$repo/ttmctl/shell/test_sequence.sh" "$dest/"
install -m 0755 "$repo/examples/deploy.sh" "$dest/examples/"

cat <<EOF
installed the TTM shims in $dest
use them with:
  source "$dest/ttm.sh"                # txn_*, ttm, init_evidence_vars, ...
  source "$dest/flow_manager_ttm.sh"   # RAG's flow_* (also sources ttm.sh)
EOF
if ! command -v "${TTMCTL:-ttmctl}" >/dev/null; then
    echo "note: ttmctl is not on PATH; install it (cargo install --locked --path ttmctl) or set TTMCTL"
fi
