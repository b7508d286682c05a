package tasks

import (
	"context"
	"encoding/hex"
	"errors"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// entries walks root (sorted) and returns its entries; the caller calls Done.
func entries(t testing.TB, roots ...string) []walker.Entry {
	t.Helper()
	out := make(chan []walker.Entry, 16)
	errc := make(chan error, 1)
	seq := iter.Seq2[string, error](func(yield func(string, error) bool) {
		for _, r := range roots {
			if !yield(r, nil) {
				return
			}
		}
	})
	go func() {
		errc <- walker.Walk(context.Background(), seq, walker.Options{MaxDepth: -1, Sorted: true}, out)
		close(out)
	}()
	var es []walker.Entry
	for b := range out {
		es = append(es, b...)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return es
}

func TestHashAlgorithmsKnownDigests(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "abc"), []byte("abc"), 0o644)
	want := map[string][2]string{ // algorithm → digest of "" and of "abc"
		"md5":    {"d41d8cd98f00b204e9800998ecf8427e", "900150983cd24fb0d6963f7d28e17f72"},
		"sha1":   {"da39a3ee5e6b4b0d3255bfef95601890afd80709", "a9993e364706816aba3e25717850c26c9cd0d89d"},
		"sha256": {"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		"sha512": {"cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"},
		"blake3": {"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262", "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"},
		"xxh64":  {"ef46db3751d8e999", "44bc2cf5ad770999"},
		"xxh128": {"99aa06d3014798d86001c324468d497f", "06b05ab6733a618578af5f94892f3950"},
	}
	for _, alg := range Algorithms {
		t.Run(alg.Name, func(t *testing.T) {
			w := NewHash(alg, ReadOptions{}).NewWorker()
			for _, e := range entries(t, dir) {
				var r Result
				w.Run(context.Background(), &e, &r)
				e.Done()
				if r.Status != OK {
					t.Fatalf("%s: status %v (%v), want ok", e.Rel, r.Status, r.Err)
				}
				i := 0
				if e.Rel == "abc" {
					i = 1
				}
				if got := hex.EncodeToString(r.Digest()); got != want[alg.Name][i] {
					t.Errorf("%s(%s) = %s, want %s", alg.Name, e.Rel, got, want[alg.Name][i])
				}
			}
		})
	}
}

func TestLookupAlgorithm(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"sha256", true}, {"SHA256", true}, {"blake3", true}, {"xxh128", true}, {"crc32", false}, {"", false}} {
		_, err := LookupAlgorithm(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("LookupAlgorithm(%q): err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestHashStatuses(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	os.Symlink("f", filepath.Join(dir, "link"))
	unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
	os.WriteFile(filepath.Join(dir, "gone"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "swapped"), []byte("x"), 0o644)
	es := entries(t, dir, filepath.Join(dir, "missing"))
	// After listing: one file disappears, one is replaced by a FIFO (opening it
	// must neither block nor read).
	os.Remove(filepath.Join(dir, "gone"))
	os.Remove(filepath.Join(dir, "swapped"))
	unix.Mkfifo(filepath.Join(dir, "swapped"), 0o644)
	want := map[string]Status{
		"f": OK, "link": Skipped, "fifo": Skipped, "gone": Vanished, "swapped": Skipped, "missing": Failed,
	}
	w := NewHash(Algorithms[0], ReadOptions{}).NewWorker()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, e := range es {
			var r Result
			w.Run(context.Background(), &e, &r)
			name := e.Rel
			if name == "" {
				name = filepath.Base(e.Root.Path)
			}
			if r.Status != want[name] {
				t.Errorf("%s: status %v (%v), want %v", name, r.Status, r.Err, want[name])
			}
			e.Done()
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("hashing hung (a FIFO was opened blocking?)")
	}
}

func TestHashReadsToEOFIgnoringStSize(t *testing.T) {
	// procfs reports st_size 0 for files with content.
	es := entries(t, "/proc/self/status")
	w := NewHash(Algorithms[0], ReadOptions{}).NewWorker()
	var r Result
	w.Run(context.Background(), &es[0], &r)
	es[0].Done()
	if r.Status != OK || r.Size == 0 {
		t.Errorf("/proc/self/status: status %v, size %d; want ok and size > 0", r.Status, r.Size)
	}
}

func TestHashDetectsChangeDuringRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "growing")
	if err := os.WriteFile(p, make([]byte, 32<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return
		}
		defer f.Close()
		for {
			select {
			case <-stop:
				return
			default:
				f.Write([]byte("more"))
				time.Sleep(100 * time.Microsecond)
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	w := NewHash(Algorithms[0], ReadOptions{}).NewWorker()
	for range 20 {
		es := entries(t, dir)
		var r Result
		w.Run(context.Background(), &es[0], &r)
		es[0].Done()
		if r.Status == Changed {
			if !errors.Is(r.Err, ErrChanged) || !r.Status.IsFailure() {
				t.Errorf("changed file: err %v, failure %v", r.Err, r.Status.IsFailure())
			}
			return
		}
		if r.Status == OK {
			t.Fatalf("a file appended to during the read got a digest (status ok)")
		}
	}
	t.Fatal("never saw status changed for a file being appended to")
}

func TestHashHonoursCancel(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1<<20), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	es := entries(t, dir)
	var r Result
	NewHash(Algorithms[0], ReadOptions{}).NewWorker().Run(ctx, &es[0], &r)
	es[0].Done()
	if !errors.Is(r.Err, context.Canceled) {
		t.Errorf("cancelled run: %v %v, want context.Canceled", r.Status, r.Err)
	}
}

func TestListPassesEverythingListed(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), nil, 0o644)
	os.Symlink("f", filepath.Join(dir, "link"))
	var got []string
	for _, e := range entries(t, dir) {
		var r Result
		List{}.Run(context.Background(), &e, &r)
		if r.Status == OK {
			got = append(got, e.Rel)
		}
		e.Done()
	}
	if strings.Join(got, ",") != "f,link" {
		t.Errorf("list results %q, want f,link", got)
	}
}

// BenchmarkHashSmallFile measures the per-file cost (syscalls, allocations) of
// hashing one 4 KiB file: open beneath the root, two fstats, read to EOF.
func BenchmarkHashSmallFile(b *testing.B) {
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), make([]byte, 4096), 0o644)
	es := entries(b, dir)
	for _, alg := range []string{"sha256", "blake3", "xxh64"} {
		a, _ := LookupAlgorithm(alg)
		b.Run(alg, func(b *testing.B) {
			w := NewHash(a, ReadOptions{}).NewWorker()
			b.ReportAllocs()
			b.SetBytes(4096)
			for b.Loop() {
				var r Result
				w.Run(context.Background(), &es[0], &r)
			}
		})
	}
	es[0].Done()
}

// BenchmarkHashLargeFile measures throughput on a 64 MiB file (page cache warm).
func BenchmarkHashLargeFile(b *testing.B) {
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), make([]byte, 64<<20), 0o644)
	es := entries(b, dir)
	for _, a := range Algorithms {
		b.Run(a.Name, func(b *testing.B) {
			w := NewHash(a, ReadOptions{}).NewWorker()
			b.ReportAllocs()
			b.SetBytes(64 << 20)
			for b.Loop() {
				var r Result
				w.Run(context.Background(), &es[0], &r)
			}
		})
	}
	es[0].Done()
}
