#!/usr/bin/env bash
# BASELINE, not the product: the transaction lifecycle done the way the
# original bash TTM did it — one `jq` per read-modify-write of state.json,
# `echo >>` appends to events.ndjson, no daemon, no locking, no fsync. It
# exists only so bench/lifecycle.sh can measure TTM against it in the same
# run on the same machine.
#
# Usage: source this file, then bl_lifecycle ROOT FILE1 FILE2
set -u

bl_now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

bl_create() { # root desc -> prints id
  local root=$1 desc=$2 id dir
  id="$(printf '%s' "$desc" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//' | cut -c1-30)-$(date -u +%Y%m%dT%H%M%S)-$RANDOM$RANDOM"
  dir="$root/ttm/txns/$id"
  mkdir -p "$dir/ctx" "$dir/build" "$dir/artifacts"
  printf '# Policy\n' > "$dir/ctx/000_policy.md"
  printf '# Request\n%s\n' "$desc" > "$dir/ctx/010_request.md"
  jq -n --arg id "$id" --arg d "$desc" --arg ts "$(bl_now)" \
    '{txn_id:$id, description:$d, stage:"NEW", target:"@local", iteration:1, agent:"human",
      ctx_digest:null, last_checkpoint:$ts, last_error:null}' > "$dir/state.json"
  echo "{\"ts\":\"$(bl_now)\",\"event\":\"txn_start\",\"txn_id\":\"$id\"}" >> "$dir/events.ndjson"
  ln -sfn "$id" "$root/ttm/txns/active"
  printf '%s\n' "$id"
}

bl_transition() { # dir stage
  local dir=$1 stage=$2 from
  from=$(jq -r .stage "$dir/state.json")
  jq --arg s "$stage" --arg ts "$(bl_now)" '.stage=$s | .last_checkpoint=$ts' \
    "$dir/state.json" > "$dir/state.json.tmp" && mv "$dir/state.json.tmp" "$dir/state.json"
  echo "{\"ts\":\"$(bl_now)\",\"event\":\"stage_transition\",\"from\":\"$from\",\"to\":\"$stage\"}" >> "$dir/events.ndjson"
}

bl_add_ctx() { # dir file desc
  local dir=$1 file=$2 desc=$3 n last name digest base=${2##*/}
  last=$(ls "$dir/ctx" | grep -E '^[0-9]+_' | sed 's/_.*//' | sort -n | tail -1)
  n=$(( last < 100 ? 100 : last + 10 ))
  name="${n}_${desc}.${base#*.}"
  cp "$file" "$dir/ctx/$name"
  digest=$(cat "$dir"/ctx/* | sha256sum | cut -d' ' -f1)
  jq --arg d "$digest" '.ctx_digest=$d' "$dir/state.json" > "$dir/state.json.tmp" &&
    mv "$dir/state.json.tmp" "$dir/state.json"
  echo "{\"ts\":\"$(bl_now)\",\"event\":\"evidence_added\",\"file\":\"$name\"}" >> "$dir/events.ndjson"
}

bl_commit() { # dir
  local dir=$1 start now
  bl_transition "$dir" DONE
  start=$(jq -r .last_checkpoint "$dir/state.json")
  echo "{\"ts\":\"$(bl_now)\",\"event\":\"txn_commit\",\"start\":\"$start\"}" >> "$dir/events.ndjson"
}

bl_lifecycle() { # root file1 file2
  local root=$1 id dir
  id=$(bl_create "$root" "Deploy API v2.1.0")
  dir="$root/ttm/txns/$id"
  bl_add_ctx "$dir" "$2" artifact
  bl_add_ctx "$dir" "$3" config
  bl_transition "$dir" SELECT
  bl_transition "$dir" ASSEMBLE
  bl_transition "$dir" EXECUTE
  bl_transition "$dir" VALIDATE
  bl_commit "$dir"
}
