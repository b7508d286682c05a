package tasks

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recordWriter keeps each Write separately.
type recordWriter struct{ writes []string }

func (w *recordWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func TestLineWriter(t *testing.T) {
	long := strings.Repeat("x", lineMax)
	tests := []struct {
		name string
		in   []string // successive Writes
		want []string // what reaches the sink, Write by Write
	}{
		{"whole lines in one write", []string{"a\nb\n"}, []string{"a\nb\n"}},
		{"a line in pieces", []string{"a", "b", "c\n"}, []string{"abc\n"}},
		{"lines and a partial", []string{"a\nb", "c\nd"}, []string{"a\n", "bc\n", "d\n"}},
		{"last line without newline", []string{"tail"}, []string{"tail\n"}},
		{"nothing", nil, nil},
		{"a long line goes out in pieces of lineMax", []string{long, long[:10], "\n"}, []string{long, long[:10] + "\n"}},
		{"a long line ending exactly at a piece", []string{long}, []string{long, "\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &recordWriter{}
			l := &lineWriter{w: w}
			for _, s := range tc.in {
				if n, err := l.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write: %d, %v", n, err)
				}
			}
			l.flush()
			if strings.Join(w.writes, "|") != strings.Join(tc.want, "|") || len(w.writes) != len(tc.want) {
				t.Errorf("got %d writes %.80q, want %d %.80q", len(w.writes), w.writes, len(tc.want), tc.want)
			}
		})
	}
}

// TestLineWriterBounded: without newlines, memory stays bounded, every piece
// but the last is at least lineMax (so other jobs' lines cannot cut it finer),
// and the bytes come out whole.
func TestLineWriterBounded(t *testing.T) {
	var total int
	w := &recordWriter{}
	l := &lineWriter{w: w}
	chunk := bytes.Repeat([]byte{'z'}, 32<<10)
	for range 320 { // 10 MiB, as os/exec's 32 KiB reads would come
		l.Write(chunk)
		if c := cap(l.buf); c > 2*(lineMax+len(chunk)) {
			t.Fatalf("partial line buffer grew to %d bytes", c)
		}
	}
	l.flush()
	for i, s := range w.writes {
		total += len(s)
		if i < len(w.writes)-1 && len(s) < lineMax {
			t.Errorf("piece %d of %d is %d bytes, under %d", i, len(w.writes), len(s), lineMax)
		}
	}
	if want := 320*len(chunk) + 1; total != want {
		t.Errorf("%d bytes out, want %d", total, want)
	}
}

// BenchmarkLineWriterNoNewline: time per byte must not grow with the line's
// length (it was quadratic: each write rescanned the whole partial line).
func BenchmarkLineWriterNoNewline(b *testing.B) {
	chunk := bytes.Repeat([]byte{'z'}, 32<<10)
	for _, mb := range []int{1, 16, 64} {
		b.Run(strconv.Itoa(mb)+"MiB", func(b *testing.B) {
			b.SetBytes(int64(mb << 20))
			for b.Loop() {
				l := &lineWriter{w: &discard{}}
				for range (mb << 20) / len(chunk) {
					l.Write(chunk)
				}
				l.flush()
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestOutputSpool: past spoolMem the output goes to an unlinked private file;
// what comes back is what went in, in order.
func TestOutputSpool(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	var want bytes.Buffer
	o := new(Output)
	defer o.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for want.Len() < 3*spoolMem {
		p := make([]byte, rng.IntN(70000))
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if n, err := o.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
		want.Write(p)
	}
	if o.file == nil || len(o.mem) != spoolMem || cap(o.mem) > spoolMem {
		t.Fatalf("memory part %d bytes (cap %d), spool %v", len(o.mem), cap(o.mem), o.file)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(o.file.Fd()), &st); err != nil || st.Nlink != 0 || st.Mode&0o777 != 0o600 {
		t.Errorf("spool file: nlink %d mode %o, %v; want unlinked 0600", st.Nlink, st.Mode&0o777, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("spool left names in $TMPDIR: %v", ents)
	}
	var got bytes.Buffer
	if err := o.Chunks(make([]byte, 1000), func(p []byte) error { got.Write(p); return nil }); err != nil {
		t.Fatal(err)
	}
	if o.Len() != int64(want.Len()) || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Errorf("read back %d bytes (Len %d), want the %d written", got.Len(), o.Len(), want.Len())
	}
}

// TestOutputSpoolRefused: a $TMPDIR with a symlink in any component of its
// name, or missing, fails the write with a message naming it; the memory part
// is kept (exec_spool.txtar runs the same without openat2).
func TestOutputSpoolRefused(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "real", "sub"), 0o700)
	os.Symlink("real", filepath.Join(dir, "link"))
	t.Chdir(dir)
	for _, tc := range []struct{ tmp, want string }{
		{filepath.Join(dir, "link"), "is a symlink; refused"},
		{filepath.Join(dir, "link") + "/", "has a symlink in its path; refused"},
		{filepath.Join(dir, "link") + "/.", "has a symlink in its path; refused"},
		{filepath.Join(dir, "link", "sub"), "has a symlink in its path; refused"},
		{"link/sub", "has a symlink in its path; refused"},
		{filepath.Join(dir, "missing"), "no such file or directory"},
		{filepath.Join(dir, "real", "sub"), ""},
		{"real/sub/", ""},
	} {
		t.Setenv("TMPDIR", tc.tmp)
		o := new(Output)
		n, err := o.Write(make([]byte, spoolMem+1))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("TMPDIR=%s: %v", tc.tmp, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), "spooling output to "+tc.tmp+": "+tc.want) || n != spoolMem):
			t.Errorf("TMPDIR=%s: Write %d, %v; want %d and an error saying %q", tc.tmp, n, err, spoolMem, tc.want)
		case !errors.Is(o.Err(), err):
			t.Errorf("Err() = %v, want %v", o.Err(), err)
		}
		o.Close()
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "real", "sub")); len(ents) != 0 {
		t.Errorf("spool left names: %v", ents)
	}
}

// TestExecBackgroundHoldsOutput: a command that exits 0 while a background
// process keeps its stdout open succeeds after outputGrace, with a note, and
// what it wrote before is kept; an interrupt ends that wait at once.
func TestExecBackgroundHoldsOutput(t *testing.T) {
	x, err := NewExec([]string{"sh", "-c", "sleep 3 & echo hi"}, ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var r Result
	start := time.Now()
	x.run(context.Background(), []string{"sh", "-c", "sleep 3 & echo hi"}, &r)
	el := time.Since(start)
	defer closeOut(&r)
	if r.Status != OK || r.Exit != 0 || !errors.Is(r.Note, errHeldOpen) {
		t.Errorf("status %v exit %d err %v note %v; want ok, 0, and the note", r.Status, r.Exit, r.Err, r.Note)
	}
	if el < outputGrace || el > 2*time.Second+outputGrace/2 {
		t.Errorf("took %s, want about %s", el, outputGrace)
	}
	if got := chunksOf(r.Stdout); got != "hi\n" {
		t.Errorf("stdout %q", got)
	}

	// Interrupted during that wait: it ends at once, and what the job left
	// running is killed with its group.
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	var r2 Result
	start = time.Now()
	x.run(ctx, []string{"sh", "-c", `sleep 3 & echo $! > "$0"; echo hi`, pidFile}, &r2)
	defer closeOut(&r2)
	if el := time.Since(start); el > outputGrace*3/4 {
		t.Errorf("after the interrupt the wait went on: %s", el)
	}
	if !errors.Is(r2.Err, context.Canceled) {
		t.Errorf("interrupted: %v, want context.Canceled", r2.Err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	stat := "/proc/" + strings.TrimSpace(string(data)) + "/stat"
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		s, err := os.ReadFile(stat)
		if err != nil || strings.Contains(string(s), ") Z ") {
			break // gone, or dead and not yet reaped
		}
		if time.Now().After(deadline) {
			t.Errorf("the job's background process still runs after the interrupt: %s", s)
			break
		}
	}
}

func chunksOf(o *Output) string {
	var b strings.Builder
	o.Chunks(make([]byte, 4096), func(p []byte) error { b.Write(p); return nil })
	return b.String()
}

func closeOut(r *Result) {
	r.Stdout.Close()
	r.Stderr.Close()
}
