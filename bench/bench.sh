#!/usr/bin/env bash
# Benchmarks pbatch against the usual peers on deterministic corpora and prints
# pbatch/peer wall-time ratios and pbatch's peak RSS. Run from anywhere:
#
#   bash bench/bench.sh                   # full corpora (~2.5 GiB, 100k + 64 files)
#   BENCH_QUICK=1 bash bench/bench.sh     # smoke run (10k + 8 files)
#   BENCH_MILLION=1 bash bench/bench.sh   # also the 1M-file peak-RSS test (~4 GiB on disk)
#
# Environment: BENCH_DIR (corpora, default /var/tmp/pbatch-bench; kept between
# runs, generated only once), BENCH_RUNS (timed runs per command, default 5),
# BENCH_STRICT=1 (exit 1 when a target is missed). Results go to bench/out/.
# See bench/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
BENCH_DIR=${BENCH_DIR:-/var/tmp/pbatch-bench}
RUNS=${BENCH_RUNS:-5}
NPROC=$(nproc)
mkdir -p "$OUT" "$BENCH_DIR"

log() { printf '==> %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------
missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v b3sum >/dev/null || missing+=(b3sum)
command -v hashdeep >/dev/null || missing+=(hashdeep)
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	sudo=""
	((EUID == 0)) || sudo=sudo
	$sudo apt-get install -y "${missing[@]}" >/dev/null ||
		{ $sudo apt-get update >/dev/null && $sudo apt-get install -y "${missing[@]}" >/dev/null; }
fi
for t in go python3 hyperfine b3sum hashdeep sha256sum find xargs; do
	command -v "$t" >/dev/null || { echo "bench.sh: $t not found" >&2; exit 1; }
done

# --- build -------------------------------------------------------------------
log "building pbatch and gencorpus into bench/out/"
go build -o "$OUT/pbatch" .
go build -o "$OUT/gencorpus" ./bench/gencorpus
PB=$OUT/pbatch

# --- corpora -----------------------------------------------------------------
if [[ ${BENCH_QUICK:-} == 1 ]]; then
	CORPUS=$BENCH_DIR/quick
	"$OUT/gencorpus" -out "$CORPUS" -small 10000 -large 8
else
	CORPUS=$BENCH_DIR/full
	"$OUT/gencorpus" -out "$CORPUS" -small 100000 -large 64
fi
SMALL=$CORPUS/small
LARGE=$CORPUS/large

# warm reads every file once so that all timed runs hash from the page cache.
warm() {
	log "warming the page cache: $1"
	find "$1" -type f -print0 | xargs -0 -P"$NPROC" -n512 cat >/dev/null
}

# check compares pbatch's digests with sha256sum's and b3sum's, so that a fast
# but wrong pbatch cannot pass.
check() {
	local d=$1 tmp
	tmp=$(mktemp -d)
	log "checking pbatch's digests against sha256sum and b3sum: $d"
	"$PB" hash -q -w "$NPROC" "$d" | sort -k2 >"$tmp/pb"
	find "$d" -type f -print0 | xargs -0 -P"$NPROC" -n256 sha256sum | sort -k2 >"$tmp/ref"
	cmp -s "$tmp/pb" "$tmp/ref" || { echo "bench.sh: pbatch sha256 differs from sha256sum on $d (see $tmp)" >&2; exit 1; }
	"$PB" hash -q -a blake3 -w "$NPROC" "$d" | sort -k2 >"$tmp/pb"
	find "$d" -type f -print0 | xargs -0 -P"$NPROC" -n256 b3sum | sort -k2 >"$tmp/ref"
	cmp -s "$tmp/pb" "$tmp/ref" || { echo "bench.sh: pbatch blake3 differs from b3sum on $d (see $tmp)" >&2; exit 1; }
	rm -rf "$tmp"
}

# bench NAME DIR runs hyperfine over every command for one corpus.
bench() {
	local name=$1 d q
	q=$(printf '%q' "$2")
	local pb
	pb=$(printf '%q' "$PB")
	log "load average before $name: $(cut -d' ' -f1-3 /proc/loadavg) (other processes skew the ratios)"
	hyperfine --warmup 1 --runs "$RUNS" --style basic \
		--export-json "$OUT/$name.json" --export-markdown "$OUT/$name.md" \
		-n pbatch-sha256 "$pb hash -q -w $NPROC $q >/dev/null" \
		-n pbatch-sha256-k "$pb hash -q -k -w $NPROC $q >/dev/null" \
		-n pbatch-blake3 "$pb hash -q -a blake3 -w $NPROC $q >/dev/null" \
		-n xargs-sha256sum "find $q -type f -print0 | xargs -0 -P$NPROC -n256 sha256sum >/dev/null" \
		-n hashdeep "hashdeep -r -j$NPROC -c sha256 $q >/dev/null" \
		-n xargs-b3sum "find $q -type f -print0 | xargs -0 -P$NPROC -n256 b3sum >/dev/null" \
		-n b3sum "find $q -type f -print0 | xargs -0 b3sum >/dev/null"
}

# rss DIR [ARGS...] prints pbatch's peak RSS in KiB, wall seconds, and files/s.
rss() {
	local d=$1 t
	shift
	t=$(mktemp)
	/usr/bin/time -v -o "$t" "$PB" hash "$@" -w "$NPROC" "$d" >/dev/null 2>"$t.err" ||
		{ cat "$t.err" >&2; exit 1; }
	python3 - "$t" "$t.err" <<'EOF'
import re, sys
tv = open(sys.argv[1]).read()
kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", tv)[1])
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", tv)[1].split(":")
secs = sum(float(x) * 60**i for i, x in enumerate(reversed(wall)))
summary = open(sys.argv[2]).read().strip().splitlines()
print(f"{kib} {secs:.2f} {summary[-1] if summary else ''}")
EOF
	rm -f "$t" "$t.err"
}

{
	echo "date:     $(date -Is)"
	echo "commit:   $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+dirty')"
	echo "go:       $(go version)"
	echo "cpu:      $NPROC x $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
	echo "peers:    $(sha256sum --version | head -1); $(b3sum --version); hashdeep $(hashdeep -V)"
	echo "corpus:   $CORPUS"
} >"$OUT/env.txt"

warm "$CORPUS"
check "$SMALL"
check "$LARGE"
bench small "$SMALL"
bench large "$LARGE"

# --- peak RSS ------------------------------------------------------------------
: >"$OUT/rss.txt"
log "peak RSS: $SMALL"
echo "small $(rss "$SMALL" -q)" >>"$OUT/rss.txt"
echo "small-k $(rss "$SMALL" -q -k)" >>"$OUT/rss.txt"
echo "large $(rss "$LARGE" -q)" >>"$OUT/rss.txt"
if [[ ${BENCH_MILLION:-} == 1 ]]; then
	MILLION=$BENCH_DIR/million
	log "1M-file corpus: $MILLION (the first run takes a few minutes and ~4 GiB)"
	"$OUT/gencorpus" -out "$MILLION" -million
	warm "$MILLION"
	log "peak RSS: $MILLION"
	# Without -q, so that the summary line (file count, time) is recorded.
	echo "million $(rss "$MILLION/small")" >>"$OUT/rss.txt"
	echo "million-k $(rss "$MILLION/small" -k)" >>"$OUT/rss.txt"
fi

# --- report --------------------------------------------------------------------
python3 - "$OUT" "${BENCH_STRICT:-}" <<'EOF' | tee "$OUT/ratios.txt"
import json, sys, os
out, strict = sys.argv[1], sys.argv[2] == "1"
print(open(os.path.join(out, "env.txt")).read().rstrip())
print("\nwall time per command (median of runs, seconds):")
med = {}
for corpus in ("small", "large"):
    res = json.load(open(os.path.join(out, corpus + ".json")))["results"]
    for r in res:
        med[corpus, r["command"]] = r["median"]
        print(f"  {corpus:5} {r['command']:16} {r['median']:8.3f}  (min {r['min']:.3f}, max {r['max']:.3f}, ±{r['stddev']:.3f})")

# (corpus, pbatch command, peer, target ratio or None)
rows = [
    ("small", "pbatch-sha256", "xargs-sha256sum", 0.30),
    ("small", "pbatch-sha256", "hashdeep", None),
    ("small", "pbatch-sha256-k", "xargs-sha256sum", None),
    ("small", "pbatch-blake3", "xargs-b3sum", 1.00),
    ("small", "pbatch-blake3", "b3sum", 1.00),
    ("large", "pbatch-sha256", "xargs-sha256sum", 0.25),
    ("large", "pbatch-sha256", "hashdeep", None),
    ("large", "pbatch-sha256-k", "xargs-sha256sum", None),
    ("large", "pbatch-blake3", "xargs-b3sum", 1.00),
    ("large", "pbatch-blake3", "b3sum", 1.00),
]
print("\nratios (pbatch wall time / peer wall time; lower is better, < 1 means pbatch is faster):")
missed = 0
for corpus, pb, peer, target in rows:
    algo = "blake3" if "blake3" in pb else "sha256"
    label = pb.removeprefix("pbatch-").removeprefix(algo).removeprefix("-")
    name = "pbatch" + (" -" + label if label else "")
    ratio = med[corpus, pb] / med[corpus, peer]
    verdict = ""
    if target is not None:
        ok = ratio <= target
        missed += not ok
        verdict = f"  (target <= {target:.2f}: {'ok' if ok else 'MISSED'})"
    print(f"  {corpus} {algo}: {name}/{peer} = {ratio:.2f}{verdict}")

print("\npeak RSS of pbatch hash -w N (target <= 32 MiB, flat in the number of files):")
for line in open(os.path.join(out, "rss.txt")):
    name, kib, secs, *summary = line.split(maxsplit=3)
    mib = int(kib) / 1024
    ok = mib <= 32
    missed += not ok
    extra = f"  [{summary[0].strip()}]" if summary and summary[0].strip() else ""
    print(f"  {name:10} {mib:6.1f} MiB  {float(secs):6.2f} s  ({'ok' if ok else 'MISSED'}){extra}")
print(f"\nhyperfine exports: {out}/{{small,large}}.{{json,md}}")
if missed:
    print(f"{missed} target(s) missed")
    if strict:
        sys.exit(1)
EOF
