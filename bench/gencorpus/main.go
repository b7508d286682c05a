// Command gencorpus writes the deterministic file trees that bench/bench.sh hashes.
//
//	gencorpus -out DIR [-small N] [-small-min B] [-small-max B] [-large N] [-large-size B]
//	gencorpus -out DIR -million
//	gencorpus -out DIR -logs [-logs-n N] [-logs-big N] [-logs-big-size B] [-logs-single-size B]
//
// It writes up to two sets below DIR:
//
//	DIR/small/aNN/bNN/fNNNNNNN.bin          N small files, ~50 per directory,
//	DIR/small/aNN/bNN/cNNN/fNNNNNNN.bin     in directories 2 or 3 levels deep
//	DIR/large/fNNN.bin                      N large files
//
// With -logs it writes the compression corpus instead, log-like text (timestamps,
// levels, components, request lines with ids, numbers and addresses; gzip -6
// makes it about 3-4 times smaller):
//
//	DIR/logs/small/aNN/bNN/fNNNNNNN.log     N files of 1 KiB to 2 MiB (log-uniform)
//	DIR/logs/big/fNNN.log                   N files of 256 MiB
//	DIR/single/f000.log                     one file of 1 GiB
//
// Every byte comes from a PCG generator seeded with a constant and the file's
// index, so the same flags give the same tree, byte for byte, whatever the order
// the files are written in. When a set is complete, a stamp file recording its
// parameters is written (DIR/.stamp-small, DIR/.stamp-large); a later run with
// the same parameters does nothing for that set. A set interrupted half way is
// resumed: files that already have their final size are kept (they are written
// in one write, so a complete size means complete content). A set whose
// parameters changed is removed and rewritten.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const seed = 0x9e3779b97f4a7c15 // fixed: the corpus must be the same on every run

// filesPerDir is the average number of small files in one leaf directory:
// 100 000 files give 2 000 directories.
const filesPerDir = 50

func main() {
	var (
		out       = flag.String("out", "", "directory to write the corpus into (required)")
		small     = flag.Int("small", 100000, "number of small files (0: none)")
		smallMin  = flag.Int("small-min", 1<<10, "smallest small-file size in bytes")
		smallMax  = flag.Int("small-max", 8<<10, "largest small-file size in bytes")
		large     = flag.Int("large", 64, "number of large files (0: none)")
		largeSize = flag.Int64("large-size", 32<<20, "size of each large file in bytes")
		million   = flag.Bool("million", false, "memory-test corpus: 1 000 000 files of 64 bytes, no large files (overrides -small*, -large)")
		jobs      = flag.Int("j", max(8, 4*runtime.NumCPU()), "files written at once")
		quiet     = flag.Bool("q", false, "print nothing unless something fails")

		logs        = flag.Bool("logs", false, "compression corpus of log-like text (DIR/logs/small, DIR/logs/big, DIR/single) instead of -small/-large")
		logsN       = flag.Int("logs-n", 3800, "with -logs: number of log files of 1 KiB to 2 MiB (about 1 GB in all)")
		logsBig     = flag.Int("logs-big", 3, "with -logs: number of big log files")
		logsBigSize = flag.Int64("logs-big-size", 256<<20, "with -logs: size of each big log file")
		logsSingle  = flag.Int64("logs-single-size", 1<<30, "with -logs: size of the single file in DIR/single (0: none)")
	)
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: gencorpus -out DIR [-small N] [-large N] [-million] (see -h)")
		os.Exit(2)
	}
	if *million {
		*small, *smallMin, *smallMax, *large = 1000000, 64, 64, 0
	}
	if *small < 0 || *large < 0 || *smallMin < 0 || *smallMax < *smallMin || *largeSize < 0 {
		fmt.Fprintln(os.Stderr, "gencorpus: sizes and counts must be >= 0 and -small-min <= -small-max")
		os.Exit(2)
	}
	logf := func(format string, a ...any) {
		if !*quiet {
			fmt.Fprintf(os.Stderr, "gencorpus: "+format+"\n", a...)
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fatal(err)
	}
	if *logs {
		if *logsN < 0 || *logsBig < 0 || *logsBigSize < 0 || *logsSingle < 0 {
			fmt.Fprintln(os.Stderr, "gencorpus: -logs-* sizes and counts must be >= 0")
			os.Exit(2)
		}
		if err := makeLogs(*out, *logsN, *logsBig, *logsBigSize, *logsSingle, *jobs, logf); err != nil {
			fatal(err)
		}
		return
	}
	if *small > 0 {
		s := set{
			dir:   filepath.Join(*out, "small"),
			stamp: filepath.Join(*out, ".stamp-small"),
			params: fmt.Sprintf("gencorpus v1 small n=%d min=%d max=%d per-dir=%d seed=%#x",
				*small, *smallMin, *smallMax, filesPerDir, uint64(seed)),
			n:    *small,
			jobs: *jobs,
			path: smallPathFunc(*small),
			size: func(r *rand.Rand) int64 { return int64(*smallMin + r.IntN(*smallMax-*smallMin+1)) },
		}
		if err := s.make(logf); err != nil {
			fatal(err)
		}
	}
	if *large > 0 {
		s := set{
			dir:    filepath.Join(*out, "large"),
			stamp:  filepath.Join(*out, ".stamp-large"),
			params: fmt.Sprintf("gencorpus v1 large n=%d size=%d seed=%#x", *large, *largeSize, uint64(seed)),
			n:      *large,
			jobs:   max(2, runtime.NumCPU()),
			path:   func(i int) string { return fmt.Sprintf("f%03d.bin", i) },
			size:   func(*rand.Rand) int64 { return *largeSize },
		}
		if err := s.make(logf); err != nil {
			fatal(err)
		}
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "gencorpus: %v\n", err)
	os.Exit(1)
}

// smallPathFunc spreads n files over n/filesPerDir leaf directories, in runs of
// consecutive indices (writing one directory at a time keeps ext4 allocation
// local). Leaf directory j is a{j%20}/b{k%50} when k = j/20 < 50 and
// a{j%20}/b{k%50}/c{k/50} otherwise, so half the leaves (for 100 000 files) sit
// 2 levels deep and half 3 levels deep, below directories that also hold files.
func smallPathFunc(n int) func(int) string {
	dirs := max(1, n/filesPerDir)
	return func(i int) string {
		j := int(int64(i) * int64(dirs) / int64(n))
		k := j / 20
		var b strings.Builder
		b.Grow(32)
		fmt.Fprintf(&b, "a%02d/b%02d/", j%20, k%50)
		if k >= 50 {
			fmt.Fprintf(&b, "c%03d/", k/50)
		}
		fmt.Fprintf(&b, "f%07d.bin", i)
		return b.String()
	}
}

// set is one group of files with its stamp.
type set struct {
	dir, stamp string
	params     string // the stamp's content: everything that determines the files
	n, jobs    int
	path       func(i int) string       // relative to dir
	size       func(r *rand.Rand) int64 // drawn first from file i's generator
	// write writes one file of size bytes from r; nil: random bytes (writeFile).
	write func(p string, size int64, r *rand.Rand, buf []byte) ([]byte, error)
}

func (s *set) make(logf func(string, ...any)) error {
	if b, err := os.ReadFile(s.stamp); err == nil && string(b) == s.params+"\n" {
		logf("%s: complete (%s), nothing to do", s.dir, s.params)
		return nil
	}
	// The parameters are recorded before writing starts, so an interrupted run
	// can be resumed, and a run with other parameters knows to start over.
	started := s.stamp + ".partial"
	b, err := os.ReadFile(started)
	resume := false
	switch {
	case err == nil && string(b) == s.params+"\n":
		logf("%s: resuming an interrupted run", s.dir)
		resume = true
	case err == nil || !errors.Is(err, fs.ErrNotExist) || exists(s.dir):
		logf("%s: parameters changed or unknown; removing it", s.dir)
		os.Remove(s.stamp)
		if err := os.RemoveAll(s.dir); err != nil {
			return err
		}
	}
	os.Remove(s.stamp)
	if err := os.WriteFile(started, []byte(s.params+"\n"), 0o644); err != nil {
		return err
	}

	t0 := time.Now()
	var next, done, kept atomic.Int64
	var bytes atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var madeDirs dirSet
	var wg sync.WaitGroup
	for range s.jobs {
		wg.Go(func() {
			var buf []byte
			for {
				i := int(next.Add(1) - 1)
				if i >= s.n {
					return
				}
				r := rand.New(rand.NewPCG(seed, uint64(i)))
				size := s.size(r)
				p := filepath.Join(s.dir, s.path(i))
				if resume {
					if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() && st.Size() == size {
						kept.Add(1)
						done.Add(1)
						continue
					}
				}
				if d := filepath.Dir(p); !madeDirs.has(d) {
					if err := os.MkdirAll(d, 0o755); err != nil {
						setErr(&mu, &firstErr, err)
						return
					}
					madeDirs.add(d)
				}
				write := s.write
				if write == nil {
					write = writeFile
				}
				var err error
				buf, err = write(p, size, r, buf)
				if err != nil {
					setErr(&mu, &firstErr, err)
					return
				}
				bytes.Add(size)
				if d := done.Add(1); d%100000 == 0 {
					logf("%s: %d/%d files", s.dir, d, s.n)
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	// Make the stamp durable only once the data is: a crash must not leave a
	// stamp over files the kernel never wrote.
	syncFS(s.dir)
	if err := os.WriteFile(s.stamp, []byte(s.params+"\n"), 0o644); err != nil {
		return err
	}
	os.Remove(started)
	el := time.Since(t0)
	logf("%s: %d files (%d kept from an earlier run), %s written in %s (%.0f MiB/s, %.0f files/s)",
		s.dir, s.n, kept.Load(), mib(bytes.Load()), el.Round(time.Millisecond),
		float64(bytes.Load())/(1<<20)/el.Seconds(), float64(s.n-int(kept.Load()))/el.Seconds())
	return nil
}

// dirSet remembers directories already created, so that each file costs one
// open and one write, not a MkdirAll walk as well.
type dirSet struct{ m sync.Map }

func (d *dirSet) has(p string) bool { _, ok := d.m.Load(p); return ok }
func (d *dirSet) add(p string)      { d.m.Store(p, struct{}{}) }

func setErr(mu *sync.Mutex, dst *error, err error) {
	mu.Lock()
	if *dst == nil {
		*dst = err
	}
	mu.Unlock()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// chunk bounds the buffer a large file is generated through.
const chunk = 4 << 20

// writeFile writes size pseudo-random bytes from r to p. Small files are written
// in one write; large ones in chunks from a reused buffer.
func writeFile(p string, size int64, r *rand.Rand, buf []byte) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return buf, err
	}
	for left := size; left > 0; {
		n := int(min(left, chunk))
		if cap(buf) < n {
			buf = make([]byte, (n+7)&^7)
		}
		b := buf[:(n+7)&^7]
		for i := 0; i < len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], r.Uint64())
		}
		if _, err := f.Write(b[:n]); err != nil {
			f.Close()
			return buf, err
		}
		left -= int64(n)
	}
	return buf, f.Close()
}

func syncFS(dir string) {
	f, err := os.Open(dir)
	if err != nil {
		return
	}
	defer f.Close()
	unix.Syncfs(int(f.Fd())) // best effort
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }
