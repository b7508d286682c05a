#!/usr/bin/env bash
# Benchmarks pbatch against the usual peers on deterministic corpora and prints
# pbatch/peer wall-time ratios and pbatch's peak RSS. Run from anywhere:
#
#   bash bench/bench.sh                   # full corpora (~2.5 GiB, 100k + 64 files)
#   BENCH_QUICK=1 bash bench/bench.sh     # smoke run (10k + 8 files)
#   BENCH_MILLION=1 bash bench/bench.sh   # also the 1M-file peak-RSS test (~4 GiB on disk)
#   BENCH_CHMOD=0 bash bench/bench.sh     # without the chmod section
#   BENCH_COMPRESS=0 bash bench/bench.sh  # without the compress section (bench/compress.sh)
#
# Environment: BENCH_DIR (corpora, default /var/tmp/pbatch-bench; kept between
# runs, generated only once), BENCH_RUNS (timed runs per command, default 5),
# BENCH_STRICT=1 (exit 1 when a target is missed), BENCH_CHMOD_DIR (the chmod
# tree, default $BENCH_DIR/chmod, kept; /dev/shm/... for tmpfs, removed
# afterwards). Results go to bench/out/.
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

# --- chmod ---------------------------------------------------------------------
# A tree of empty files (the small corpus's layout: 100 000 files in ~2 000
# directories), so that only walking and metadata syscalls are timed. It lives on
# the disk by default, where permission fixes run (ext4 here: chmod -R takes
# 0.22 s against 0.15 s on tmpfs). Every command leaves files 0644 and
# directories 0755; a --prepare run (not timed) breaks all entries, or 1 % of
# the files, before each timed run.
CHMOD=${BENCH_CHMOD:-1}
if [[ $CHMOD != 0 ]]; then
	CHMOD_DIR=${BENCH_CHMOD_DIR:-$BENCH_DIR/chmod}
	n=100000
	[[ ${BENCH_QUICK:-} == 1 ]] && n=10000
	log "chmod tree: $CHMOD_DIR ($n empty files)"
	"$OUT/gencorpus" -q -out "$CHMOD_DIR" -small "$n" -small-min 0 -small-max 0 -large 0
	T=$CHMOD_DIR/small
	qt=$(printf '%q' "$T")
	pb=$(printf '%q' "$PB")
	# The peers do the same work as pbatch: files 0644, directories 0755.
	right="find $qt -type f -exec chmod 0644 {} + -o -type d -exec chmod 0755 {} +"
	all_wrong="find $qt -type f -exec chmod 0600 {} + -o -type d -exec chmod 0700 {} +"
	few_wrong="find $qt -type f -name '*00.bin' -exec chmod 0600 {} +" # 1 % of the files
	wrong_left() { find "$T" \( -type f ! -perm 0644 \) -o \( -type d ! -perm 0755 \) | wc -l; }
	nentries=$(find "$T" | wc -l)
	nfew=$(find "$T" -type f -name '*00.bin' | wc -l)
	# A fast pbatch that changes nothing, or the wrong entries, must not pass.
	chmod_check() { # WHAT PREPARE WANT_LINES
		local lines
		eval "$2"
		lines=$("$PB" chmod -q -w "$NPROC" --files 0644 --dirs 0755 "$T" | wc -l)
		[[ $lines == "$3" && $(wrong_left) == 0 ]] ||
			{ echo "bench.sh: pbatch chmod ($1): $lines lines (want $3), $(wrong_left) entries still wrong" >&2; exit 1; }
	}
	log "checking pbatch chmod against find -perm"
	chmod_check all "$all_wrong" "$nentries"
	chmod_check few "$few_wrong" "$nfew"
	chmod_bench() { # NAME PREPARE
		log "load average before chmod-$1: $(cut -d' ' -f1-3 /proc/loadavg)"
		hyperfine --warmup 1 --runs "$RUNS" --style basic --prepare "$2" \
			--export-json "$OUT/chmod-$1.json" --export-markdown "$OUT/chmod-$1.md" \
			-n pbatch "$pb chmod -q -w $NPROC --files 0644 --dirs 0755 $qt >/dev/null" \
			-n chmod-R "chmod -R u=rwX,go=rX $qt" \
			-n find-exec "$right" \
			-n find-perm "find $qt -type f ! -perm 0644 -exec chmod 0644 {} + -o -type d ! -perm 0755 -exec chmod 0755 {} +" \
			-n xargs-chmod "find $qt -print0 | xargs -0 -P$NPROC -n1024 chmod u=rwX,go=rX"
	}
	eval "$right"
	chmod_bench all "$all_wrong"
	chmod_bench few "$few_wrong"
	echo "chmod:    $(chmod --version | head -1); $(find --version | head -1); $nentries entries in $T ($(stat -f -c %T "$T"))" >>"$OUT/env.txt"
	if [[ -n ${BENCH_CHMOD_DIR:-} ]]; then
		# Only what gencorpus wrote: BENCH_CHMOD_DIR may name a directory that holds more.
		rm -rf "$T" "$CHMOD_DIR"/.stamp-small*
		rmdir "$CHMOD_DIR" 2>/dev/null || true
	fi
fi

# --- compress ------------------------------------------------------------------
# bench/compress.sh: ~1.8 GB of log-like text and one 1 GiB file on tmpfs;
# pbatch compress vs pigz, xargs gzip, zstd -T and xargs zstd. Its report is
# printed now and appended to ratios.txt below.
COMPRESS=${BENCH_COMPRESS:-1}
if [[ $COMPRESS != 0 ]]; then
	PB=$PB GENCORPUS=$OUT/gencorpus bash bench/compress.sh
fi

# --- report --------------------------------------------------------------------
python3 - "$OUT" "${BENCH_STRICT:-}" "$CHMOD" <<'EOF' | tee "$OUT/ratios.txt"
import json, sys, os
out, strict, chmod = sys.argv[1], sys.argv[2] == "1", sys.argv[3] != "0"
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

if chmod:
    # (scenario, what the prepare run leaves wrong, target: pbatch / best peer)
    print("\nchmod --files 0644 --dirs 0755, pbatch / peer (lower is better):")
    for scen, what, target in (("all", "every entry wrong", 1 / 1.7), ("few", "1 % of files wrong", 1 / 5)):
        res = {r["command"]: r for r in json.load(open(os.path.join(out, f"chmod-{scen}.json")))["results"]}
        pb = res.pop("pbatch")["median"]
        print(f"  {scen} ({what}): pbatch {pb:.3f} s")
        for name, r in sorted(res.items(), key=lambda kv: kv[1]["median"]):
            print(f"    /{name:12} {r['median']:7.3f} s = {pb / r['median']:.2f}")
        best = min(res, key=lambda k: res[k]["median"])
        ratio = pb / res[best]["median"]
        ok = ratio <= target
        missed += not ok
        print(f"    pbatch / best peer ({best}) = {ratio:.2f}  (target <= {target:.2f}, i.e. {1 / target:.1f}x faster: {'ok' if ok else 'MISSED'})")
print(f"\nhyperfine exports: {out}/{{small,large,chmod-all,chmod-few}}.{{json,md}}")
if missed:
    print(f"{missed} target(s) missed")
    if strict:
        sys.exit(1)
EOF
if [[ $COMPRESS != 0 ]]; then
	printf '\n' >>"$OUT/ratios.txt"
	cat "$OUT/compress.txt" >>"$OUT/ratios.txt"
	if [[ ${BENCH_STRICT:-} == 1 && $(cat "$OUT/compress-missed") != 0 ]]; then
		exit 1
	fi
fi
