#!/usr/bin/env bash
# The targets of check, the cache, exec and the progress display, against their
# peers in the same run, on the corpora bench.sh generates. Prints ratios
# (pbatch / peer, lower is better) and writes them to bench/out/extra.txt.
#
#   bash bench/extra.sh                # after (or without) bench.sh
#   BENCH_COLD=1 bash bench/extra.sh   # also cold-cache cache runs (drop_caches, root)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
BENCH_DIR=${BENCH_DIR:-/var/tmp/pbatch-bench}
RUNS=${BENCH_RUNS:-5}
NPROC=$(nproc)
mkdir -p "$OUT"
log() { printf '==> %s\n' "$*" >&2; }
for t in hyperfine python3 sha256sum xargs; do
	command -v "$t" >/dev/null || { echo "extra.sh: $t not found (apt-get install hyperfine)" >&2; exit 1; }
done

go build -o "$OUT/pbatch" .
go build -o "$OUT/gencorpus" ./bench/gencorpus
PB=$OUT/pbatch
CORPUS=$BENCH_DIR/full
[[ ${BENCH_QUICK:-} == 1 ]] && CORPUS=$BENCH_DIR/quick
if [[ ${BENCH_QUICK:-} == 1 ]]; then
	"$OUT/gencorpus" -out "$CORPUS" -small 10000 -large 8
else
	"$OUT/gencorpus" -out "$CORPUS" -small 100000 -large 64
fi
log "warming the page cache: $CORPUS"
find "$CORPUS" -type f -print0 | xargs -0 -P"$NPROC" -n512 cat >/dev/null
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

hf() { # NAME hyperfine-args…
	local name=$1
	shift
	log "load average before $name: $(cut -d' ' -f1-3 /proc/loadavg)"
	hyperfine --warmup 1 --runs "$RUNS" --style basic --export-json "$OUT/extra-$name.json" "$@" >&2
}

# check: manifests made by sha256sum, verified by sha256sum -c and pbatch check,
# from the corpus directory (relative names, as people make them).
for c in small large; do
	(cd "$CORPUS" && find "$c" -type f -print0 | xargs -0 -P"$NPROC" -n256 sha256sum >"$TMP/$c.sums")
	hf "check-$c" -n pbatch-check "cd $CORPUS && $PB check -q -w $NPROC $TMP/$c.sums" \
		-n sha256sum-c "cd $CORPUS && sha256sum -c --quiet $TMP/$c.sums"
done

# cache: a second run over an unchanged tree, page cache warm.
for c in small large; do
	"$PB" hash -q --cache="$TMP/$c.db" "$CORPUS/$c" >"$TMP/$c.first"
	"$PB" hash -q --cache="$TMP/$c.db" "$CORPUS/$c" | sort >"$TMP/$c.second"
	sort "$TMP/$c.first" | cmp -s - "$TMP/$c.second" || { echo "extra.sh: cached output differs ($c)" >&2; exit 1; }
	hf "cache-$c" -n pbatch-cached "$PB hash -q --cache=$TMP/$c.db $CORPUS/$c >/dev/null" \
		-n pbatch "$PB hash -q $CORPUS/$c >/dev/null"
done
if [[ ${BENCH_COLD:-} == 1 ]]; then
	# Cold: the page cache dropped before each run (root only), one run each.
	for c in small large; do
		hyperfine --runs 1 --style basic --export-json "$OUT/extra-cold-$c.json" \
			--prepare 'sync; echo 3 > /proc/sys/vm/drop_caches' \
			-n pbatch-cached "$PB hash -q --cache=$TMP/$c.db $CORPUS/$c >/dev/null" \
			-n pbatch "$PB hash -q $CORPUS/$c >/dev/null" >&2
	done
	find "$CORPUS" -type f -print0 | xargs -0 -P"$NPROC" -n512 cat >/dev/null
fi

# exec -X against xargs -P running the same command on 100k small files.
hf exec -n pbatch-exec-X "$PB exec -q -X -w $NPROC $CORPUS/small -- true" \
	-n xargs "find $CORPUS/small -type f -print0 | xargs -0 -P$NPROC true"

# The progress display's cost on the small-file hash (drawn to a pseudo-file:
# --progress always draws whatever stderr is).
hf progress -n progress-always "$PB hash -q --progress always $CORPUS/small >/dev/null 2>$TMP/bar" \
	-n progress-never "$PB hash -q --progress never $CORPUS/small >/dev/null"

# --bwlimit 50MB/s over ~500 MB of the large corpus: the average rate.
log "--bwlimit 50MB/s over 16 large files (about 11 s)"
start=$(date +%s.%N)
find "$CORPUS/large" -type f | sort | head -16 | "$PB" hash -q --bwlimit 50MB/s - >/dev/null
end=$(date +%s.%N)
bytes=$(find "$CORPUS/large" -type f | sort | head -16 | xargs stat -c %s | paste -sd+ | bc)
echo "$bytes $start $end" >"$OUT/extra-bwlimit.txt"

python3 - "$OUT" <<'EOF' | tee "$OUT/extra.txt"
import json, os, sys
out = sys.argv[1]
def med(name):
    return {r["command"]: r["median"] for r in json.load(open(os.path.join(out, f"extra-{name}.json")))["results"]}
rows = [
    ("check small: pbatch check / sha256sum -c", "check-small", "pbatch-check", "sha256sum-c", 1 / 3),
    ("check large: pbatch check / sha256sum -c", "check-large", "pbatch-check", "sha256sum-c", 1 / 4),
    ("cache small: second run / uncached run", "cache-small", "pbatch-cached", "pbatch", 1 / 2),
    ("cache large: second run / uncached run", "cache-large", "pbatch-cached", "pbatch", 1 / 10),
    ("exec -X / find | xargs -P", "exec", "pbatch-exec-X", "xargs", 1.2),
    ("progress always / never", "progress", "progress-always", "progress-never", 1.03),
]
missed = 0
for label, f, a, b, target in rows:
    m = med(f)
    r = m[a] / m[b]
    ok = r <= target
    missed += not ok
    print(f"{label:45} = {r:5.2f}  ({m[a]:.3f} s / {m[b]:.3f} s; target <= {target:.2f}: {'ok' if ok else 'MISSED'})")
for c in ("small", "large"):
    p = os.path.join(out, f"extra-cold-{c}.json")
    if os.path.exists(p):
        m = {r["command"]: r["median"] for r in json.load(open(p))["results"]}
        print(f"cache {c}, cold page cache: second run {m['pbatch-cached']:.2f} s / uncached {m['pbatch']:.2f} s = {m['pbatch-cached'] / m['pbatch']:.3f}")
b, s, e = open(os.path.join(out, "extra-bwlimit.txt")).read().split()
rate = int(b) / (float(e) - float(s))
print(f"--bwlimit 50MB/s: {rate / 1e6:.1f} MB/s average ({100 * (rate / 50e6 - 1):+.1f}%; target within 10%: {'ok' if abs(rate / 50e6 - 1) <= 0.1 else 'MISSED'})")
if missed:
    print(f"{missed} target(s) missed")
EOF
