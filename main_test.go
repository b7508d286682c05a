package main

// End-to-end tests: testscript runs of the real main (testdata/script/*.txtar),
// and Go tests that run a `go build` of pbatch where a script cannot (stdout on
// /dev/full, a reader that goes away, checks by the real coreutils and b3sum on
// hostile names).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"io/fs"
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
	"unicode/utf8"
	"unsafe"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"
)

var updateScripts = flag.Bool("u", false, "update testdata/script/*.txtar with the actual output of failing cmp commands")

func TestMain(m *testing.M) {
	testscript.Main(e2eMain{m}, map[string]func(){"pbatch": func() { main() }})
}

// e2eMain removes the shared temporary directory after the tests ran;
// testscript.Main ends the process, so a deferred call in TestMain would not run.
type e2eMain struct{ m *testing.M }

func (w e2eMain) Run() int {
	code := w.m.Run()
	if e2eTmp != "" {
		os.RemoveAll(e2eTmp)
	}
	return code
}

var (
	e2eTmpOnce sync.Once
	e2eTmp     string // 0755, so that uid 65534 can run binaries in it
	e2eTmpErr  error
)

func sharedTmp() (string, error) {
	e2eTmpOnce.Do(func() {
		e2eTmp, e2eTmpErr = os.MkdirTemp("", "pbatch-e2e-")
		if e2eTmpErr == nil {
			e2eTmpErr = os.Chmod(e2eTmp, 0o755)
		}
	})
	return e2eTmp, e2eTmpErr
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("testdata", "script"),
		UpdateScripts:       *updateScripts,
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		// Report every failed check of a script, not only the first.
		ContinueOnError: true,
		Setup: func(env *testscript.Env) error {
			// Fixed locale and time zone: checker output ("OK") and JSON mtimes
			// must not depend on the machine.
			env.Setenv("LC_ALL", "C")
			env.Setenv("TZ", "UTC")
			env.Setenv("HOME", env.WorkDir)
			return nil
		},
		Condition: scriptCondition,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status":     cmdStatus,
			"asnobody":   cmdAsNobody,
			"mkfile":     cmdMkfile,
			"mklink":     cmdMklink,
			"mkfifo":     cmdMkfifo,
			"mksock":     cmdMksock,
			"mknod":      cmdMknod,
			"chtimes":    cmdChtimes,
			"mktree":     cmdMktree,
			"mkbig":      cmdMkbig,
			"mounttmpfs": cmdMountTmpfs,
			"normdiag":   cmdNormDiag,
		},
	})
}

// scriptCondition adds:
//
//	[root]     running as uid 0
//	[nobody]   root, with setpriv, so asnobody can drop to uid 65534
//	[checkz]   sha256sum -c accepts -z (coreutils 9.2 and later)
//	[mount]    a tmpfs can be mounted here
//	[unshare]  root, with unshare, so a script can run without /proc
//	[fchmodat2] the kernel has fchmodat2 (Linux 6.6): chmod needs no /proc
func scriptCondition(cond string) (bool, error) {
	switch cond {
	case "root":
		return os.Geteuid() == 0, nil
	case "nobody":
		if os.Geteuid() != 0 {
			return false, nil
		}
		_, err := exec.LookPath("setpriv")
		return err == nil, nil
	case "checkz":
		return checkZSupported(), nil
	case "mount":
		return canMount(), nil
	case "unshare":
		return canUnshare(), nil
	case "fchmodat2":
		return hasFchmodat2(), nil
	}
	return false, fmt.Errorf("unknown condition %q", cond)
}

var checkZ = sync.OnceValue(func() bool {
	// coreutils before 9.2 answers "the --zero option is not supported when
	// verifying checksums".
	out, err := exec.Command("sha256sum", "-c", "-z", "/dev/null").CombinedOutput()
	if errors.Is(err, exec.ErrNotFound) {
		return false
	}
	return !bytes.Contains(out, []byte("not supported"))
})

func checkZSupported() bool { return checkZ() }

var canMount = sync.OnceValue(func() bool {
	if os.Geteuid() != 0 {
		return false
	}
	dir, err := os.MkdirTemp("", "pbatch-mount-")
	if err != nil {
		return false
	}
	defer os.Remove(dir)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		return false
	}
	unix.Unmount(dir, 0)
	return true
})

var canUnshare = sync.OnceValue(func() bool {
	if os.Geteuid() != 0 {
		return false
	}
	return exec.Command("unshare", "-m", "--propagation", "private", "true").Run() == nil
})

var hasFchmodat2 = sync.OnceValue(func() bool {
	f, err := os.CreateTemp("", "pbatch-fchmodat2-")
	if err != nil {
		return false
	}
	defer os.Remove(f.Name())
	defer f.Close()
	_, _, e := unix.Syscall6(unix.SYS_FCHMODAT2, f.Fd(), uintptr(unsafe.Pointer(&[1]byte{})), 0o600, unix.AT_EMPTY_PATH, 0, 0)
	return e == 0
})

// unquoteArg lets scripts spell bytes a txtar file cannot hold well: an argument
// written as a Go string literal, "a\nb\xff", is unquoted; others are used as is.
func unquoteArg(ts *testscript.TestScript, s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		u, err := strconv.Unquote(s)
		if err != nil {
			ts.Fatalf("bad Go string literal %s: %v", s, err)
		}
		return u
	}
	return s
}

// status N CMD ARGS… runs CMD like exec and fails unless it exits with code N.
// stdout and stderr are kept for the stdout, stderr and cmp commands.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! status (give the expected exit code)")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: status CODE COMMAND [ARGS…]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: bad exit code %q", args[0])
	}
	checkExit(ts, want, ts.Exec(args[1], args[2:]...))
}

func checkExit(ts *testscript.TestScript, want int, err error) {
	got := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%v", err)
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ts.Fatalf("killed by %v, want exit code %d", ws.Signal(), want)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}

var (
	nobodyBinOnce sync.Once
	nobodyBin     string
	nobodyBinErr  error
)

// cmdAsNobody: asnobody N CMD ARGS… runs CMD as uid/gid 65534 without
// supplementary groups (setpriv), and fails unless it exits with code N. The
// pbatch that testscript installs lives in a 0700 directory, so a 0755 copy is run.
func cmdAsNobody(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! asnobody (give the expected exit code)")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: asnobody CODE COMMAND [ARGS…]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("asnobody: bad exit code %q", args[0])
	}
	if os.Geteuid() != 0 {
		ts.Fatalf("asnobody needs root: guard the script with [!nobody] skip")
	}
	cmd := args[1]
	if cmd == "pbatch" {
		nobodyBinOnce.Do(func() {
			var src, dir string
			if src, nobodyBinErr = exec.LookPath("pbatch"); nobodyBinErr != nil {
				return
			}
			if dir, nobodyBinErr = sharedTmp(); nobodyBinErr != nil {
				return
			}
			// The name must stay "pbatch": testscript.Main dispatches on it.
			nobodyBin = filepath.Join(dir, "nobody", "pbatch")
			nobodyBinErr = copyExecutable(src, nobodyBin)
		})
		ts.Check(nobodyBinErr)
		cmd = nobodyBin
	}
	// uid 65534 must be able to reach the work directory.
	work := ts.Getenv("WORK")
	ts.Check(os.Chmod(work, 0o755))
	ts.Check(os.Chmod(filepath.Dir(work), 0o755))
	full := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", cmd}, args[2:]...)
	checkExit(ts, want, ts.Exec("setpriv", full...))
}

func copyExecutable(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, 0o755)
}

// mkfile NAME [CONTENT] writes a file, creating its parent directories. NAME and
// CONTENT may be Go string literals ("new\nline", "\xff").
func cmdMkfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: mkfile NAME [CONTENT]")
	}
	name := ts.MkAbs(unquoteArg(ts, args[0]))
	content := ""
	if len(args) == 2 {
		content = unquoteArg(ts, args[1])
	}
	ts.Check(os.MkdirAll(filepath.Dir(name), 0o755))
	ts.Check(os.WriteFile(name, []byte(content), 0o644))
}

// mklink NAME TARGET makes a symbolic link, creating NAME's parent directories;
// both may be Go string literals.
func cmdMklink(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mklink NAME TARGET")
	}
	name := ts.MkAbs(unquoteArg(ts, args[0]))
	ts.Check(os.MkdirAll(filepath.Dir(name), 0o755))
	ts.Check(os.Symlink(unquoteArg(ts, args[1]), name))
}

func cmdMkfifo(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkfifo PATH")
	}
	ts.Check(unix.Mkfifo(ts.MkAbs(args[0]), 0o644))
}

// mksock PATH leaves a unix socket node at PATH (bound, then closed).
func cmdMksock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mksock PATH")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	ts.Check(err)
	defer unix.Close(fd)
	// Socket paths are limited to 108 bytes: bind through a descriptor of the
	// directory (no os.Chdir, which would race with the parallel scripts).
	dir, base := filepath.Split(ts.MkAbs(args[0]))
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	ts.Check(err)
	defer unix.Close(dfd)
	ts.Check(unix.Bind(fd, &unix.SockaddrUnix{Name: fmt.Sprintf("/proc/self/fd/%d/%s", dfd, base)}))
}

// mknod PATH makes a character device with the numbers of /dev/null (1, 3): a
// device that, if pbatch wrongly read it, ends at once instead of hanging.
func cmdMknod(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mknod PATH")
	}
	ts.Check(unix.Mknod(ts.MkAbs(args[0]), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))))
}

// chtimes PATH RFC3339 sets atime and mtime, so JSON output is reproducible.
func cmdChtimes(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: chtimes PATH 2001-02-03T04:05:06.789Z")
	}
	tm, err := time.Parse(time.RFC3339Nano, args[1])
	ts.Check(err)
	// Not os.Chtimes: it passes an int64 of ns, which wraps outside 1677-2262.
	t := unix.Timespec{Sec: tm.Unix(), Nsec: int64(tm.Nanosecond())}
	ts.Check(unix.UtimesNanoAt(unix.AT_FDCWD, ts.MkAbs(unquoteArg(ts, args[0])), []unix.Timespec{t, t}, 0))
}

// mktree DIR NDIRS NFILES makes DIR/dNN/fNNN, each file holding its own path:
// zero-padded names, so sorted per directory and sorted as whole paths agree.
func cmdMktree(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: mktree DIR NDIRS NFILES")
	}
	nd, err1 := strconv.Atoi(args[1])
	nf, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil {
		ts.Fatalf("mktree: bad counts")
	}
	root := ts.MkAbs(args[0])
	for d := range nd {
		dir := filepath.Join(root, fmt.Sprintf("d%02d", d))
		ts.Check(os.MkdirAll(dir, 0o755))
		for f := range nf {
			rel := fmt.Sprintf("d%02d/f%03d", d, f)
			ts.Check(os.WriteFile(filepath.Join(root, rel), []byte(rel+"\n"), 0o644))
		}
	}
}

// mkbig NAME SIZE writes SIZE bytes of a fixed pattern (i mod 251): enough to
// cross pbatch's read buffer without a large txtar file.
func cmdMkbig(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkbig NAME SIZE")
	}
	n, err := strconv.Atoi(args[1])
	ts.Check(err)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// mounttmpfs DIR mounts a small tmpfs on DIR until the script ends.
func cmdMountTmpfs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mounttmpfs DIR")
	}
	dir := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(dir, 0o755))
	ts.Check(unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"))
	ts.Defer(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// --- Go tests of the built binary ---

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// pbatchBin builds pbatch once per test binary with `go build`.
func pbatchBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
			if _, err := os.Stat(gobin); err != nil {
				buildErr = fmt.Errorf("no go command to build pbatch with: %w", err)
				return
			}
		}
		dir, err := sharedTmp()
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "build", "pbatch")
		out, err := exec.Command(gobin, "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		if strings.HasPrefix(buildErr.Error(), "no go command") {
			t.Skip(buildErr)
		}
		t.Fatal(buildErr)
	}
	return builtBin
}

// TestStdoutFull: an error writing results (ENOSPC on /dev/full) is reported on
// stderr and makes the exit status non-zero, in every output format.
func TestStdoutFull(t *testing.T) {
	bin := pbatchBin(t)
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	tree := t.TempDir()
	writeTree(t, tree, map[string]string{"a": "a\n", "sub/b": "b\n", "sub/c": ""})
	for _, args := range [][]string{
		{"hash", tree},
		{"hash", "-q", tree},
		{"hash", "-k", "--format", "json", tree},
		{"hash", "-0", tree},
		{"list", tree},
	} {
		t.Run(strings.Join(args[:len(args)-1], " "), func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(bin, args...)
			cmd.Stdout = full
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("pbatch %s > /dev/full: got %v, want exit status 1", strings.Join(args, " "), err)
			}
			if want := "pbatch: write error: no space left on device\n"; !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", stderr.String(), want)
			}
		})
	}
}

// TestClosedPipe: `pbatch hash bigtree | head -1` ends quietly: killed by SIGPIPE
// (as coreutils are) or exit 0, and nothing about a broken pipe on stderr.
func TestClosedPipe(t *testing.T) {
	bin := pbatchBin(t)
	tree := fastTempDir(t)
	files := map[string]string{}
	for i := range 4000 {
		files[fmt.Sprintf("d%d/file-with-a-long-enough-name-%05d", i%10, i)] = strconv.Itoa(i)
	}
	writeTree(t, tree, files)
	for _, args := range [][]string{
		{"hash", tree},
		{"hash", "-k", "-w", "1", tree},
		{"hash", "--format", "json", tree},
		{"list", tree},
	} {
		t.Run(strings.Join(args[:len(args)-1], " "), func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd := exec.Command(bin, args...)
			cmd.Stdout = pw
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			line, err := bufio.NewReader(pr).ReadString('\n')
			pr.Close() // as head -1 does after its line
			closed := time.Now()
			if err != nil || line == "" {
				t.Errorf("first line: %q, %v", line, err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("pbatch %s did not end after its reader went away", strings.Join(args, " "))
			}
			if err != nil {
				var ee *exec.ExitError
				ws, ok := syscall.WaitStatus(0), false
				if errors.As(err, &ee) {
					ws, ok = ee.Sys().(syscall.WaitStatus)
				}
				if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGPIPE {
					t.Errorf("got %v %s after the reader went away, want death by SIGPIPE (WIFSIGNALED) or exit status 0",
						err, time.Since(closed).Round(10*time.Millisecond))
				}
			}
			if s := strings.ToLower(stderr.String()); strings.Contains(s, "broken pipe") || strings.Contains(s, "write error") {
				t.Errorf("stderr mentions the closed pipe:\n%s", stderr.String())
			}
		})
	}
}

// fastTempDir prefers tmpfs: creating thousands of files on this machine's ext4
// is slow after recent deletions.
func fastTempDir(t *testing.T) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "pbatch-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// hostileNames are paths below the root that break naive checksum lines, shells
// and terminals.
var hostileNames = []string{
	"plain.txt",
	"with space.txt",
	" leading space",
	"trailing space ",
	"-rf",
	"--help",
	"-",
	"back\\slash",
	"\\leading-backslash",
	"new\nline",
	"\nleading-newline",
	"trailing-newline\n",
	"car\rret",
	"all\\three\r\nat once",
	"tab\tname",
	"bad\xffname",
	"\xfe\xfflatin1-ish \xe9t\xe9",
	"rtl\u202etxt.exe",
	"(paren) = 0123",
	"SHA256 (fake) = 00",
	"star*?[x]",
	"quote\"'`$(echo hi)",
	strings.Repeat("n", 251) + ".txt", // 255 bytes: NAME_MAX
	"\u00e9\u0301 combining",
	"dir with\nnewline/inner\\file",
	"dir with\nnewline/-x",
	"\xffdir/\xfffile",
	"deep/er/still/" + strings.Repeat("d", 200) + "/end",
}

// TestRealToolsHostileNames checks pbatch's output with the real checkers on a
// tree of hostile names. Each check counts the files it verified, so a checker
// that silently verified nothing fails the test.
func TestRealToolsHostileNames(t *testing.T) {
	bin := pbatchBin(t)
	root := t.TempDir()
	content := map[string][]byte{} // "./" + name → content
	for i, name := range hostileNames {
		c := []byte(fmt.Sprintf("file %d: %q\n", i, name))
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, c, 0o644); err != nil {
			t.Fatalf("creating %q: %v", name, err)
		}
		content["./"+name] = c
	}
	n := len(hostileNames)

	// pbatch runs in root on "."; every path it prints starts with "./".
	pbatch := func(t *testing.T, args ...string) []byte {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(bin, append(args, ".")...)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("pbatch %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		if slices.Contains(args, "-q") {
			if stderr.Len() > 0 {
				t.Errorf("pbatch %s: stderr %q, want nothing", strings.Join(args, " "), stderr.String())
			}
		} else if want := fmt.Sprintf("pbatch: %d files, ", n); !strings.HasPrefix(stderr.String(), want) {
			t.Errorf("pbatch %s: stderr %q, want only the summary %q…", strings.Join(args, " "), stderr.String(), want)
		}
		return stdout.Bytes()
	}
	// check runs a checker on sums (a file in a temp dir, read from root) and
	// wants exit 0 and one OK line per expected file.
	check := func(t *testing.T, want int, sums []byte, tool string, args ...string) {
		t.Helper()
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
		sumFile := filepath.Join(t.TempDir(), "sums")
		if err := os.WriteFile(sumFile, sums, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(tool, append(args, sumFile)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
		}
		ok := 0
		for _, l := range bytes.Split(out, []byte("\n")) {
			if bytes.HasSuffix(l, []byte(": OK")) {
				ok++
			}
		}
		if ok != want {
			t.Errorf("%s %s: %d OK lines, want %d\n%s", tool, strings.Join(args, " "), ok, want, out)
		}
	}

	for _, c := range []struct {
		alg, tool string
		new       func() hash.Hash
	}{
		{"sha256", "sha256sum", sha256.New},
		{"md5", "md5sum", md5.New},
		{"sha1", "sha1sum", sha1.New},
		{"sha512", "sha512sum", sha512.New},
	} {
		t.Run(c.alg, func(t *testing.T) {
			out := pbatch(t, "-q", "hash", "-a", c.alg)
			check(t, n, out, c.tool, "-c", "--strict")
			// The same lines as the tool itself prints for the same files.
			compareWithTool(t, root, content, out, c.tool)
		})
		t.Run(c.alg+"/tag", func(t *testing.T) {
			out := pbatch(t, "hash", "--tag", "-a", c.alg)
			check(t, n, out, c.tool, "-c", "--strict")
			compareWithTool(t, root, content, out, c.tool, "--tag")
		})
		t.Run(c.alg+"/null", func(t *testing.T) {
			out := pbatch(t, "hash", "-0", "-a", c.alg)
			verifyNullRecords(t, out, content, c.new)
			if !checkZSupported() {
				t.Skipf("%s -c -z is not supported by this coreutils (9.2 or later needed); records verified in Go only", c.tool)
			}
			check(t, n, out, c.tool, "-c", "-z", "--strict")
		})
	}

	t.Run("blake3", func(t *testing.T) {
		if _, err := exec.LookPath("b3sum"); err != nil {
			t.Skip("b3sum not installed (apt-get install b3sum)")
		}
		out := pbatch(t, "hash", "-a", "blake3")
		// b3sum --check reads its input as UTF-8 and b3sum itself prints such
		// names lossily, so no checksum file can name a non-UTF-8 path for it:
		// those lines are left out, and the rest must all verify.
		var utf8Lines []byte
		want := 0
		for _, l := range bytes.SplitAfter(out, []byte("\n")) {
			if len(l) > 0 && utf8.Valid(l) {
				utf8Lines = append(utf8Lines, l...)
				want++
			}
		}
		nonUTF8 := 0
		for name := range content {
			if !utf8.ValidString(name) {
				nonUTF8++
			}
		}
		if want != n-nonUTF8 {
			t.Errorf("%d UTF-8 lines in the output, want %d (one per UTF-8 name)\n%s", want, n-nonUTF8, out)
		}
		check(t, want, utf8Lines, "b3sum", "--check")
		utf8Content := map[string][]byte{}
		for name, c := range content {
			if utf8.ValidString(name) {
				utf8Content[name] = c
			}
		}
		compareWithTool(t, root, utf8Content, utf8Lines, "b3sum")
	})

	// A control: the checker must notice a changed file, so the checks above can fail.
	t.Run("control", func(t *testing.T) {
		out := pbatch(t, "-q", "hash")
		victim := filepath.Join(root, "new\nline")
		if err := os.WriteFile(victim, []byte("changed\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(victim, content["./new\nline"], 0o644)
		sumFile := filepath.Join(t.TempDir(), "sums")
		if err := os.WriteFile(sumFile, out, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sha256sum", "-c", sumFile)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		got, err := cmd.CombinedOutput()
		if err == nil || !bytes.Contains(got, []byte(`\./new\nline: FAILED`)) {
			t.Errorf("sha256sum -c after a change: %v, want exit 1 and the changed file FAILED\n%s", err, got)
		}
	})
}

// compareWithTool wants the set of pbatch's lines to equal the lines the tool
// prints for the same files.
func compareWithTool(t *testing.T, root string, content map[string][]byte, out []byte, tool string, args ...string) {
	t.Helper()
	names := make([]string, 0, len(content))
	for name := range content {
		names = append(names, name)
	}
	slices.Sort(names)
	cmd := exec.Command(tool, append(append(args, "--"), names...)...)
	cmd.Dir = root
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	g, w := sortedLines(out), sortedLines(want)
	if !slices.Equal(g, w) {
		t.Errorf("pbatch lines differ from %s %s:\ngot:\n%q\nwant:\n%q", tool, strings.Join(args, " "), g, w)
	}
}

func sortedLines(b []byte) []string {
	l := strings.SplitAfter(string(b), "\n")
	if l[len(l)-1] == "" {
		l = l[:len(l)-1]
	}
	slices.Sort(l)
	return l
}

// verifyNullRecords checks -0 output: one "HEX  NAME\0" record per file, names
// raw (never escaped), digests right.
func verifyNullRecords(t *testing.T, out []byte, content map[string][]byte, newHash func() hash.Hash) {
	t.Helper()
	if len(out) == 0 || out[len(out)-1] != 0 {
		t.Fatalf("output does not end with NUL: %q", out)
	}
	seen := map[string]bool{}
	for _, rec := range strings.Split(string(out[:len(out)-1]), "\x00") {
		sum, name, ok := strings.Cut(rec, "  ")
		if !ok {
			t.Errorf("record without two spaces: %q", rec)
			continue
		}
		c, known := content[name]
		if !known {
			t.Errorf("record for unknown name %q (escaped?)", name)
			continue
		}
		if seen[name] {
			t.Errorf("two records for %q", name)
		}
		seen[name] = true
		h := newHash()
		h.Write(c)
		if want := hex.EncodeToString(h.Sum(nil)); sum != want {
			t.Errorf("%q: digest %s, want %s", name, sum, want)
		}
	}
	if len(seen) != len(content) {
		t.Errorf("%d records, want %d", len(seen), len(content))
	}
}

// TestLongPathNotDropped: a file whose path below the PATH is longer than
// PATH_MAX is hashed or reported with its path (exit 1), never dropped silently.
func TestLongPathNotDropped(t *testing.T) {
	bin := pbatchBin(t)
	root := fastTempDir(t)
	mkDeep(t, root, map[string]string{"deepest": "deep\n"})
	name := strings.Repeat("d", 200)
	// os.RemoveAll works through descriptors, so the cleanup copes with the depth.
	for _, cmd := range []string{"hash", "list"} {
		t.Run(cmd, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			c := exec.Command(bin, cmd, "-q", ".")
			c.Dir = root
			c.Stdout, c.Stderr = &stdout, &stderr
			err := c.Run()
			processed := strings.HasSuffix(stdout.String(), "/deepest\n")
			reported := bytes.Contains(stderr.Bytes(), []byte("file name too long"))
			var ee *exec.ExitError
			switch {
			case processed && err == nil:
			case reported && errors.As(err, &ee) && ee.ExitCode() == 1:
				if !strings.HasPrefix(stderr.String(), "pbatch: ./"+name+"/") {
					t.Errorf("the error does not name the path:\n%.200s", stderr.String())
				}
			default:
				t.Errorf("pbatch %s: %v; the deep file is neither processed nor reported\nstdout: %.200q\nstderr: %.200q",
					cmd, err, stdout.String(), stderr.String())
			}
		})
	}
}

// TestLowFileLimit: under a low `ulimit -n` a run either processes every file
// (with fewer workers, and says so) or refuses to start with one line; it
// never fails some files with EMFILE, and the runtime never dies.
func TestLowFileLimit(t *testing.T) {
	bin := pbatchBin(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	const dirs, files = 30, 20
	for d := range dirs {
		sub := filepath.Join(tree, fmt.Sprintf("d%02d", d), "deeper")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range files {
			name := filepath.Join(sub, fmt.Sprintf("f%02d", f))
			if err := os.WriteFile(name, []byte(name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Every directory as a PATH on stdin: many roots open at once unless bounded.
	var dirList strings.Builder
	if err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirList.WriteString(p + "\n")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	run := func(limit int, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		// A run that waits on descriptors forever must fail, not hang the test.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", `ulimit -n "$0" && exec "$@"`, fmt.Sprint(limit), bin}, args...)...)
		if args[len(args)-1] == "-" {
			cmd.Stdin = strings.NewReader(dirList.String())
		}
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}
	tooLow := regexp.MustCompile(`\Apbatch: open file limit \(ulimit -n\) is \d+: too low[^\n]*; raise it\n\z`)
	sawFewer, sawOK := false, false
	for _, limit := range []int{4, 8, 11, 12, 13, 14, 15, 16, 18, 20, 24, 32} {
		for _, args := range [][]string{
			{"hash", "-w", "8", tree}, // not -q: the summary and the warning
			{"hash", "-q", "-k", "-w", "4", tree},
			{"hash", "-q", "-w", "4", "-"},
			{"exec", "-q", "-w", "4", tree, "--", "true"},
		} {
			out, errOut, code := run(limit, args...)
			what := fmt.Sprintf("ulimit -n %d; pbatch %s", limit, strings.Join(args[:len(args)-1], " "))
			if strings.Contains(errOut, "fatal error") || strings.Contains(errOut, "goroutine ") {
				t.Fatalf("%s: the runtime died:\n%s", what, errOut)
			}
			if tooLow.MatchString(errOut) {
				if code != 1 || out != "" {
					t.Errorf("%s: refused with exit %d and output %q; want exit 1 and no output", what, code, out)
				}
				continue
			}
			if code != 0 {
				t.Errorf("%s: exit %d\n%s", what, code, errOut)
				continue
			}
			if args[0] == "hash" {
				if n := strings.Count(out, "\n"); n != dirs*files {
					t.Errorf("%s: %d lines, want %d", what, n, dirs*files)
				}
			}
			for _, line := range strings.Split(strings.TrimSuffix(errOut, "\n"), "\n") {
				switch {
				case line == "":
				case strings.Contains(line, "instead of 8"):
					sawFewer = true
				case strings.HasPrefix(line, fmt.Sprintf("pbatch: %d files, ", dirs*files)):
				default:
					t.Errorf("%s: unexpected stderr line %q", what, line)
				}
			}
			sawOK = true
		}
	}
	if !sawOK || !sawFewer {
		t.Errorf("no limit gave a run (%v) or a run with fewer workers (%v): the limits tested no longer span the range", sawOK, sawFewer)
	}

	// check reads its manifests one after the other: each is closed once read,
	// so more manifests than descriptors is fine.
	var manifests []string
	for d := range dirs {
		name := filepath.Join(dir, fmt.Sprintf("m%02d.sha256", d))
		f := filepath.Join(tree, fmt.Sprintf("d%02d", d), "deeper", "f00")
		sum := sha256.Sum256([]byte(f))
		if err := os.WriteFile(name, fmt.Appendf(nil, "%x  %s\n", sum, f), 0o644); err != nil {
			t.Fatal(err)
		}
		manifests = append(manifests, name)
	}
	for _, limit := range []int{16, 24} {
		out, errOut, code := run(limit, append([]string{"check", "-w", "2"}, manifests...)...)
		if code != 0 || strings.Count(out, ": OK\n") != dirs || errOut != "" {
			t.Errorf("ulimit -n %d; pbatch check %d manifests: exit %d, %d OK lines, stderr:\n%s", limit, dirs, code, strings.Count(out, ": OK\n"), errOut)
		}
	}

	// -k reads directories depth-first: a tree deeper than the limit must not
	// hold a descriptor per level.
	deep := filepath.Join(dir, "deep", strings.Repeat("d/", 40))
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(deep, "f"), []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{16, 24} {
		out, errOut, code := run(limit, "hash", "-q", "-k", filepath.Join(dir, "deep"))
		if code != 0 || strings.Count(out, "\n") != 1 || errOut != "" {
			t.Errorf("ulimit -n %d; pbatch hash -k DEEP: exit %d, %d lines, stderr:\n%s", limit, code, strings.Count(out, "\n"), errOut)
		}
	}
}

// TestFirstSignalEndsBlockedRun: a run blocked writing to a stdout nobody
// reads still ends on the first SIGTERM, by that signal, a few seconds later
// (SAFETY 26); before, it waited for the reader forever.
func TestFirstSignalEndsBlockedRun(t *testing.T) {
	bin := pbatchBin(t)
	dir := t.TempDir()
	makeFiles(t, dir, 3000, func(i int) string { return strconv.Itoa(i) })
	// With 2>&1 the line saying why cannot be written either: it must not
	// stop the exit.
	for _, sameStderr := range []bool{false, true} {
		t.Run(fmt.Sprintf("2>&1=%v", sameStderr), func(t *testing.T) {
			cmd := exec.Command(bin, "hash", "-w", "2", dir)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close() // never read: the pipe fills and pbatch blocks in write
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = w, &stderr
			if sameStderr {
				cmd.Stderr = w
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			time.Sleep(time.Second)
			start := time.Now()
			cmd.Process.Signal(syscall.SIGTERM)
			ended := make(chan error, 1)
			go func() { ended <- cmd.Wait() }()
			select {
			case <-ended:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-ended
				t.Fatalf("still running 20 s after one SIGTERM\n%s", stderr.String())
			}
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
				t.Errorf("ended with %v, want killed by SIGTERM\n%s", cmd.ProcessState, stderr.String())
			}
			if !sameStderr && !strings.Contains(stderr.String(), "still running 5s after SIGTERM: exiting") {
				t.Errorf("stderr %q, want the line saying why it exits", stderr.String())
			}
			t.Logf("ended %v after SIGTERM", time.Since(start).Round(100*time.Millisecond))
		})
	}
}

// TestNamedDirReplaced: a directory PATH inside another PATH is left out of
// that PATH's walk. If it is renamed away and another directory made under
// its name before it is opened, what it held must not vanish silently: the
// run says so and fails (it was hashed by nobody, exit 0, before).
func TestNamedDirReplaced(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("needs strace")
	}
	bin := pbatchBin(t)
	dir := t.TempDir()
	for _, p := range []string{"h/a", "h/deep/zz/secret"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// strace holds the open of h/deep/zz for its own walk (the start of the
	// run only stats it) while the test swaps the directory.
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("strace", "-f", "-qq", "-o", "/dev/null", "-P", "h/deep/zz", "-e", "trace=openat",
		"-e", "inject=openat:delay_enter=1500000", bin, "hash", "-k", "h", "h/deep/zz")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	if err := os.Rename(filepath.Join(dir, "h/deep/zz"), filepath.Join(dir, "h/deep/zy")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "h/deep/zz"), 0o755)
	err := cmd.Wait()
	if strings.Contains(stderr.String(), "ptrace") {
		t.Skipf("strace cannot trace here: %s", stderr.String())
	}
	if strings.Contains(stdout.String(), "h/deep/zy/secret") {
		t.Skip("the walk of h reached zy after the swap: no window this time")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit %v, want 1\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "pbatch: h/deep/zz: replaced by another directory since the run began") {
		t.Errorf("stderr:\n%s\nwant the PATH named as replaced", stderr.String())
	}
}
