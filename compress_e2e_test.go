package main

// End-to-end tests of compress and decompress (SAFETY.md rules 7-11, 14-17) that
// a script cannot express: outputs checked by the real gzip and zstd, metadata
// down to ACLs and nanoseconds, inodes of replaced outputs, a file growing while
// it is compressed, full and read-only file systems (mounted here, unmounted in
// cleanup), a file size limit, and signals in the middle of a large file.

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/klauspost/compress/zstd"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const czTempPrefix = ".pbatch-tmp-"

// czRun runs the built pbatch in dir and returns its stdout, stderr and exit
// code; it fails the test if pbatch could not run or was killed by a signal.
func czRun(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(pbatchBin(t), args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		code = ee.ExitCode()
	default:
		t.Fatalf("pbatch %q: %v\nstderr:\n%s", args, err, errb.String())
	}
	return out.String(), errb.String(), code
}

// czMust runs pbatch and fails the test unless it exits with want.
func czMust(t *testing.T, want int, dir string, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, code := czRun(t, dir, args...)
	if code != want {
		t.Fatalf("pbatch %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, want, stdout, stderr)
	}
	return stdout, stderr
}

func czNeed(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian package %s)", tool, map[string]string{
				"setfacl": "acl", "getfacl": "acl", "setfattr": "attr", "zstd": "zstd", "gzip": "gzip", "setpriv": "util-linux",
			}[tool])
		}
	}
}

func czNeedRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root: %s", why)
	}
}

// czTemps lists pbatch temporary files anywhere below root.
func czTemps(t *testing.T, root string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), czTempPrefix) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

func czNoTemps(t *testing.T, root string) {
	t.Helper()
	if tmp := czTemps(t, root); len(tmp) > 0 {
		t.Errorf("temporary files left behind: %q", tmp)
	}
}

func czRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func czWrite(t *testing.T, p string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // not masked by the umask
		t.Fatal(err)
	}
}

func czLstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func czMissing(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (%v), want no such file", p, err)
	}
}

// czDecode decodes a file with the real tool (gzip -dc or zstd -dc).
func czDecode(t *testing.T, tool, p string) []byte {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(tool, "-dc", "--", p)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s -dc %q: %v\n%s", tool, p, err, errb.String())
	}
	return out.Bytes()
}

// czTest runs the real tool's integrity test (gzip -t, zstd -t) on files.
func czTest(t *testing.T, tool string, files ...string) {
	t.Helper()
	out, err := exec.Command(tool, append([]string{"-t", "--"}, files...)...).CombinedOutput()
	if err != nil {
		t.Errorf("%s -t: %v\n%s", tool, err, out)
	}
}

// czNulRecords splits -0 output into its records.
func czNulRecords(t *testing.T, out string) []string {
	t.Helper()
	if out == "" {
		return nil
	}
	if !strings.HasSuffix(out, "\x00") {
		t.Fatalf("-0 output does not end with NUL: %q", out)
	}
	return strings.Split(strings.TrimSuffix(out, "\x00"), "\x00")
}

// czText returns deterministic text that compresses about 3x: log lines with
// random numbers.
func czText(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	var b []byte
	levels := []string{"INFO", "WARN", "DEBUG", "ERROR"}
	for len(b) < size {
		b = fmt.Appendf(b, "2026-11-%02dT%02d:%02d:%02d.%06dZ %-5s [worker-%d] request id=%d took %dms bytes=%d\n",
			1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1e6), levels[r.IntN(4)],
			r.IntN(8), r.Uint32(), r.IntN(5000), r.IntN(1<<20))
	}
	return b[:size]
}

func czRandom(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type czFormat struct {
	name, ext, tool string
}

var (
	czGzip = czFormat{"gzip", ".gz", "gzip"}
	czZstd = czFormat{"zstd", ".zst", "zstd"}
)

// TestCompressRoundTrip: for gzip and zstd at several levels, every output
// passes the real tool's -t, decodes with the real tool to the input, and
// pbatch decompress gives the input back byte for byte; pbatch decompress also
// reads what the real tools wrote, concatenated members and frames included.
func TestCompressRoundTrip(t *testing.T) {
	files := map[string][]byte{
		"text.log":             czText(1, 300<<10),
		"random.bin":           czRandom(2, 3<<20+17), // incompressible, several buffers
		"empty":                nil,
		"one-byte":             []byte("x"),
		"sub/deeper/small.txt": []byte("hello\n"),
		"zeros":                make([]byte, 5<<20),
	}
	for _, c := range []struct {
		f     czFormat
		level int
	}{{czGzip, 1}, {czGzip, 6}, {czGzip, 9}, {czZstd, 1}, {czZstd, 3}, {czZstd, 19}} {
		t.Run(fmt.Sprintf("%s-%d", c.f.name, c.level), func(t *testing.T) {
			czNeed(t, c.f.tool)
			dir := fastTempDir(t)
			for name, b := range files {
				czWrite(t, filepath.Join(dir, name), b, 0o644)
			}
			out, stderr := czMust(t, 0, dir, "compress", "-0", "--format", c.f.name, "-l", strconv.Itoa(c.level), ".")
			var want []string
			for name := range files {
				want = append(want, "./"+name+c.f.ext)
			}
			got := czNulRecords(t, out)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("outputs printed:\n%q\nwant:\n%q", got, want)
			}
			if !strings.Contains(stderr, "pbatch: output ") || !strings.Contains(stderr, fmt.Sprintf("pbatch: %d files, ", len(files))) {
				t.Errorf("stderr lacks the size line or the summary:\n%s", stderr)
			}
			for name, b := range files {
				p := filepath.Join(dir, name)
				if !bytes.Equal(czRead(t, p), b) {
					t.Errorf("%s: the original changed (no --rm)", name)
				}
				czTest(t, c.f.tool, p+c.f.ext)
				if got := czDecode(t, c.f.tool, p+c.f.ext); !bytes.Equal(got, b) {
					t.Errorf("%s -dc %s: %d bytes that differ from the input (%d bytes)", c.f.tool, name+c.f.ext, len(got), len(b))
				}
			}
			czNoTemps(t, dir)

			// pbatch decompress of pbatch's own outputs.
			for name := range files {
				os.Remove(filepath.Join(dir, name))
			}
			czMust(t, 0, dir, "decompress", "-q", ".")
			for name, b := range files {
				if got := czRead(t, filepath.Join(dir, name)); !bytes.Equal(got, b) {
					t.Errorf("pbatch decompress %s: %d bytes that differ from the input (%d bytes)", name, len(got), len(b))
				}
				os.Remove(filepath.Join(dir, name+c.f.ext))
			}

			// pbatch decompress of the real tool's outputs.
			for name := range files {
				p := filepath.Join(dir, name)
				args := []string{"-q", "-f", "-" + strconv.Itoa(c.level), "--", p}
				if c.f.tool == "zstd" {
					args = append([]string{"--rm"}, args...) // gzip removes its input by default
				}
				if out, err := exec.Command(c.f.tool, args...).CombinedOutput(); err != nil {
					t.Fatalf("%s %s: %v\n%s", c.f.tool, name, err, out)
				}
			}
			czMust(t, 0, dir, "decompress", "--rm", "-q", ".")
			for name, b := range files {
				if got := czRead(t, filepath.Join(dir, name)); !bytes.Equal(got, b) {
					t.Errorf("pbatch decompress of %s's %s: differs from the input", c.f.tool, name)
				}
				czMissing(t, filepath.Join(dir, name+c.f.ext))
			}
			czNoTemps(t, dir)
		})
	}

	// Concatenated gzip members and zstd frames decode to the concatenation,
	// as gzip -d and zstd -d do.
	for _, f := range []czFormat{czGzip, czZstd} {
		t.Run("concatenated-"+f.name, func(t *testing.T) {
			czNeed(t, f.tool)
			dir := fastTempDir(t)
			a, b := czText(3, 70<<10), []byte("second part\n")
			var cat []byte
			for i, part := range [][]byte{a, b} {
				p := filepath.Join(dir, "part"+strconv.Itoa(i))
				czWrite(t, p, part, 0o644)
				czMust(t, 0, dir, "compress", "-q", "--format", f.name, p)
				cat = append(cat, czRead(t, p+f.ext)...)
			}
			czWrite(t, filepath.Join(dir, "both"+f.ext), cat, 0o644)
			czMust(t, 0, dir, "decompress", "-q", "both"+f.ext)
			want := append(slices.Clone(a), b...)
			if got := czRead(t, filepath.Join(dir, "both")); !bytes.Equal(got, want) {
				t.Errorf("decompress of two concatenated %s streams: %d bytes, want %d (the concatenation)", f.name, len(got), len(want))
			}
			if got := czDecode(t, f.tool, filepath.Join(dir, "both"+f.ext)); !bytes.Equal(got, want) {
				t.Errorf("control: %s -dc disagrees", f.tool)
			}
		})
	}
}

// TestCompressLargeFile: a file of 64 MiB or more is compressed in blocks on
// several cores (-w 2) or on one (-w 1); both outputs are valid for the real
// tool and decode to the input.
func TestCompressLargeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a 80 MiB file")
	}
	data := czText(7, 80<<20)
	want := sha256.Sum256(data)
	for _, f := range []czFormat{czGzip, czZstd} {
		for _, w := range []string{"1", "2"} {
			t.Run(f.name+"-w"+w, func(t *testing.T) {
				czNeed(t, f.tool)
				dir := fastTempDir(t)
				p := filepath.Join(dir, "big.log")
				czWrite(t, p, data, 0o644)
				czMust(t, 0, dir, "compress", "-q", "-w", w, "--format", f.name, "--rm", "big.log")
				czMissing(t, p)
				czTest(t, f.tool, p+f.ext)
				if got := sha256.Sum256(czDecode(t, f.tool, p+f.ext)); got != want {
					t.Errorf("%s -dc: content differs from the input", f.tool)
				}
				czMust(t, 0, dir, "decompress", "-q", "--rm", "big.log"+f.ext)
				if got := sha256.Sum256(czRead(t, p)); got != want {
					t.Errorf("pbatch decompress: content differs from the input")
				}
				czNoTemps(t, dir)
			})
		}
	}
}

// czHashFile streams a file (or a command's stdout) through sha256.
func czHashFile(t *testing.T, p string) ([32]byte, int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return czHashReader(t, f)
}

func czHashReader(t *testing.T, r io.Reader) ([32]byte, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil)), n
}

// TestCompressSparse: a sparse file of 1 GiB holding a few bytes of data
// round-trips byte for byte, through pbatch and through the real tool.
func TestCompressSparse(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: writes 1 GiB")
	}
	for _, f := range []czFormat{czGzip, czZstd} {
		t.Run(f.name, func(t *testing.T) {
			czNeed(t, f.tool)
			dir := t.TempDir() // on disk: the decompressed file is 1 GiB of real blocks
			p := filepath.Join(dir, "sparse")
			fh, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range []struct {
				off  int64
				data string
			}{{0, "start"}, {512 << 20, "middle"}, {1<<30 - 3, "end"}} {
				if _, err := fh.WriteAt([]byte(w.data), w.off); err != nil {
					t.Fatal(err)
				}
			}
			fh.Close()
			want, size := czHashFile(t, p)
			if size != 1<<30 {
				t.Fatalf("sparse file: %d bytes", size)
			}
			czMust(t, 0, dir, "compress", "-q", "--rm", "--format", f.name, "sparse")
			czMissing(t, p)
			cmd := exec.Command(f.tool, "-dc", "--", p+f.ext)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			got, n := czHashReader(t, stdout)
			if err := cmd.Wait(); err != nil {
				t.Errorf("%s -dc: %v", f.tool, err)
			}
			if got != want || n != 1<<30 {
				t.Errorf("%s -dc: %d bytes, content differs: %v", f.tool, n, got != want)
			}
			czMust(t, 0, dir, "decompress", "-q", "--rm", "sparse"+f.ext)
			if got, n := czHashFile(t, p); got != want || n != 1<<30 {
				t.Errorf("pbatch decompress: %d bytes, content differs: %v", n, got != want)
			}
			czNoTemps(t, dir)
		})
	}
}

// TestCompressHostileNames: names with newlines, backslashes, invalid UTF-8,
// leading dashes… are compressed under NAME.gz exactly (-0 prints them raw),
// decode with the real gzip, and decompress back. The 255-byte name has no room
// for ".gz": it fails alone (exit 1), never truncated.
func TestCompressHostileNames(t *testing.T) {
	czNeed(t, "gzip")
	dir := fastTempDir(t)
	content := map[string][]byte{}
	var tooLong string
	for i, name := range hostileNames {
		b := fmt.Appendf(nil, "file %d: %q\n", i, name)
		czWrite(t, filepath.Join(dir, name), b, 0o644)
		content[name] = b
		if len(filepath.Base(name))+len(".gz") > 255 {
			tooLong = name
		}
	}
	if tooLong == "" {
		t.Fatal("hostileNames has no 255-byte name any more")
	}
	out, stderr := czMust(t, 1, dir, "compress", "-0", ".")
	var want []string
	for name := range content {
		if name != tooLong {
			want = append(want, "./"+name+".gz")
		}
	}
	got := czNulRecords(t, out)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("outputs printed:\n%q\nwant:\n%q", got, want)
	}
	if !strings.Contains(stderr, "pbatch: ./"+tooLong+": ") || !strings.Contains(stderr, "too long") ||
		!strings.Contains(stderr, "; 1 failed\n") {
		t.Errorf("stderr should report only the 255-byte name, as too long:\n%s", stderr)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), strings.Repeat("n", 200)) && e.Name() != tooLong {
			t.Errorf("an output for the 255-byte name was created under %q", e.Name())
		}
	}
	for name, b := range content {
		if name == tooLong {
			continue
		}
		if got := czDecode(t, "gzip", filepath.Join(dir, name+".gz")); !bytes.Equal(got, b) {
			t.Errorf("gzip -dc %q: %q, want %q", name+".gz", got, b)
		}
	}

	// Text output: one line per output, names with control bytes quoted, so
	// a newline in a name cannot forge a line.
	for name := range content {
		os.Remove(filepath.Join(dir, name+".gz"))
	}
	out, _ = czMust(t, 1, dir, "compress", ".")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(want) {
		t.Errorf("text output: %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for _, l := range lines {
		p := l
		if strings.HasPrefix(l, `"`) {
			u, err := strconv.Unquote(l)
			if err != nil {
				t.Errorf("line %q: not a Go-quoted name: %v", l, err)
				continue
			}
			p = u
		}
		if !slices.Contains(want, p) {
			t.Errorf("line %q names no output", l)
		}
	}

	// decompress --rm: every original back, every .gz gone.
	for name := range content {
		if name != tooLong {
			os.Remove(filepath.Join(dir, name))
		}
	}
	os.Remove(filepath.Join(dir, tooLong))
	out, _ = czMust(t, 0, dir, "decompress", "-0", "--rm", ".")
	got = czNulRecords(t, out)
	var wantBack []string
	for _, w := range want {
		wantBack = append(wantBack, strings.TrimSuffix(w, ".gz"))
	}
	slices.Sort(got)
	slices.Sort(wantBack)
	if !slices.Equal(got, wantBack) {
		t.Errorf("decompress printed:\n%q\nwant:\n%q", got, wantBack)
	}
	for name, b := range content {
		if name == tooLong {
			continue
		}
		if got := czRead(t, filepath.Join(dir, name)); !bytes.Equal(got, b) {
			t.Errorf("%q after the round trip: %q, want %q", name, got, b)
		}
		czMissing(t, filepath.Join(dir, name+".gz"))
	}
	czNoTemps(t, dir)
}

// TestCompressNameMax: a 254-byte name fails cleanly (output name too long),
// exit 1; nothing is created under a truncated name; a 252-byte name (255 with
// .gz) still works.
func TestCompressNameMax(t *testing.T) {
	dir := fastTempDir(t)
	long := strings.Repeat("x", 254)
	fits := strings.Repeat("y", 252)
	czWrite(t, filepath.Join(dir, long), []byte("long\n"), 0o644)
	czWrite(t, filepath.Join(dir, fits), []byte("fits\n"), 0o644)
	for _, format := range []string{"gzip", "zstd"} {
		_, stderr := czMust(t, 1, dir, "compress", "--format", format, long)
		if want := "pbatch: " + long + ": "; !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, "too long") {
			t.Errorf("%s: stderr:\n%s\nwant %q… naming the file, and 'too long'", format, stderr, want)
		}
	}
	czMust(t, 0, dir, "compress", "-q", fits)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	if want := []string{long, fits, fits + ".gz"}; !slices.Equal(names, want) {
		t.Errorf("directory holds %q, want %q", names, want)
	}
}

// TestCompressKeepOrder: with -k the output paths come in walk order
// (directories read sorted), whatever the number of workers, for compress,
// its dry run and decompress.
func TestCompressKeepOrder(t *testing.T) {
	dir := fastTempDir(t)
	var want []string
	for d := range 6 {
		for f := range 30 {
			name := fmt.Sprintf("t/d%02d/f%03d", d, f)
			size := 10
			if f%7 == 0 {
				size = 300 << 10 // a few slower files, so workers finish out of order
			}
			czWrite(t, filepath.Join(dir, name), czText(uint64(d*100+f), size), 0o644)
			want = append(want, name)
		}
	}
	gz := func(names []string) string {
		var b strings.Builder
		for _, n := range names {
			b.WriteString(n + ".gz\n")
		}
		return b.String()
	}
	plain := func(names []string) string {
		var b strings.Builder
		for _, n := range names {
			b.WriteString(n + "\n")
		}
		return b.String()
	}
	for _, w := range []string{"1", "2", "8"} {
		if out, _ := czMust(t, 0, dir, "compress", "-q", "-n", "-k", "-w", w, "t"); out != gz(want) {
			t.Errorf("compress -n -k -w %s:\n%s\nwant:\n%s", w, out, gz(want))
		}
	}
	if out, _ := czMust(t, 0, dir, "compress", "-q", "--rm", "-k", "-w", "8", "t"); out != gz(want) {
		t.Errorf("compress -k -w 8:\n%s\nwant:\n%s", out, gz(want))
	}
	if out, _ := czMust(t, 0, dir, "decompress", "-q", "--rm", "-k", "-w", "8", "t"); out != plain(want) {
		t.Errorf("decompress -k -w 8:\n%s\nwant:\n%s", out, plain(want))
	}
}

// czGetxattr returns an extended attribute, or nil when it is absent.
func czGetxattr(t *testing.T, p, name string) []byte {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, name, buf)
	if err == unix.ENODATA {
		return nil
	}
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", p, name, err)
	}
	return buf[:n]
}

// czCanRead reports whether uid/gid can open p for reading (setpriv).
func czCanRead(t *testing.T, p string, uid int) bool {
	t.Helper()
	id := strconv.Itoa(uid)
	return exec.Command("setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "head", "-c", "1", p).Run() == nil
}

// TestCompressMetadata: the output gets the input's owner, group, mode bits
// (setuid, setgid and sticky dropped), user xattrs, POSIX ACL and atime/mtime to
// the nanosecond; decompress restores them; and the output never grants anybody
// more access than the input did.
func TestCompressMetadata(t *testing.T) {
	czNeedRoot(t, "chown to another user")
	czNeed(t, "setfacl", "setpriv")
	atime := time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.UTC)
	mtime := time.Date(2002, 3, 4, 5, 6, 7, 987654321, time.UTC)
	for _, f := range []czFormat{czGzip, czZstd} {
		t.Run(f.name, func(t *testing.T) {
			// Not tmpfs: user xattrs on tmpfs need Linux 6.6.
			dir := t.TempDir()
			os.Chmod(dir, 0o755)
			type file struct {
				mode os.FileMode
				acl  string // setfacl -m spec, or ""
				xatt bool
			}
			files := map[string]file{
				"plain0640": {mode: 0o640, xatt: true},
				"setuid":    {mode: 0o4755},
				"setgid":    {mode: 0o2750},
				"sticky":    {mode: 0o1644},
				"acl":       {mode: 0o640, acl: "u:99:r--,g:98:rw-", xatt: true},
				"private":   {mode: 0o600},
				"none":      {mode: 0o000},
			}
			for name, fl := range files {
				p := filepath.Join(dir, name)
				czWrite(t, p, czText(9, 2000), 0o644)
				if err := os.Chown(p, 1234, 5678); err != nil {
					t.Fatal(err)
				}
				if fl.xatt {
					if err := unix.Setxattr(p, "user.origin", []byte("value of "+name), 0); err != nil {
						t.Skipf("user xattrs not supported here: %v", err)
					}
					if err := unix.Setxattr(p, "trusted.pbatch-test", []byte("t"), 0); err != nil {
						t.Fatal(err)
					}
				}
				if err := unix.Chmod(p, uint32(fl.mode&os.ModePerm)|czSpecial(fl.mode)); err != nil {
					t.Fatal(err)
				}
				if fl.acl != "" {
					if out, err := exec.Command("setfacl", "-m", fl.acl, p).CombinedOutput(); err != nil {
						t.Skipf("setfacl: %v\n%s", err, out)
					}
				}
				if err := unix.UtimesNano(p, []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}); err != nil {
					t.Fatal(err)
				}
			}
			inMode := map[string]uint32{} // setfacl makes the group bits the ACL mask
			for name := range files {
				inMode[name] = czLstat(t, filepath.Join(dir, name)).Mode & 0o7777
			}
			wantAtim, wantMtim := unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())
			czMust(t, 0, dir, "compress", "-q", "--format", f.name, ".")
			for name := range files {
				in := filepath.Join(dir, name)
				out := in + f.ext
				ost := czLstat(t, out)
				if ost.Uid != 1234 || ost.Gid != 5678 {
					t.Errorf("%s: owner %d:%d, want 1234:5678", out, ost.Uid, ost.Gid)
				}
				if got, want := ost.Mode&0o7777, inMode[name]&0o777; got != want {
					t.Errorf("%s: mode %04o, want %04o (the input's %04o without special bits)", out, got, want, inMode[name])
				}
				// The input's own atime moved when it was read: compare with the
				// times it had before.
				if ost.Atim != wantAtim || ost.Mtim != wantMtim {
					t.Errorf("%s: atime %v mtime %v, want %v %v", out,
						time.Unix(ost.Atim.Unix()).UTC(), time.Unix(ost.Mtim.Unix()).UTC(), atime, mtime)
				}
				if got, want := czGetxattr(t, out, "user.origin"), czGetxattr(t, in, "user.origin"); !bytes.Equal(got, want) {
					t.Errorf("%s: user.origin %q, want %q", out, got, want)
				}
				if got := czGetxattr(t, out, "trusted.pbatch-test"); got != nil {
					t.Errorf("%s: trusted.pbatch-test copied (%q): only user xattrs and the ACL are", out, got)
				}
				if got, want := czGetxattr(t, out, "system.posix_acl_access"), czGetxattr(t, in, "system.posix_acl_access"); !bytes.Equal(got, want) {
					t.Errorf("%s: ACL differs from the input's:\n%s\nwant:\n%s", out, czGetfacl(t, out), czGetfacl(t, in))
				}
				for _, uid := range []int{99, 1234, 5678, 65534} {
					if czCanRead(t, out, uid) && !czCanRead(t, in, uid) {
						t.Errorf("uid %d may read %s but not its input", uid, out)
					}
				}
			}

			// decompress --rm gives the same metadata back.
			for name := range files {
				os.Remove(filepath.Join(dir, name))
			}
			czMust(t, 0, dir, "decompress", "-q", "--rm", ".")
			for name, fl := range files {
				p := filepath.Join(dir, name)
				st := czLstat(t, p)
				if st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o7777 != inMode[name]&0o777 || st.Mtim != wantMtim || st.Atim != wantAtim {
					t.Errorf("%s after decompress: %d:%d %04o mtime %v atime %v", name, st.Uid, st.Gid, st.Mode&0o7777,
						time.Unix(st.Mtim.Unix()).UTC(), time.Unix(st.Atim.Unix()).UTC())
				}
				if fl.xatt && string(czGetxattr(t, p, "user.origin")) != "value of "+name {
					t.Errorf("%s after decompress: user.origin %q", name, czGetxattr(t, p, "user.origin"))
				}
				if fl.acl != "" && !strings.Contains(czGetfacl(t, p), "user:99:r--") {
					t.Errorf("%s after decompress: ACL lost:\n%s", name, czGetfacl(t, p))
				}
			}
			czNoTemps(t, dir)
		})
	}
}

func czSpecial(m os.FileMode) uint32 {
	var s uint32
	if m&0o4000 != 0 {
		s |= unix.S_ISUID
	}
	if m&0o2000 != 0 {
		s |= unix.S_ISGID
	}
	if m&0o1000 != 0 {
		s |= unix.S_ISVTX
	}
	return s
}

func czGetfacl(t *testing.T, p string) string {
	t.Helper()
	out, _ := exec.Command("getfacl", "-p", "-n", p).CombinedOutput()
	return string(out)
}

// TestCompressDefaultACL: in a directory with a default ACL granting a user
// access, the output of an input without that ACL entry must not grant it
// either: the temporary file inherits the default ACL, and the input's mode
// alone does not undo that.
func TestCompressDefaultACL(t *testing.T) {
	czNeedRoot(t, "setpriv")
	czNeed(t, "setfacl", "setpriv")
	for _, f := range []czFormat{czGzip, czZstd} {
		t.Run(f.name, func(t *testing.T) {
			dir := t.TempDir()
			os.Chmod(dir, 0o755)
			os.Chmod(filepath.Dir(dir), 0o755)
			d := filepath.Join(dir, "shared")
			in := filepath.Join(d, "secret")
			czWrite(t, in, []byte("secret\n"), 0o640)
			if out, err := exec.Command("setfacl", "-d", "-m", "u:99:rwx", d).CombinedOutput(); err != nil {
				t.Skipf("setfacl: %v\n%s", err, out)
			}
			if czCanRead(t, in, 99) {
				t.Fatal("control: uid 99 can read the input")
			}
			czMust(t, 0, dir, "compress", "-q", "--format", f.name, in)
			out := in + f.ext
			if czCanRead(t, out, 99) {
				t.Errorf("uid 99 can read %s but not its input (mode 0640, no ACL): the directory's default ACL leaked into the output\n%s",
					filepath.Base(out), czGetfacl(t, out))
			}
			if got := czGetxattr(t, out, "system.posix_acl_access"); got != nil {
				t.Errorf("the output has an access ACL, the input has none:\n%s", czGetfacl(t, out))
			}
			// decompress writes into the same directory: the same rule.
			if err := os.Remove(in); err != nil {
				t.Fatal(err)
			}
			czMust(t, 0, dir, "decompress", "-q", out)
			if czCanRead(t, in, 99) {
				t.Errorf("uid 99 can read the decompressed %s (mode 0640, no ACL)\n%s", filepath.Base(in), czGetfacl(t, in))
			}
			if st := czLstat(t, in); st.Mode&0o7777 != 0o640 {
				t.Errorf("decompressed mode %04o, want 0640", st.Mode&0o7777)
			}
		})
	}
}

// czExisting makes NAME.gz next to NAME in one of the ways an output name can
// already be taken; victim is outside the tree.
func czExisting(t *testing.T, kind, out, victim string) {
	t.Helper()
	var err error
	switch kind {
	case "file":
		err = os.WriteFile(out, []byte("precious existing output\n"), 0o644)
	case "symlink":
		err = os.Symlink(victim, out)
	case "dangling":
		err = os.Symlink(victim+".created-through-the-link", out)
	case "directory":
		if err = os.Mkdir(out, 0o755); err == nil {
			err = os.WriteFile(filepath.Join(out, "inside"), []byte("inside\n"), 0o644)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestCompressExistingOutput: an output name already taken by a file, a
// symlink to a file outside the tree, a dangling symlink or a directory is an
// error naming the input (and the output name), exit 1; nothing is opened,
// followed or created through it, the original stays. --force replaces a file
// or a symlink by rename (a new inode; the victim unchanged) and still never
// writes through a link.
func TestCompressExistingOutput(t *testing.T) {
	czNeed(t, "gzip")
	content := czText(11, 10<<10)
	for _, cmd := range []string{"compress", "decompress"} {
		for _, kind := range []string{"file", "symlink", "dangling", "directory"} {
			t.Run(cmd+"/"+kind, func(t *testing.T) {
				root := fastTempDir(t)
				tree := filepath.Join(root, "tree")
				victim := filepath.Join(root, "outside", "victim")
				czWrite(t, victim, []byte("victim\n"), 0o644)
				victimSt := czLstat(t, victim)
				in, out := filepath.Join(tree, "data"), filepath.Join(tree, "data.gz")
				if cmd == "decompress" {
					in, out = filepath.Join(tree, "data.gz"), filepath.Join(tree, "data")
					os.MkdirAll(tree, 0o755)
					czWrite(t, filepath.Join(root, "src"), content, 0o644)
					czMust(t, 0, root, "compress", "-q", "src")
					if err := os.Rename(filepath.Join(root, "src.gz"), in); err != nil {
						t.Fatal(err)
					}
				} else {
					czWrite(t, in, content, 0o644)
				}
				inBytes := czRead(t, in)
				czExisting(t, kind, out, victim)
				before := czLstat(t, out)

				check := func(t *testing.T, replaced bool) {
					t.Helper()
					if got := czRead(t, in); !bytes.Equal(got, inBytes) {
						t.Errorf("the input changed")
					}
					if st := czLstat(t, victim); st.Ino != victimSt.Ino || st.Mtim != victimSt.Mtim || st.Size != victimSt.Size {
						t.Errorf("the victim outside the tree was modified")
					}
					if got := string(czRead(t, victim)); got != "victim\n" {
						t.Errorf("victim: %q", got)
					}
					czMissing(t, victim+".created-through-the-link")
					czNoTemps(t, root)
					if replaced {
						return
					}
					if st := czLstat(t, out); st.Ino != before.Ino || st.Mode != before.Mode || st.Mtim != before.Mtim {
						t.Errorf("the existing %s at the output name was changed", kind)
					}
					if kind == "file" && string(czRead(t, out)) != "precious existing output\n" {
						t.Errorf("the existing output was written")
					}
					if kind == "directory" && string(czRead(t, filepath.Join(out, "inside"))) != "inside\n" {
						t.Errorf("the existing directory's content changed")
					}
				}

				rel := "tree/" + filepath.Base(in)
				for _, extra := range [][]string{nil, {"--rm"}, {"--rm", "-n"}} {
					args := append(append([]string{cmd}, extra...), rel)
					stdout, stderr := czMust(t, 1, root, args...)
					if stdout != "" {
						t.Errorf("%q: stdout %q, want nothing", args, stdout)
					}
					line, _, _ := strings.Cut(stderr, "\n")
					if !strings.HasPrefix(line, "pbatch: "+rel+": ") || !strings.Contains(line, "exists") {
						t.Errorf("%q: stderr:\n%s\nwant an error for %s saying the output exists", args, stderr, rel)
					}
					check(t, false)
				}

				// --force: replaced by rename (a new inode, a regular file); a
				// directory cannot be renamed over: still an error.
				stdout, stderr, code := czRun(t, root, cmd, "--force", rel)
				if kind == "directory" {
					if code != 1 {
						t.Errorf("--force over a directory: exit %d, want 1\n%s", code, stderr)
					}
					check(t, false)
					return
				}
				if code != 0 || stdout != "tree/"+filepath.Base(out)+"\n" {
					t.Fatalf("--force: exit %d, stdout %q\n%s", code, stdout, stderr)
				}
				check(t, true)
				st := czLstat(t, out)
				if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ino == before.Ino {
					t.Errorf("--force: output mode %o inode %d (before %d): want a new regular file", st.Mode, st.Ino, before.Ino)
				}
				if cmd == "compress" {
					if got := czDecode(t, "gzip", out); !bytes.Equal(got, content) {
						t.Errorf("--force: the new output does not decode to the input")
					}
				} else if got := czRead(t, out); !bytes.Equal(got, content) {
					t.Errorf("--force: the new output differs from the input")
				}
			})
		}
	}
}

// TestCompressExistingOutputNamed: the error for an existing output names
// that output too (data.gz, or data.zst, or data for decompress), not only the
// input: the user must know which name is in the way.
func TestCompressExistingOutputNamed(t *testing.T) {
	dir := fastTempDir(t)
	czWrite(t, filepath.Join(dir, "data"), []byte("data\n"), 0o644)
	czWrite(t, filepath.Join(dir, "data.zst"), []byte("in the way\n"), 0o644)
	czWrite(t, filepath.Join(dir, "other"), []byte("other\n"), 0o644)
	czWrite(t, filepath.Join(dir, "other.gz"), czGzipBytes(t, []byte("other\n")), 0o644)
	for _, c := range []struct {
		args    []string
		in, out string
	}{
		{[]string{"compress", "--format", "zstd", "data"}, "data", "data.zst"},
		{[]string{"decompress", "other.gz"}, "other.gz", "other"},
	} {
		_, stderr := czMust(t, 1, dir, c.args...)
		line, _, _ := strings.Cut(stderr, "\n")
		rest, ok := strings.CutPrefix(line, "pbatch: "+c.in+": ")
		if !ok || !strings.Contains(rest, c.out) {
			t.Errorf("%q: %q\nwant the error for %s to name the existing output %s", c.args, line, c.in, c.out)
		}
	}
}

// TestCompressOutputAppears: an output name taken while the input is being
// compressed (after any check pbatch makes before starting) is not replaced:
// the no-replace rename fails, exit 1, the intruder and the original stay,
// no temporary file is left.
func TestCompressOutputAppears(t *testing.T) {
	dir := fastTempDir(t)
	p := filepath.Join(dir, "slow")
	czWrite(t, p, czText(13, 8<<20), 0o644)
	cmd := exec.Command(pbatchBin(t), "compress", "--rm", "--bwlimit", "4MB/s", "slow")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	czWaitTemp(t, dir, cmd)
	if err := os.WriteFile(p+".gz", []byte("intruder\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want 1\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "pbatch: slow: ") || !strings.Contains(stderr.String(), "exists") {
		t.Errorf("stderr:\n%s\nwant the output exists", stderr.String())
	}
	if got := string(czRead(t, p+".gz")); got != "intruder\n" {
		t.Errorf("slow.gz was replaced: %.40q", got)
	}
	if st := czLstat(t, p); st.Size != 8<<20 {
		t.Errorf("original: %d bytes", st.Size)
	}
	czNoTemps(t, dir)
}

// czWaitTemp waits until pbatch's temporary file appears in dir, so that a
// signal or a change lands in the middle of the work.
func czWaitTemp(t *testing.T, dir string, cmd *exec.Cmd) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if len(czTemps(t, dir)) > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatal("no temporary file appeared within 30 s")
}

// TestCompressRm: --rm removes the original only once the output is in place
// and verified; hard-linked and setuid/setgid files are skipped with a reason
// (exit 0), nothing written for them.
func TestCompressRm(t *testing.T) {
	czNeed(t, "gzip")
	dir := fastTempDir(t)
	data := czText(17, 50<<10)
	for _, name := range []string{"ok", "linked", "setuid", "setgid", "sub/ok2"} {
		czWrite(t, filepath.Join(dir, name), data, 0o644)
	}
	if err := os.Link(filepath.Join(dir, "linked"), filepath.Join(dir, "other-name")); err != nil {
		t.Fatal(err)
	}
	// os.Chmod would drop 0o4000: it wants os.ModeSetuid.
	if err := unix.Chmod(filepath.Join(dir, "setuid"), 0o4755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(filepath.Join(dir, "setgid"), 0o2755); err != nil {
		t.Fatal(err)
	}
	stdout, stderr := czMust(t, 0, dir, "compress", "--rm", "-k", "-w", "1", ".")
	if stdout != "./ok.gz\n./sub/ok2.gz\n" {
		t.Errorf("stdout %q", stdout)
	}
	for _, want := range []string{
		"pbatch: ./linked: skipped: ", "pbatch: ./other-name: skipped: ",
		"pbatch: ./setuid: skipped: setuid or setgid", "pbatch: ./setgid: skipped: setuid or setgid",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Count(stderr, "hard link") != 2 {
		t.Errorf("both names of the hard-linked file should be skipped for their hard link:\n%s", stderr)
	}
	for _, name := range []string{"ok", "sub/ok2"} {
		czMissing(t, filepath.Join(dir, name))
		if got := czDecode(t, "gzip", filepath.Join(dir, name+".gz")); !bytes.Equal(got, data) {
			t.Errorf("%s.gz does not decode to the original", name)
		}
	}
	for _, name := range []string{"linked", "other-name", "setuid", "setgid"} {
		if got := czRead(t, filepath.Join(dir, name)); !bytes.Equal(got, data) {
			t.Errorf("%s changed", name)
		}
		czMissing(t, filepath.Join(dir, name+".gz"))
	}
	if st := czLstat(t, filepath.Join(dir, "setuid")); st.Mode&0o7777 != 0o4755 {
		t.Errorf("setuid file mode now %04o", st.Mode&0o7777)
	}
	// Without --rm a setuid file is compressed (without the bit on the output).
	_, _ = czMust(t, 0, dir, "compress", "-q", "setuid")
	if st := czLstat(t, filepath.Join(dir, "setuid.gz")); st.Mode&0o7777 != 0o755 {
		t.Errorf("setuid.gz mode %04o, want 0755", st.Mode&0o7777)
	}
	// --no-verify: removed too.
	czWrite(t, filepath.Join(dir, "nv"), data, 0o644)
	czMust(t, 0, dir, "compress", "-q", "--rm", "--no-verify", "--format", "zstd", "nv")
	czMissing(t, filepath.Join(dir, "nv"))
	czNoTemps(t, dir)
}

// TestCompressRmGrowing: a file appended to while it is being compressed is
// reported "changed", exit 1; the original is kept whole and no output is left.
func TestCompressRmGrowing(t *testing.T) {
	for _, c := range []struct{ name, size string }{{"small-path", "32"}, {"block-path", "96"}} {
		t.Run(c.name, func(t *testing.T) {
			dir := fastTempDir(t)
			p := filepath.Join(dir, "growing.log")
			mib, _ := strconv.Atoi(c.size)
			czWrite(t, p, czText(19, mib<<20), 0o644)
			// Slow enough (-l 9, a rate limit) that the writer appends many times
			// while the file is read.
			cmd := exec.Command(pbatchBin(t), "compress", "--rm", "-l", "9", "--bwlimit", "40MB/s", "growing.log")
			cmd.Dir = dir
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			var appended []byte
			var wg sync.WaitGroup
			wg.Go(func() {
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				for i := 0; ; i++ {
					select {
					case <-exited:
						return
					case <-time.After(10 * time.Millisecond):
					}
					line := fmt.Appendf(nil, "appended line %d\n", i)
					if _, err := f.Write(line); err != nil {
						t.Error(err)
						return
					}
					appended = append(appended, line...)
				}
			})
			err := cmd.Wait()
			close(exited)
			wg.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("exit: %v, want 1", err)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			if !strings.Contains(stderr.String(), "pbatch: growing.log: ") || !strings.Contains(stderr.String(), "changed") {
				t.Errorf("stderr:\n%s\nwant growing.log reported as changed", stderr.String())
			}
			if len(appended) == 0 {
				t.Fatal("the writer appended nothing")
			}
			want := append(czText(19, mib<<20), appended...)
			if got := czRead(t, p); !bytes.Equal(got, want) {
				t.Errorf("original: %d bytes, want %d (all that was written)", len(got), len(want))
			}
			czMissing(t, p+".gz")
			czNoTemps(t, dir)
		})
	}
}

// TestCompressRerunAfterCrash: after a crash left NAME.gz (complete or not)
// and a stale temporary file, compress --rm never deletes the original: the
// output exists, exit 1; the stale temp file is skipped as input, not removed
// or compressed.
func TestCompressRerunAfterCrash(t *testing.T) {
	dir := fastTempDir(t)
	data := czText(23, 20<<10)
	czWrite(t, filepath.Join(dir, "app.log"), data, 0o644)
	czWrite(t, filepath.Join(dir, "app.log.gz"), []byte("\x1f\x8b partial"), 0o644)
	stale := czTempPrefix + "0123456789ab"
	czWrite(t, filepath.Join(dir, stale), []byte("half written"), 0o600)
	for _, args := range [][]string{{"compress", "--rm", "."}, {"compress", "--rm", "--no-verify", "app.log"}} {
		_, stderr := czMust(t, 1, dir, args...)
		if !strings.Contains(stderr, "app.log: ") || !strings.Contains(stderr, "exists") {
			t.Errorf("%q: stderr:\n%s\nwant app.log: output exists", args, stderr)
		}
		if got := czRead(t, filepath.Join(dir, "app.log")); !bytes.Equal(got, data) {
			t.Fatalf("%q: the original was lost or changed", args)
		}
		if got := string(czRead(t, filepath.Join(dir, "app.log.gz"))); got != "\x1f\x8b partial" {
			t.Errorf("%q: app.log.gz changed: %q", args, got)
		}
		if got := string(czRead(t, filepath.Join(dir, stale))); got != "half written" {
			t.Errorf("%q: the stale temporary file changed", args)
		}
		czMissing(t, filepath.Join(dir, stale+".gz"))
	}
	_, stderr := czMust(t, 1, dir, "compress", ".")
	if !strings.Contains(stderr, stale+": skipped") {
		t.Errorf("the stale temporary file is not reported as skipped:\n%s", stderr)
	}
	// decompress --rm of the partial output fails and keeps it.
	os.Remove(filepath.Join(dir, "app.log"))
	_, stderr = czMust(t, 1, dir, "decompress", "--rm", "app.log.gz")
	czMissing(t, filepath.Join(dir, "app.log"))
	if got := string(czRead(t, filepath.Join(dir, "app.log.gz"))); got != "\x1f\x8b partial" {
		t.Errorf("decompress --rm of a partial file removed or changed it: %q\n%s", got, stderr)
	}
}

// TestCompressCorruptDecompress: a .gz or .zst with a flipped byte, or cut short,
// fails (exit 1) naming the file; no output or temporary file is left; the
// compressed original stays, even with --rm. A .gz that is not gzip at all is
// "not in gzip format".
func TestCompressCorruptDecompress(t *testing.T) {
	data := czText(29, 200<<10)
	for _, f := range []czFormat{czGzip, czZstd} {
		for _, damage := range []string{"flip-middle", "flip-trailer", "truncate", "garbage"} {
			t.Run(f.name+"/"+damage, func(t *testing.T) {
				dir := fastTempDir(t)
				p := filepath.Join(dir, "data")
				czWrite(t, p, data, 0o644)
				czMust(t, 0, dir, "compress", "-q", "--rm", "--format", f.name, "data")
				b := czRead(t, p+f.ext)
				switch damage {
				case "flip-middle":
					b[len(b)/2] ^= 0x55
				case "flip-trailer": // gzip: the CRC; zstd: the content checksum or last block
					b[len(b)-3] ^= 0x01
				case "truncate":
					b = b[:len(b)-len(b)/3]
				case "garbage":
					b = []byte("this is plain text, not compressed data\n")
				}
				czWrite(t, p+f.ext, b, 0o644)
				_, stderr := czMust(t, 1, dir, "decompress", "--rm", "data"+f.ext)
				if !strings.HasPrefix(stderr, "pbatch: data"+f.ext+": ") {
					t.Errorf("stderr:\n%s\nwant an error naming data%s", stderr, f.ext)
				}
				if damage == "garbage" && !strings.Contains(stderr, "not in "+f.name+" format") {
					t.Errorf("stderr:\n%s\nwant 'not in %s format'", stderr, f.name)
				}
				czMissing(t, p)
				if got := czRead(t, p+f.ext); !bytes.Equal(got, b) {
					t.Errorf("the compressed original changed or was removed")
				}
				czNoTemps(t, dir)
			})
		}
	}
}

// czMount mounts a file system for the test and unmounts it in cleanup.
func czMount(t *testing.T, source, dir, fstype string, flags uintptr, data string) {
	t.Helper()
	if !canMount() {
		t.Skip("cannot mount here (needs root and CAP_SYS_ADMIN)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(source, dir, fstype, flags, data); err != nil {
		t.Fatalf("mount %s on %s: %v", source, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

// TestCompressENOSPC: on a full file system each file whose output does not
// fit fails with "no space left on device"; its temporary file is removed and
// its original untouched, even with --rm; files that fit are compressed; exit 1.
func TestCompressENOSPC(t *testing.T) {
	czNeed(t, "gzip")
	for _, rm := range []bool{false, true} {
		t.Run(fmt.Sprintf("rm=%v", rm), func(t *testing.T) {
			root := t.TempDir()
			m := filepath.Join(root, "small-fs")
			czMount(t, "tmpfs", m, "tmpfs", 0, "size=1m")
			files := map[string][]byte{
				"random600k": czRandom(31, 600<<10),
				"random300k": czRandom(37, 300<<10),
				"tiny.txt":   []byte("fits easily\n"),
			}
			for name, b := range files {
				czWrite(t, filepath.Join(m, name), b, 0o644)
			}
			args := []string{"compress", "-k", "-w", "1"}
			if rm {
				args = append(args, "--rm")
			}
			stdout, stderr := czMust(t, 1, root, append(args, "small-fs")...)
			if stdout != "small-fs/tiny.txt.gz\n" {
				t.Errorf("stdout %q, want only the file that fits", stdout)
			}
			for _, name := range []string{"random300k", "random600k"} {
				if !strings.Contains(stderr, "pbatch: small-fs/"+name+": cannot write the temporary file in small-fs: no space left on device\n") {
					t.Errorf("stderr lacks ENOSPC for %s:\n%s", name, stderr)
				}
				if got := czRead(t, filepath.Join(m, name)); !bytes.Equal(got, files[name]) {
					t.Errorf("%s changed", name)
				}
				czMissing(t, filepath.Join(m, name+".gz"))
			}
			if got := czDecode(t, "gzip", filepath.Join(m, "tiny.txt.gz")); !bytes.Equal(got, files["tiny.txt"]) {
				t.Errorf("tiny.txt.gz does not decode to its input")
			}
			if rm {
				czMissing(t, filepath.Join(m, "tiny.txt"))
			}
			czNoTemps(t, m)
		})
	}
	// Inode exhaustion: no temporary file can be created.
	t.Run("inodes", func(t *testing.T) {
		root := t.TempDir()
		m := filepath.Join(root, "few-inodes")
		czMount(t, "tmpfs", m, "tmpfs", 0, "size=1m,nr_inodes=3")
		czWrite(t, filepath.Join(m, "a"), []byte("a\n"), 0o644)
		for i := 0; ; i++ { // fill the remaining inodes
			if err := os.WriteFile(filepath.Join(m, fmt.Sprintf("fill%d", i)), nil, 0o644); err != nil {
				break
			}
		}
		_, stderr := czMust(t, 1, root, "compress", "-q", "--rm", "few-inodes/a")
		if !strings.Contains(stderr, "pbatch: few-inodes/a: ") || !strings.Contains(stderr, "no space left on device") {
			t.Errorf("stderr:\n%s\nwant no space left on device for a", stderr)
		}
		if got := string(czRead(t, filepath.Join(m, "a"))); got != "a\n" {
			t.Errorf("a: %q", got)
		}
	})
}

// TestCompressEFBIG: past the file size limit (ulimit -f) the write fails with
// EFBIG for that file: reported, its temporary file removed, the process is
// not killed by SIGXFSZ, the other files are compressed, exit 1.
func TestCompressEFBIG(t *testing.T) {
	czNeed(t, "gzip")
	for _, format := range []string{"gzip", "zstd"} {
		t.Run(format, func(t *testing.T) {
			dir := fastTempDir(t)
			big := czRandom(41, 500<<10)
			czWrite(t, filepath.Join(dir, "big"), big, 0o644)
			czWrite(t, filepath.Join(dir, "small"), []byte("small\n"), 0o644)
			var stdout, stderr bytes.Buffer
			// ulimit -f counts 1024-byte blocks in bash and dash alike.
			cmd := exec.Command("sh", "-c", `ulimit -f 100 && exec "$0" compress -k -w 1 --rm --format "$1" .`, pbatchBin(t), format)
			cmd.Dir = dir
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				if errors.As(err, &ee) {
					if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
						t.Fatalf("pbatch was killed by %v (SIGXFSZ must be ignored)", ws.Signal())
					}
				}
				t.Errorf("exit: %v, want 1\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "pbatch: ./big: cannot write the temporary file in .: file too large\n") {
				t.Errorf("stderr:\n%s\nwant ./big: cannot write the temporary file in .: file too large", stderr.String())
			}
			ext := map[string]string{"gzip": ".gz", "zstd": ".zst"}[format]
			if stdout.String() != "./small"+ext+"\n" {
				t.Errorf("stdout %q, want the small file's output", stdout.String())
			}
			if got := czRead(t, filepath.Join(dir, "big")); !bytes.Equal(got, big) {
				t.Errorf("big changed")
			}
			czMissing(t, filepath.Join(dir, "big"+ext))
			czNoTemps(t, dir)
		})
	}
}

// TestCompressReadOnlyDir: a directory pbatch may not write to fails each file
// cleanly (exit 1), nothing created, originals intact: as uid 65534 in a 0555
// directory (EACCES), and as root on a read-only bind mount (EROFS).
func TestCompressReadOnlyDir(t *testing.T) {
	data := []byte("data\n")
	t.Run("nobody", func(t *testing.T) {
		czNeedRoot(t, "setpriv to uid 65534")
		czNeed(t, "setpriv")
		root := t.TempDir()
		os.Chmod(root, 0o755)
		os.Chmod(filepath.Dir(root), 0o755)
		d := filepath.Join(root, "ro")
		czWrite(t, filepath.Join(d, "f"), data, 0o666)
		czWrite(t, filepath.Join(d, "g.gz"), czGzipBytes(t, data), 0o666)
		os.Chmod(d, 0o555)
		nb := czNobodyBin(t)
		for _, args := range [][]string{{"compress", "--rm", "ro"}, {"decompress", "--rm", "ro"}} {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", nb}, args...)...)
			cmd.Dir = root
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("%q as nobody: %v, want exit 1\n%s", args, err, stderr.String())
			}
			name := map[string]string{"compress": "ro/f", "decompress": "ro/g.gz"}[args[0]]
			if !strings.Contains(stderr.String(), "pbatch: "+name+": ") || !strings.Contains(stderr.String(), "permission denied") {
				t.Errorf("%q: stderr:\n%s\nwant %s: … permission denied", args, stderr.String(), name)
			}
		}
		czCheckUntouched(t, d, map[string][]byte{"f": data, "g.gz": czGzipBytes(t, data)})
	})
	t.Run("bind-ro", func(t *testing.T) {
		root := t.TempDir()
		src := filepath.Join(root, "src")
		czWrite(t, filepath.Join(src, "f"), data, 0o644)
		czWrite(t, filepath.Join(src, "g.gz"), czGzipBytes(t, data), 0o644)
		m := filepath.Join(root, "ro")
		czMount(t, src, m, "", unix.MS_BIND, "")
		if err := unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			t.Fatalf("remount read-only: %v", err)
		}
		for _, args := range [][]string{{"compress", "--rm", "ro"}, {"decompress", "--rm", "ro"}} {
			_, stderr := czMust(t, 1, root, args...)
			if !strings.Contains(stderr, "read-only file system") {
				t.Errorf("%q: stderr:\n%s\nwant read-only file system", args, stderr)
			}
		}
		czCheckUntouched(t, src, map[string][]byte{"f": data, "g.gz": czGzipBytes(t, data)})
	})
}

func czCheckUntouched(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %q, want only the originals", dir, names)
	}
	for name, b := range want {
		if got := czRead(t, filepath.Join(dir, name)); !bytes.Equal(got, b) {
			t.Errorf("%s changed", name)
		}
	}
}

var czGzipCache sync.Map

// czGzipBytes compresses b with the real gzip (deterministic with -n).
func czGzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	if v, ok := czGzipCache.Load(string(b)); ok {
		return v.([]byte)
	}
	czNeed(t, "gzip")
	cmd := exec.Command("gzip", "-n", "-c")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	czGzipCache.Store(string(b), out)
	return out
}

// TestCompressSignals: SIGTERM, SIGINT or SIGHUP in the middle of a 1 GiB file
// makes pbatch remove its temporary file and die by the same signal (a shell
// sees 128+n); no NAME.gz appears, the original stays, even with --rm. After
// SIGKILL no file exists under the final name (a temporary file may remain,
// and is skipped), and a rerun works.
func TestCompressSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a 1 GiB file")
	}
	dir := fastTempDir(t)
	p := filepath.Join(dir, "big.log")
	// 1 GiB of repetitive text, made quickly; compressed at -l 9 it takes seconds.
	line := []byte("2026-11-25T10:00:00.000000Z INFO [worker-1] the same line again and again, id=42\n")
	buf := bytes.Repeat(line, (8<<20)/len(line)+1)[:8<<20]
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for range 128 {
		if _, err := fh.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	fh.Close()
	orig := czLstat(t, p)

	start := func(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(pbatchBin(t), args...)
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		czWaitTemp(t, dir, cmd)
		time.Sleep(200 * time.Millisecond) // well into the file
		return cmd, &stderr
	}
	intact := func(t *testing.T) {
		t.Helper()
		st := czLstat(t, p)
		if st.Ino != orig.Ino || st.Size != orig.Size || st.Mtim != orig.Mtim || st.Ctim != orig.Ctim {
			t.Errorf("the original changed: size %d (want %d), inode %d (want %d)", st.Size, orig.Size, st.Ino, orig.Ino)
		}
		czMissing(t, p+".gz")
		czMissing(t, p+".zst")
	}
	for _, c := range []struct {
		sig  syscall.Signal
		args []string
	}{
		{syscall.SIGTERM, []string{"compress", "-l", "9", "big.log"}},
		{syscall.SIGINT, []string{"compress", "-l", "9", "--rm", "big.log"}},
		{syscall.SIGHUP, []string{"compress", "--format", "zstd", "-l", "19", "--rm", "big.log"}},
		{syscall.SIGTERM, []string{"compress", "-w", "1", "-l", "9", "--rm", "big.log"}},
	} {
		t.Run(fmt.Sprintf("%v/%s", c.sig, strings.Join(c.args[1:], " ")), func(t *testing.T) {
			cmd, stderr := start(t, c.args...)
			sent := time.Now()
			cmd.Process.Signal(c.sig)
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("pbatch ended with %v after %v, want death by %v (did it finish first?)\n%s", err, time.Since(sent), c.sig, stderr)
			}
			if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != c.sig {
				t.Errorf("pbatch ended with %v, want death by %v (WIFSIGNALED)\n%s", err, c.sig, stderr)
			}
			if d := time.Since(sent); d > 5*time.Second {
				t.Errorf("pbatch took %v to stop after %v", d, c.sig)
			}
			if !strings.Contains(stderr.String(), "interrupted") {
				t.Errorf("stderr:\n%s\nwant the summary saying interrupted", stderr)
			}
			intact(t)
			czNoTemps(t, dir)
		})
	}

	t.Run("through-a-shell", func(t *testing.T) {
		// sh reports 128+15 for a child killed by SIGTERM.
		cmd := exec.Command("sh", "-c", `"$0" compress -l 9 big.log & pid=$!
			while ! ls -a | grep -q '^\.pbatch-tmp-'; do sleep 0.01; done
			sleep 0.2; kill -TERM $pid; wait $pid; echo "status $?"`, pbatchBin(t))
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "status 143\n") {
			t.Errorf("sh: %v\n%s\nwant status 143", err, out)
		}
		intact(t)
		czNoTemps(t, dir)
	})

	// A SIGINT ignored by whoever started pbatch (nohup, a background job of a
	// non-interactive shell) stays ignored: the run completes.
	t.Run("ignored-SIGINT", func(t *testing.T) {
		cmd := exec.Command("sh", "-c", `trap '' INT; exec "$0" compress -q -l 1 --bwlimit 400MB/s big.log`, pbatchBin(t))
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		czWaitTemp(t, dir, cmd)
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Errorf("with SIGINT ignored: %v, want exit 0\n%s", err, stderr.String())
		}
		czTest(t, "gzip", p+".gz")
		czNoTemps(t, dir)
	})

	// decompress: the same, and the compressed original stays with --rm.
	t.Run("decompress", func(t *testing.T) {
		dz := filepath.Join(dir, "dz")
		czWrite(t, filepath.Join(dz, "big.log.gz"), czRead(t, p+".gz"), 0o644)
		os.Remove(p + ".gz")
		gzSt := czLstat(t, filepath.Join(dz, "big.log.gz"))
		defer os.RemoveAll(dz)
		cmd := exec.Command(pbatchBin(t), "decompress", "--rm", "--bwlimit", "1MB/s", "dz")
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		czWaitTemp(t, dz, cmd)
		time.Sleep(200 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Errorf("decompress: %v, want death by SIGTERM\n%s", err, stderr.String())
		}
		if st := czLstat(t, filepath.Join(dz, "big.log.gz")); st.Ino != gzSt.Ino || st.Size != gzSt.Size || st.Mtim != gzSt.Mtim {
			t.Errorf("the compressed original changed")
		}
		czMissing(t, filepath.Join(dz, "big.log"))
		czNoTemps(t, dz)
	})

	t.Run("SIGKILL", func(t *testing.T) {
		cmd, _ := start(t, "compress", "-l", "9", "--rm", "big.log")
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		intact(t)
		tmps := czTemps(t, dir)
		if len(tmps) > 1 {
			t.Errorf("more than one temporary file after SIGKILL: %q", tmps)
		}
		// A rerun works; the leftover temporary file is skipped, not compressed.
		out, stderr := czMust(t, 0, dir, "compress", "-l", "1", ".")
		if out != "./big.log.gz\n" {
			t.Errorf("rerun: stdout %q", out)
		}
		for _, tmp := range tmps {
			if !strings.Contains(stderr, filepath.Base(tmp)+": skipped") {
				t.Errorf("rerun: the leftover %s is not reported skipped:\n%s", filepath.Base(tmp), stderr)
			}
			czMissing(t, tmp+".gz")
		}
		czTest(t, "gzip", p+".gz")
		for _, tmp := range tmps {
			os.Remove(tmp)
		}
	})
}

// czInvariant checks what must hold after any run, however it ended: no
// temporary file; for every input, the original is intact or a complete output
// exists (or both), and every output present decodes to its input.
func czInvariant(t *testing.T, dir string, files map[string][]byte, f czFormat) {
	t.Helper()
	czNoTemps(t, dir)
	for name, b := range files {
		p := filepath.Join(dir, name)
		orig, errOrig := os.ReadFile(p)
		if errOrig == nil && !bytes.Equal(orig, b) {
			t.Errorf("%s: the original changed", name)
		}
		_, errOut := os.Lstat(p + f.ext)
		if errOut == nil {
			if got := czDecode(t, f.tool, p+f.ext); !bytes.Equal(got, b) {
				t.Errorf("%s%s: does not decode to the input", name, f.ext)
			}
		}
		if errOrig != nil && errOut != nil {
			t.Errorf("%s: neither the original nor its output exists: data lost", name)
		}
	}
}

// TestCompressStdoutErrors: stdout on a full device fails the run (exit 1,
// "write error") and a reader that goes away ends it quietly (SIGPIPE or exit
// 0); either way, with --rm, nothing is lost and no temporary file is left.
func TestCompressStdoutErrors(t *testing.T) {
	czNeed(t, "gzip")
	mk := func(t *testing.T, n int) (string, map[string][]byte) {
		dir := fastTempDir(t)
		files := map[string][]byte{}
		for i := range n {
			name := fmt.Sprintf("d%d/file-%04d.log", i%10, i)
			files[name] = czText(uint64(i), 100+i%2000)
			czWrite(t, filepath.Join(dir, name), files[name], 0o644)
		}
		return dir, files
	}
	t.Run("dev-full", func(t *testing.T) {
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Skipf("no /dev/full: %v", err)
		}
		defer full.Close()
		dir, files := mk(t, 300)
		cmd := exec.Command(pbatchBin(t), "compress", "--rm", ".")
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = full, &stderr
		err = cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("compress > /dev/full: %v, want exit 1\n%s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "pbatch: write error: no space left on device\n") {
			t.Errorf("stderr:\n%s\nwant the write error", stderr.String())
		}
		czInvariant(t, dir, files, czGzip)
	})
	t.Run("closed-pipe", func(t *testing.T) {
		dir, files := mk(t, 3000)
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(pbatchBin(t), "compress", "--rm", ".")
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = pw, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		buf := make([]byte, 1)
		pr.Read(buf) // the first byte of output, then the reader goes away
		pr.Close()
		err = cmd.Wait()
		if err != nil {
			var ee *exec.ExitError
			ws := syscall.WaitStatus(0)
			if errors.As(err, &ee) {
				ws = ee.Sys().(syscall.WaitStatus)
			}
			if !ws.Signaled() || ws.Signal() != syscall.SIGPIPE {
				t.Errorf("compress | head: %v, want death by SIGPIPE or exit 0\n%s", err, stderr.String())
			}
		}
		if s := strings.ToLower(stderr.String()); strings.Contains(s, "broken pipe") || strings.Contains(s, "write error") {
			t.Errorf("stderr mentions the closed pipe:\n%s", stderr.String())
		}
		czInvariant(t, dir, files, czGzip)
	})
}

// TestCompressEMFILE: with few descriptors allowed, files that cannot be
// opened fail one by one ("too many open files"); pbatch does not crash,
// leaves no temporary file and loses nothing.
func TestCompressEMFILE(t *testing.T) {
	czNeed(t, "gzip")
	dir := fastTempDir(t)
	files := map[string][]byte{}
	for i := range 60 {
		name := fmt.Sprintf("d%02d/e/f/g/file", i)
		files[name] = fmt.Appendf(nil, "file %d\n", i)
		czWrite(t, filepath.Join(dir, name), files[name], 0o644)
	}
	for _, n := range []string{"14", "16", "20", "24"} {
		t.Run("nofile="+n, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command("sh", "-c", `ulimit -n "$1" && exec "$0" compress --rm -w 2 .`, pbatchBin(t), n)
			cmd.Dir = dir
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
					t.Fatalf("killed by %v\n%.2000s", ws.Signal(), stderr.String())
				}
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != 0 && code != 1 {
				t.Errorf("exit %d, want 0 or 1 (per-file errors)\n%.2000s", code, stderr.String())
			}
			// pbatch fits its workers into the limit or refuses to start: no
			// file fails with EMFILE any more.
			for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				if strings.HasPrefix(l, "pbatch: ") && !strings.Contains(l, ": too low for pbatch compress") &&
					!strings.Contains(l, "instead of 2") &&
					!strings.Contains(l, "already compressed") && !strings.Contains(l, " files, ") &&
					!strings.HasPrefix(l, "pbatch: output ") {
					t.Errorf("unexpected diagnostic: %s", l)
				}
			}
			czInvariant(t, dir, files, czGzip)
		})
	}
}

// czNobodyBin returns a copy of pbatch that uid 65534 can run.
func czNobodyBin(t *testing.T) string {
	t.Helper()
	dir, err := sharedTmp()
	if err != nil {
		t.Fatal(err)
	}
	nb := filepath.Join(dir, "nobody-compress", "pbatch")
	czNobodyOnce.Do(func() { czNobodyErr = copyExecutable(pbatchBin(t), nb) })
	if czNobodyErr != nil {
		t.Fatal(czNobodyErr)
	}
	return nb
}

var (
	czNobodyOnce sync.Once
	czNobodyErr  error
)

// TestCompressAsUser: an unprivileged user compresses and decompresses their
// own files with --rm, metadata kept. A file of theirs whose group they do not
// belong to cannot get that group on the output: it fails (exit 1) rather than
// get the user's group, and nothing is lost.
func TestCompressAsUser(t *testing.T) {
	czNeedRoot(t, "setpriv to uid 65534")
	czNeed(t, "setpriv", "gzip")
	nb := czNobodyBin(t)
	root := t.TempDir()
	os.Chmod(root, 0o755)
	os.Chmod(filepath.Dir(root), 0o755)
	home := filepath.Join(root, "home")
	data := czText(43, 30<<10)
	czWrite(t, filepath.Join(home, "mine.log"), data, 0o640)
	czWrite(t, filepath.Join(home, "foreign-group.log"), data, 0o640)
	for _, p := range []string{home, filepath.Join(home, "mine.log")} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(home, "foreign-group.log"), 65534, 5678); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 600, time.UTC)
	os.Chtimes(filepath.Join(home, "mine.log"), mtime, mtime)
	run := func(want int, args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", nb}, args...)...)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want {
			t.Errorf("%q as uid 65534: exit %d, want %d\n%s", args, code, want, stderr.String())
		}
		return stderr.String()
	}
	run(0, "compress", "-q", "--rm", "home/mine.log")
	czMissing(t, filepath.Join(home, "mine.log"))
	st := czLstat(t, filepath.Join(home, "mine.log.gz"))
	if st.Uid != 65534 || st.Gid != 65534 || st.Mode&0o7777 != 0o640 || st.Mtim != unix.NsecToTimespec(mtime.UnixNano()) {
		t.Errorf("mine.log.gz: %d:%d %04o mtime %v", st.Uid, st.Gid, st.Mode&0o7777, time.Unix(st.Mtim.Unix()).UTC())
	}
	run(0, "decompress", "-q", "--rm", "home/mine.log.gz")
	if got := czRead(t, filepath.Join(home, "mine.log")); !bytes.Equal(got, data) {
		t.Errorf("mine.log after the round trip differs")
	}
	czMissing(t, filepath.Join(home, "mine.log.gz"))

	stderr := run(1, "compress", "--rm", "home/foreign-group.log")
	if !strings.Contains(stderr, "pbatch: home/foreign-group.log: ") || !strings.Contains(stderr, "operation not permitted") {
		t.Errorf("stderr:\n%s\nwant foreign-group.log: … operation not permitted", stderr)
	}
	if got := czRead(t, filepath.Join(home, "foreign-group.log")); !bytes.Equal(got, data) {
		t.Errorf("foreign-group.log changed")
	}
	czMissing(t, filepath.Join(home, "foreign-group.log.gz"))
	czNoTemps(t, home)
}

// czStrace runs pbatch under strace -f and returns the traced lines (pid
// prefixes removed).
func czStrace(t *testing.T, dir string, args ...string) []string {
	t.Helper()
	czNeed(t, "strace")
	log := filepath.Join(t.TempDir(), "strace.log")
	st := append([]string{"-f", "-qq", "-o", log, "-e",
		"trace=openat,fsync,fdatasync,close,renameat,renameat2,unlinkat,utimensat,fchown,fchmod,fsetxattr,fremovexattr,newfstatat,write"},
		append([]string{pbatchBin(t)}, args...)...)
	cmd := exec.Command("strace", st...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		if strings.Contains(string(out), "ptrace") {
			t.Skipf("strace cannot trace here: %s", out)
		}
		t.Fatalf("strace pbatch %q: %v\n%s", args, err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(czRead(t, log)), "\n") {
		if _, rest, ok := strings.Cut(l, " "); ok {
			// strace pads the result column: "close(7)      = 0".
			lines = append(lines, czPad.ReplaceAllString(strings.TrimSpace(rest), ") = "))
		}
	}
	return lines
}

var czPad = regexp.MustCompile(`\)\s+= `)

// czFind returns the index of the first line at or after from matching re, or -1.
func czFind(lines []string, from int, re string) int {
	r := regexp.MustCompile(re)
	for i := max(from, 0); i < len(lines); i++ {
		if r.MatchString(lines[i]) {
			return i
		}
	}
	return -1
}

// TestCompressSyscallOrder checks rules 7-9 in the system calls themselves:
// the temporary file is created O_EXCL|O_NOFOLLOW 0600 in the directory; its
// metadata and times are set, then it is fsynced and closed (close checked),
// then published by renameat2(RENAME_NOREPLACE) (--force: a plain rename), then
// the directory is fsynced; only after that is the original renamed to a
// private name (no-replace), that inode checked, and that name unlinked (and
// the directory fsynced again): never the original's name itself, which may
// hold another file by then. The output name is never opened.
func TestCompressSyscallOrder(t *testing.T) {
	for _, force := range []bool{false, true} {
		t.Run(fmt.Sprintf("force=%v", force), func(t *testing.T) {
			dir := fastTempDir(t)
			czWrite(t, filepath.Join(dir, "f"), czText(47, 100<<10), 0o640)
			args := []string{"compress", "-q", "-w", "1", "--rm", "f"}
			if force {
				victim := filepath.Join(dir, "victim")
				czWrite(t, victim, []byte("victim\n"), 0o644)
				if err := os.Symlink(victim, filepath.Join(dir, "f.gz")); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--force")
			}
			lines := czStrace(t, dir, args...)
			dump := func() string { return strings.Join(lines, "\n") }
			m := regexp.MustCompile(`^openat\((\d+), "(\.pbatch-tmp-[0-9a-f]{12})", O_RDWR\|O_CREAT\|O_EXCL\|O_NOFOLLOW\|O_CLOEXEC, 0600\) = (\d+)$`)
			open, dirfd, tmp, fd := -1, "", "", ""
			for i, l := range lines {
				if s := m.FindStringSubmatch(l); s != nil {
					open, dirfd, tmp, fd = i, s[1], s[2], s[3]
					break
				}
			}
			if open < 0 {
				t.Fatalf("no openat of a temporary file with O_EXCL|O_NOFOLLOW, mode 0600:\n%s", dump())
			}
			q := regexp.QuoteMeta
			steps := []struct{ what, re string }{
				{"fchown of the temp file", `^fchown\(` + fd + `, `},
				{"fchmod 0640", `^fchmod\(` + fd + `, 0640\) = 0$`},
				{"times set on the descriptor", `^utimensat\(` + fd + `, NULL, `},
				{"fsync of the temp file", `^fsync\(` + fd + `\) = 0$`},
				{"close of the temp file", `^close\(` + fd + `\) = 0$`},
				{"the rename", map[bool]string{
					false: `^renameat2\(` + dirfd + `, "` + q(tmp) + `", ` + dirfd + `, "f\.gz", RENAME_NOREPLACE\) = 0$`,
					true:  `^renameat2?\(` + dirfd + `, "` + q(tmp) + `", ` + dirfd + `, "f\.gz"(, 0)?\) = 0$`,
				}[force]},
				{"fsync of the directory", `^fsync\(` + dirfd + `\) = 0$`},
				{"rename of the original to a private name", `^renameat2\(` + dirfd + `, "f", ` + dirfd + `, "\.pbatch-tmp-[0-9a-f]{12}", RENAME_NOREPLACE\) = 0$`},
				{"check of the inode under the private name", `^newfstatat\(` + dirfd + `, "\.pbatch-tmp-[0-9a-f]{12}", .*AT_SYMLINK_NOFOLLOW\) = 0$`},
				{"unlink of the private name", `^unlinkat\(` + dirfd + `, "\.pbatch-tmp-[0-9a-f]{12}", 0\) = 0$`},
				{"fsync of the directory after the unlink", `^fsync\(` + dirfd + `\) = 0$`},
			}
			at := open
			for _, s := range steps {
				i := czFind(lines, at+1, s.re)
				if i < 0 {
					t.Fatalf("no %s after line %d (%q):\n%s", s.what, at, lines[at], dump())
				}
				at = i
			}
			if i := czFind(lines, 0, `^openat\(.*"f\.gz"`); i >= 0 {
				t.Errorf("the output name was opened: %s", lines[i])
			}
			if i := czFind(lines, 0, `^unlinkat\(.*"f", `); i >= 0 {
				t.Errorf("the original was unlinked by its name, which may hold another file by then: %s", lines[i])
			}
			// The private name unlinked is the one the original was renamed to.
			priv := regexp.MustCompile(`"(\.pbatch-tmp-[0-9a-f]{12})"`)
			if r, u := czFind(lines, 0, `^renameat2\(.*"f", .*RENAME_NOREPLACE`), czFind(lines, 0, `^unlinkat\(`); r >= 0 && u >= 0 {
				if a, b := priv.FindStringSubmatch(lines[r]), priv.FindStringSubmatch(lines[u]); a == nil || b == nil || a[1] != b[1] {
					t.Errorf("unlinked %q, not the private name the original was renamed to (%q)", lines[u], lines[r])
				}
			}
			if force {
				if got := string(czRead(t, filepath.Join(dir, "victim"))); got != "victim\n" {
					t.Errorf("victim: %q", got)
				}
			}
		})
	}
}

// TestCompressInjectedErrors: an I/O error from fsync of the temporary file,
// or from the rename, fails that file (exit 1, "input/output error"); the
// temporary file is removed and the original kept, even with --rm (strace
// injects the errors: a Go binary ignores LD_PRELOAD).
func TestCompressInjectedErrors(t *testing.T) {
	czNeed(t, "strace")
	for _, inject := range []string{"fsync:error=EIO:when=1", "renameat2:error=EIO", "fchmod:error=EIO", "utimensat:error=EIO"} {
		t.Run(strings.Split(inject, ":")[0], func(t *testing.T) {
			dir := fastTempDir(t)
			data := czText(53, 20<<10)
			czWrite(t, filepath.Join(dir, "f"), data, 0o644)
			var stdout, stderr bytes.Buffer
			cmd := exec.Command("strace", "-f", "-qq", "-o", "/dev/null", "-e", "inject="+inject,
				pbatchBin(t), "compress", "-w", "1", "--rm", "f")
			cmd.Dir = dir
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if strings.Contains(stderr.String(), "ptrace") {
				t.Skipf("strace cannot trace here: %s", stderr.String())
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("exit: %v, want 1\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "pbatch: f: ") || !strings.Contains(stderr.String(), "input/output error") {
				t.Errorf("stderr:\n%s\nwant f: … input/output error", stderr.String())
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			if got := czRead(t, filepath.Join(dir, "f")); !bytes.Equal(got, data) {
				t.Errorf("the original was lost or changed")
			}
			czMissing(t, filepath.Join(dir, "f.gz"))
			czNoTemps(t, dir)
		})
	}
	// Removing the original fails: both stay, reported, exit 1.
	t.Run("unlinkat", func(t *testing.T) {
		czNeed(t, "gzip")
		dir := fastTempDir(t)
		data := czText(59, 20<<10)
		czWrite(t, filepath.Join(dir, "f"), data, 0o644)
		cmd := exec.Command("strace", "-f", "-qq", "-o", "/dev/null", "-e", "inject=unlinkat:error=EIO:when=1",
			pbatchBin(t), "compress", "-w", "1", "--rm", "f")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("exit: %v, want 1\n%s", err, out)
		}
		if !strings.Contains(string(out), "pbatch: f: ") || !strings.Contains(string(out), "input/output error") {
			t.Errorf("output:\n%s\nwant f: … input/output error", out)
		}
		if got := czRead(t, filepath.Join(dir, "f")); !bytes.Equal(got, data) {
			t.Errorf("the original was lost or changed")
		}
		if got := czDecode(t, "gzip", filepath.Join(dir, "f.gz")); !bytes.Equal(got, data) {
			t.Errorf("f.gz does not decode to the original")
		}
		czNoTemps(t, dir)
	})
}

// TestCompressLargeZstdWindow: a file large enough for the multi-core zstd
// encoder gets a 256 KiB window up to level 6, which keeps peak memory under
// 64 MiB, and 2 MiB from level 7 (asked for ratio); both decode with the real
// zstd to the input.
func TestCompressLargeZstdWindow(t *testing.T) {
	czNeed(t, "zstd")
	dir := fastTempDir(t)
	in := czText(7, 64<<20+123) // bigFile: the multi-core path
	p := filepath.Join(dir, "big.log")
	czWrite(t, p, in, 0o644)
	for _, c := range []struct {
		level  int
		window uint64
	}{{3, 256 << 10}, {7, 2 << 20}} {
		czMust(t, 0, dir, "compress", "-q", "-w", "2", "--format", "zstd", "-l", strconv.Itoa(c.level), "big.log")
		out := czRead(t, p+".zst")
		var h zstd.Header
		if err := h.Decode(out); err != nil {
			t.Fatalf("-l %d: frame header: %v", c.level, err)
		}
		if h.WindowSize != c.window {
			t.Errorf("-l %d: window %d, want %d", c.level, h.WindowSize, c.window)
		}
		czTest(t, "zstd", p+".zst")
		if !bytes.Equal(czDecode(t, "zstd", p+".zst"), in) {
			t.Errorf("-l %d: zstd -dc does not give the input back", c.level)
		}
		os.Remove(p + ".zst")
	}
}

// TestCompressShortRead: a file system that ends a read early (strace fakes
// EOF on the first read of the input) while fstat says the file is
// unchanged must not give a truncated output, and --rm must keep the original
// (it was removed, exit 0). -P limits the injection to reads of the input, and
// the first read of it by any thread is the first read of it at all.
func TestCompressShortRead(t *testing.T) {
	czNeed(t, "strace")
	dir := fastTempDir(t)
	data := czRandom(61, 300000)
	in := filepath.Join(dir, "f")
	czWrite(t, in, data, 0o644)
	log := filepath.Join(t.TempDir(), "strace.log")
	var stderr bytes.Buffer
	cmd := exec.Command("strace", "-f", "-qq", "-o", log, "-P", in, "-e", "trace=read", "-e", "inject=read:retval=0:when=1",
		pbatchBin(t), "compress", "-w", "1", "--rm", "f")
	cmd.Dir = dir
	cmd.Stderr = &stderr
	err := cmd.Run()
	if strings.Contains(stderr.String(), "ptrace") {
		t.Skipf("strace cannot trace here: %s", stderr.String())
	}
	if b, _ := os.ReadFile(log); !bytes.Contains(b, []byte("INJECTED")) {
		t.Fatalf("strace injected nothing:\n%s", b)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want 1\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "pbatch: f: read ended after 0 of its 300000 bytes") {
		t.Errorf("stderr:\n%s\nwant f: read ended after 0 of its 300000 bytes", stderr.String())
	}
	if got := czRead(t, in); !bytes.Equal(got, data) {
		t.Errorf("the original was lost or changed")
	}
	czMissing(t, filepath.Join(dir, "f.gz"))
	czNoTemps(t, dir)
}
