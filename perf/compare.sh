#!/usr/bin/env bash
# Old and new, interleaved: runs cc-perf as built from OLD (a git ref) and
# from this working tree alternately, ROUNDS times each (old first in odd
# rounds, new first in even ones), with the same cc-perf arguments, and
# keeps each run's Markdown table in OUT (default perf-compare-<time>/).
# Each run builds its own cc-control, cc-swarm and cc-agent from its tree,
# and compares against its own raw baseline, so ratios are same-run.
#
#   bash perf/compare.sh OLD [ROUNDS] [-- cc-perf arguments]
#   bash perf/compare.sh HEAD~3 2 -- --sizes 1000,10000 --reps 20 --restart 0 --idle 0
set -euo pipefail
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in ""|-h|--help) usage; exit 0 ;; esac
old=$1; shift
rounds=1
if [[ $# -gt 0 && $1 != -- ]]; then rounds=$1; shift; fi
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: ROUNDS must be a positive number, not '$rounds'" >&2; exit 2; }
[[ ${1:-} == -- ]] && shift
root=$(git rev-parse --show-toplevel)
cd "$root"
oldrev=$(git rev-parse --verify --quiet "$old^{commit}") || { echo "compare.sh: '$old' is not a commit here" >&2; exit 2; }
out=${OUT:-$root/perf-compare-$(date -u +%Y%m%dT%H%M%S)}
mkdir -p "$out"
tree=$(mktemp -d /tmp/cc-perf-old.XXXXXX)
cleanup() { git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"; }
trap cleanup EXIT
git worktree add --detach --quiet "$tree" "$oldrev"
(cd "$tree" && go build -o "$out/cc-perf-old" ./cmd/cc-perf)
go build -o "$out/cc-perf-new" ./cmd/cc-perf
echo "old: $(git log -1 --format='%h %s' "$oldrev")" | tee "$out/README"
echo "new: $(git log -1 --format='%h %s') $(git diff --quiet HEAD || echo '(with uncommitted changes)')" | tee -a "$out/README"
echo "args: $*" | tee -a "$out/README"
args=("$@")
for ((r = 1; r <= rounds; r++)); do
	if ((r % 2)); then order=(old new); else order=(new old); fi
	for which in "${order[@]}"; do
		dir=$root; [[ $which == old ]] && dir=$tree
		echo "== $which, round $r ($(date -u +%H:%M:%S))" >&2
		(cd "$dir" && "$out/cc-perf-$which" --markdown "${args[@]}") >"$out/$which-$r.md" 2>"$out/$which-$r.log" ||
			echo "compare.sh: $which round $r failed, see $out/$which-$r.log" >&2
	done
done
rm -f "$out/cc-perf-old" "$out/cc-perf-new"
for f in "$out"/*.md; do echo "### $(basename "$f" .md)"; cat "$f"; echo; done
echo "tables kept in $out" >&2
