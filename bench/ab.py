"""A/B: two pbatch binaries on the bench corpora (bench.sh makes them), run
interleaved (old, new, old, new, ...) so that the host's load hits both alike;
prints the median of each and new/old.

    OLD=/tmp/pbatch-before NEW=bench/out/pbatch python3 bench/ab.py [CASE...]
"""
import subprocess, time, statistics, sys, os, tempfile
OLD=os.environ["OLD"]; NEW=os.environ["NEW"]
C=os.environ.get("BENCH_DIR","/var/tmp/pbatch-bench")+"/full"; S=C+"/small"; L=C+"/large"
N=int(os.environ.get("RUNS","11"))
tmp=tempfile.mkdtemp()
SUMS=os.path.join(tmp,"small.sums"); LIST=os.path.join(tmp,"list")
cases=[
 ("hash sha256, 100k small", ["hash","-q","-w","2",S]),
 ("hash -k, 100k small", ["hash","-q","-k","-w","2",S]),
 ("hash sha256, 64 x 32 MiB", ["hash","-q","-w","2",L]),
 ("list, 100k", ["list","-q",S]),
 ("check, 100k small", ["check","-q","-w","2",SUMS]),
 ("exec -X true, 100k", ["exec","-q","-X","-w","2",S,"--","true"]),
 ("chmod -n 0644, 100k", ["chmod","-q","-n","0644",S]),
 ("hash from stdin list, 100k", ["hash","-q","-w","2","-"]),
]
only=sys.argv[1:]
import shutil, atexit
atexit.register(shutil.rmtree, tmp)
with open(SUMS,"w") as f: subprocess.run([OLD,"hash","-q",S],stdout=f,check=True)
with open(LIST,"w") as f: subprocess.run(["find",S,"-type","f"],stdout=f,check=True)
def run(b,args,stdin):
    t=time.perf_counter()
    subprocess.run([b]+args,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,stdin=open(stdin) if stdin else subprocess.DEVNULL)
    return time.perf_counter()-t
for name,args in cases:
    if only and not any(o in name for o in only): continue
    stdin=LIST if args[-1]=="-" else None
    for b in (OLD,NEW): run(b,args,stdin)
    o=[];n=[]
    for i in range(N):
        o.append(run(OLD,args,stdin)); n.append(run(NEW,args,stdin))
    mo,mn=statistics.median(o),statistics.median(n)
    print(f"{name:30s} old {mo*1000:8.1f} ms  new {mn*1000:8.1f} ms  new/old {mn/mo:.3f}",flush=True)
