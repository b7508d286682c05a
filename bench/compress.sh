#!/usr/bin/env bash
# The compress section of bench/bench.sh (which runs it unless BENCH_COMPRESS=0);
# it also runs alone: bash bench/compress.sh. See bench/README.md, "compress".
#
# A corpus of log-like text on tmpfs (gencorpus -logs: ~1 GB of files of 1 KiB to
# 2 MiB plus 3 files of 256 MiB, and one file of 1 GiB), compressed WITHOUT --rm,
# so the inputs stay; hyperfine's --prepare removes every output before each run.
#
#   gzip -6: pbatch compress vs pigz -r and find | xargs -P gzip
#   zstd -3: pbatch compress vs zstd -T -r and find | xargs -P zstd
#   one 1 GiB file: pbatch -w 1 vs -w 2 (and pigz as a reference)
#
# Environment (besides bench.sh's BENCH_QUICK, BENCH_STRICT): BENCH_COMPRESS_DIR
# (corpus, default /dev/shm/pbatch-bench-compress, removed afterwards unless
# BENCH_COMPRESS_KEEP=1), BENCH_COMPRESS_RUNS (timed runs per command, default 3).
# Writes bench/out/compress-*.{json,md}, compress-sizes.txt, compress-rss.txt,
# compress.txt (the report) and compress-missed (the number of missed targets).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
NPROC=$(nproc)
RUNS=${BENCH_COMPRESS_RUNS:-3}
CDIR=${BENCH_COMPRESS_DIR:-/dev/shm/pbatch-bench-compress}
mkdir -p "$OUT"

log() { printf '==> %s\n' "$*" >&2; }

missing=()
for t in pigz zstd gzip hyperfine; do
	command -v "$t" >/dev/null || missing+=("$t")
done
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	sudo=""
	((EUID == 0)) || sudo=sudo
	$sudo apt-get install -y "${missing[@]}" >/dev/null ||
		{ $sudo apt-get update >/dev/null && $sudo apt-get install -y "${missing[@]}" >/dev/null; }
fi

# bench.sh passes its builds; alone, build them here.
PB=${PB:-}
GENCORPUS=${GENCORPUS:-}
if [[ -z $PB || -z $GENCORPUS ]]; then
	log "building pbatch and gencorpus into bench/out/"
	go build -o "$OUT/pbatch" .
	go build -o "$OUT/gencorpus" ./bench/gencorpus
	PB=$OUT/pbatch GENCORPUS=$OUT/gencorpus
fi

# Two runs on one corpus would delete each other's outputs: wait for the other.
mkdir -p "$(dirname "$CDIR")"
exec 9>"$CDIR.lock"
if ! flock -n 9; then
	log "another compress benchmark holds $CDIR.lock; waiting for it"
	flock 9
fi

if [[ ${BENCH_QUICK:-} == 1 ]]; then
	genflags=(-logs-n 400 -logs-big 1 -logs-big-size $((64 << 20)) -logs-single-size $((256 << 20)))
else
	genflags=(-logs-n 3800 -logs-big 3 -logs-big-size $((256 << 20)) -logs-single-size $((1 << 30)))
fi
log "compress corpus: $CDIR (log-like text on tmpfs)"
"$GENCORPUS" -q -out "$CDIR" -logs "${genflags[@]}"
T=$CDIR/logs
S=$CDIR/single/f000.log
qt=$(printf '%q' "$T")
qs=$(printf '%q' "$S")
pb=$(printf '%q' "$PB")
nin=$(find "$T" -type f -name '*.log' | wc -l)
inbytes=$(find "$T" -type f -name '*.log' -printf '%s\n' | awk '{s += $1} END {print s}')
clean="find $qt $(printf '%q' "$CDIR/single") \\( -name '*.gz' -o -name '*.zst' \\) -delete"

# Commands: NAME, then the shell command. Each run starts from a tree without outputs.
gzip_cmds=(
	pbatch "$pb compress -q -w $NPROC --format gzip -l 6 $qt"
	pigz "pigz -p$NPROC -6 -k -r $qt"
	xargs-gzip "find $qt -type f -name '*.log' -print0 | xargs -0 -P$NPROC -n64 gzip -6 -k"
)
zstd_cmds=(
	pbatch "$pb compress -q -w $NPROC --format zstd -l 3 $qt"
	pbatch-l1 "$pb compress -q -w $NPROC --format zstd -l 1 $qt"
	zstd-T "zstd -T$NPROC -3 -r -q -k $qt"
	xargs-zstd "find $qt -type f -name '*.log' -print0 | xargs -0 -P$NPROC -n64 zstd -3 -q -k"
)
single_cmds=(
	pbatch-w1 "$pb compress -q -w 1 --format gzip -l 6 $qs"
	pbatch-w2 "$pb compress -q -w 2 --format gzip -l 6 $qs"
	pigz "pigz -p$NPROC -6 -k $qs"
)

# sizes GROUP EXT CMDS...: one untimed run of each command (a warmup too), which
# must write one output per input; records the total output size. pbatch's
# outputs are checked with the real gzip -t / zstd -t, and a sample decoded and
# compared with its input, so a fast but wrong pbatch cannot pass.
sizes() {
	local group=$1 ext=$2 name cmd n outbytes tool
	shift 2
	tool=gzip
	[[ $ext == zst ]] && tool=zstd
	while (($#)); do
		name=$1 cmd=$2
		shift 2
		eval "$clean"
		log "$group: $name (untimed run for the output size)"
		eval "$cmd" >/dev/null
		n=$(find "$T" -type f -name "*.log.$ext" | wc -l)
		[[ $n == "$nin" ]] || { echo "compress.sh: $name wrote $n .$ext files for $nin inputs" >&2; exit 1; }
		outbytes=$(find "$T" -type f -name "*.log.$ext" -printf '%s\n' | awk '{s += $1} END {print s}')
		echo "$group $name $inbytes $outbytes" >>"$OUT/compress-sizes.txt"
		if [[ $name == pbatch* ]]; then
			log "$group: checking pbatch's outputs with $tool -t and by decoding a sample"
			find "$T" -type f -name "*.log.$ext" -print0 | xargs -0 -P"$NPROC" -n64 "$tool" -t -q
			find "$T" -type f -name '*.log' | awk 'NR % 97 == 1' | while read -r f; do
				"$tool" -dc -- "$f.$ext" | cmp -s - "$f" || { echo "compress.sh: $f.$ext does not decode to $f" >&2; exit 1; }
			done
			for f in "$T"/big/*.log; do
				"$tool" -dc -- "$f.$ext" | cmp -s - "$f" || { echo "compress.sh: $f.$ext does not decode to $f" >&2; exit 1; }
			done
		fi
	done
	eval "$clean"
}

# timeit NAME CMDS...: one hyperfine run over the commands, outputs removed before each.
timeit() {
	local name=$1 args=()
	shift
	while (($#)); do
		args+=(-n "$1" "$2")
		shift 2
	done
	log "load average before compress-$name: $(cut -d' ' -f1-3 /proc/loadavg)"
	hyperfine --runs "$RUNS" --style basic --prepare "$clean" \
		--export-json "$OUT/compress-$name.json" --export-markdown "$OUT/compress-$name.md" "${args[@]}"
}

# rss NAME ARGS...: pbatch's peak RSS (KiB) and wall seconds for one run.
rss() {
	local name=$1 t
	shift
	t=$(mktemp)
	eval "$clean"
	/usr/bin/time -v -o "$t" "$PB" "$@" >/dev/null
	echo "$name $(sed -n 's/.*Maximum resident set size (kbytes): //p' "$t") $(sed -n 's/.*Elapsed (wall clock) time.*: //p' "$t")" >>"$OUT/compress-rss.txt"
	rm -f "$t"
}

: >"$OUT/compress-sizes.txt"
: >"$OUT/compress-rss.txt"
sizes gzip gz "${gzip_cmds[@]}"
sizes zstd zst "${zstd_cmds[@]}"
timeit gzip "${gzip_cmds[@]}"
timeit zstd "${zstd_cmds[@]}"
timeit single "${single_cmds[@]}"

# decompress: pbatch's own outputs moved to a tree of their own (DC/gz, DC/zst),
# decoded by pbatch decompress and by find | xargs -P gzip -d / zstd -d; the
# decoded files are removed before each run. A sample must decode to the input.
DC=$CDIR/dc
rm -rf "$DC"
for ext in gz zst; do
	format=gzip
	[[ $ext == zst ]] && format=zstd
	eval "$clean"
	"$PB" compress -q -w "$NPROC" --format "$format" "$T" >/dev/null
	(cd "$T" && find . -name "*.log.$ext" -print0 | while IFS= read -r -d '' f; do
		mkdir -p "$DC/$ext/${f%/*}" && mv "$f" "$DC/$ext/$f"
	done)
done
eval "$clean"
dclean="find $(printf '%q' "$DC") -type f -name '*.log' -delete"
log "decompress: checking pbatch decompress against the inputs"
"$PB" decompress -q -w "$NPROC" "$DC" >/dev/null
(cd "$T" && find . -type f -name '*.log' | awk 'NR % 97 == 1') | while read -r f; do
	for ext in gz zst; do
		cmp -s "$DC/$ext/$f" "$T/$f" || { echo "compress.sh: pbatch decompress of $DC/$ext/$f.$ext differs from $T/$f" >&2; exit 1; }
	done
done
qdc=$(printf '%q' "$DC")
for ext in gz zst; do
	tool=gzip
	[[ $ext == zst ]] && tool="zstd -q"
	log "load average before decompress-$ext: $(cut -d' ' -f1-3 /proc/loadavg)"
	hyperfine --runs "$RUNS" --style basic --prepare "$dclean" \
		--export-json "$OUT/decompress-$ext.json" --export-markdown "$OUT/decompress-$ext.md" \
		-n pbatch "$pb decompress -q -w $NPROC $qdc/$ext" \
		-n "xargs-${tool% *}" "find $qdc/$ext -type f -name '*.$ext' -print0 | xargs -0 -P$NPROC -n64 $tool -d -k"
done
eval "$dclean"
log "peak RSS of pbatch compress"
rss gzip-tree compress -q -w "$NPROC" --format gzip -l 6 "$T"
rss zstd-tree compress -q -w "$NPROC" --format zstd -l 3 "$T"
rss gzip-single-w1 compress -q -w 1 --format gzip -l 6 "$S"
rss gzip-single-w2 compress -q -w 2 --format gzip -l 6 "$S"
eval "$clean"
log "ratio and encoder speed at each level (bench/levels, 64 MiB sample)"
go run ./bench/levels -mb 64 "$T/small" >"$OUT/compress-levels.txt"
{
	echo "compress: $(pigz --version 2>&1); $(gzip --version | head -1); $(zstd --version)"
	echo "compress corpus: $nin files, $inbytes bytes in $T; $(stat -c %s "$S") bytes in $S (tmpfs)"
} >"$OUT/compress-env.txt"
stat -c %s "$S" >"$OUT/compress-single-bytes"
if [[ ${BENCH_COMPRESS_KEEP:-} != 1 ]]; then
	# Only what gencorpus wrote: BENCH_COMPRESS_DIR may name a directory that holds more.
	rm -rf "$CDIR/logs" "$CDIR/single" "$CDIR/dc" "$CDIR"/.stamp-logs-* "$CDIR"/.stamp-single*
	rmdir "$CDIR" 2>/dev/null || true
fi

python3 - "$OUT" <<'EOF' | tee "$OUT/compress.txt"
import json, os, sys
out = sys.argv[1]
print(open(os.path.join(out, "compress-env.txt")).read().rstrip())
size = {}
for line in open(os.path.join(out, "compress-sizes.txt")):
    group, name, inb, outb = line.split()
    size[group, name] = (int(inb), int(outb))
missed = 0

def verdict(ok):
    global missed
    missed += not ok
    return "ok" if ok else "MISSED"

for group, target in (("gzip", 4.0), ("zstd", 1.2)):
    res = {r["command"]: r for r in json.load(open(os.path.join(out, f"compress-{group}.json")))["results"]}
    pb = res.pop("pbatch")["median"]
    l1 = res.pop("pbatch-l1", None)
    inb, pbout = size[group, "pbatch"]
    print(f"\ncompress {group} (median wall s, MB/s of input, output/input):")
    print(f"  {'pbatch':12} {pb:8.2f} s  {inb / pb / 1e6:7.0f} MB/s  ratio {pbout / inb:.3f} ({inb / pbout:.2f}x)")
    if l1:
        o = size[group, "pbatch-l1"][1]
        print(f"  {'pbatch-l1':12} {l1['median']:8.2f} s  {inb / l1['median'] / 1e6:7.0f} MB/s  ratio {o / inb:.3f} ({inb / o:.2f}x)")
    for name, r in sorted(res.items(), key=lambda kv: kv[1]["median"]):
        o = size[group, name][1]
        print(f"  {name:12} {r['median']:8.2f} s  {inb / r['median'] / 1e6:7.0f} MB/s  ratio {o / inb:.3f} ({inb / o:.2f}x)"
              f"  -> pbatch {r['median'] / pb:.2f}x faster")
    best = min(res, key=lambda k: res[k]["median"])
    speedup = res[best]["median"] / pb
    line = f"  pbatch vs best peer ({best}): {speedup:.2f}x faster (target >= {target}x: {verdict(speedup >= target)})"
    if group == "zstd":
        ok = pbout <= size[group, best][1]
        line += f"; output {pbout / size[group, best][1]:.3f} of the peer's (target <= 1: {verdict(ok)})"
    print(line)
    if l1:
        o = size[group, "pbatch-l1"][1]
        print(f"  not a target, for the record: pbatch -l 1 is {res[best]['median'] / l1['median']:.2f}x as fast as {best} -3"
              f" with an output {o / size[group, best][1]:.3f} of its size (on this corpus the real zstd -1 also beats -3 on ratio)")

res = {r["command"]: r for r in json.load(open(os.path.join(out, "compress-single.json")))["results"]}
w1, w2 = res["pbatch-w1"]["median"], res["pbatch-w2"]["median"]
single = open(os.path.join(out, "compress-single-bytes")).read()
print(f"\none file of {int(single) / 2**20:.0f} MiB, gzip -6 (median wall s):")
for name, r in res.items():
    print(f"  {name:12} {r['median']:8.2f} s")
print(f"  -w 2 vs -w 1: {w1 / w2:.2f}x faster (target >= 1.7x: {verdict(w1 / w2 >= 1.7)})")

print("\ndecompress, pbatch's outputs of the tree (median wall s):")
for ext in ("gz", "zst"):
    res = {r["command"]: r["median"] for r in json.load(open(os.path.join(out, f"decompress-{ext}.json")))["results"]}
    pb = res.pop("pbatch")
    (peer, t), = res.items()
    print(f"  {ext:4} pbatch {pb:6.2f} s  {peer} {t:6.2f} s  -> pbatch {t / pb:.2f}x faster (target >= 1: {verdict(t / pb >= 1)})")

print("\npeak RSS of pbatch compress (target <= 64 MiB):")
for line in open(os.path.join(out, "compress-rss.txt")):
    name, kib, wall = line.split()
    mib = int(kib) / 1024
    print(f"  {name:16} {mib:6.1f} MiB  {wall:>8} wall  ({verdict(mib <= 64)})")
print("\nratio per level (bench/levels; speed is one core, in memory: the encoder's ceiling):")
print(open(os.path.join(out, "compress-levels.txt")).read().rstrip())
print(f"\nhyperfine exports: {out}/compress-{{gzip,zstd,single}}.{{json,md}}, decompress-{{gz,zst}}.{{json,md}}")
if missed:
    print(f"{missed} compress target(s) missed")
open(os.path.join(out, "compress-missed"), "w").write(f"{missed}\n")
EOF
