package main

// End-to-end tests of how compress and decompress publish outputs and remove
// originals (SAFETY.md rules 19, 20 and 23): one input per output per run, the
// original removed only as the inode that was read (races widened with strace
// delays), no instant at which a temporary file is more accessible than its
// input, metadata that cannot be carried blocking --rm, and error lines that
// name the operation and the object.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

func czZstdBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// czStraceStart starts pbatch in dir under strace -f with the given -e
// expressions; the caller waits.
func czStraceStart(t *testing.T, dir string, exprs []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	czNeed(t, "strace")
	st := []string{"-f", "-qq", "-o", "/dev/null"}
	for _, e := range exprs {
		st = append(st, "-e", e)
	}
	cmd := exec.Command("strace", append(append(st, pbatchBin(t)), args...)...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &stdout, &stderr
}

func czExit(t *testing.T, err error, stderr string) int {
	t.Helper()
	if strings.Contains(stderr, "ptrace") {
		t.Skipf("strace cannot trace here: %s", stderr)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode()
	}
	t.Fatalf("pbatch: %v\n%s", err, stderr)
	return -1
}

func czWaitFile(t *testing.T, p string, cmd *exec.Cmd) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Lstat(p); err == nil {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatalf("%s did not appear within 30 s", p)
}

// czSwap replaces p by rename with a new file, as an editor's save or a log
// rotation does.
func czSwap(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p+".new", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".new", p); err != nil {
		t.Fatal(err)
	}
}

// TestCompressOneOutputPerRun: inputs whose names decompress to one output
// (f.gz f.GZ f.zst → f, t.tgz t.tar.gz → t.tar) never publish more than one
// content there in one run. With --force, an output that existed before the
// run is replaced once, by one input; the others fail with a line saying the
// output was written by this run, and are kept, --rm or not. Before, every
// input was removed and only the last content survived.
func TestCompressOneOutputPerRun(t *testing.T) {
	czNeed(t, "gzip")
	for _, c := range []struct {
		name  string
		extra []string
		pre   bool // f and t.tar exist before the run
	}{
		{"force-rm-w1", []string{"--force", "--rm", "-w", "1"}, true},
		{"force-rm-w3", []string{"--force", "--rm", "-w", "3"}, true},
		{"force-rm-no-previous", []string{"--force", "--rm", "-w", "3"}, false},
		{"force", []string{"--force", "-w", "2"}, true},
		{"rm", []string{"--rm", "-w", "3"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := fastTempDir(t)
			groups := []struct {
				out    string
				inputs map[string][]byte // input name → decoded content
			}{
				{"f", map[string][]byte{"f.gz": czText(1, 40<<10), "f.GZ": czText(2, 40<<10), "f.zst": czText(3, 40<<10)}},
				{"t.tar", map[string][]byte{"t.tgz": czText(4, 40<<10), "t.tar.gz": czText(5, 40<<10)}},
			}
			raw := map[string][]byte{}
			args := append([]string{"decompress", "-q"}, c.extra...)
			for _, g := range groups {
				if c.pre {
					czWrite(t, filepath.Join(dir, g.out), []byte("existed before the run\n"), 0o644)
				}
				for name, content := range g.inputs {
					b := czGzipBytes(t, content)
					if strings.HasSuffix(name, ".zst") {
						b = czZstdBytes(t, content)
					}
					raw[name] = b
					czWrite(t, filepath.Join(dir, name), b, 0o644)
					args = append(args, name)
				}
			}
			stdout, stderr, code := czRun(t, dir, args...)
			if code != 1 {
				t.Errorf("exit %d, want 1\n%s", code, stderr)
			}
			rm := strings.Contains(strings.Join(c.extra, " "), "--rm")
			for _, g := range groups {
				got := czRead(t, filepath.Join(dir, g.out))
				winner := ""
				for name, content := range g.inputs {
					if bytes.Equal(got, content) {
						winner = name
					}
				}
				if winner == "" {
					t.Fatalf("%s holds none of its inputs' contents: %.40q", g.out, got)
				}
				if !strings.Contains(stdout, g.out+"\n") {
					t.Errorf("stdout %q lacks %s", stdout, g.out)
				}
				for name := range g.inputs {
					if name == winner {
						if rm {
							czMissing(t, filepath.Join(dir, name))
						}
						continue
					}
					if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(b, raw[name]) {
						t.Errorf("%s (not published: %s came from %s) was removed or changed: %v", name, g.out, winner, err)
					}
					want := "pbatch: " + name + ": output " + g.out + " "
					if !strings.Contains(stderr, want) {
						t.Errorf("stderr lacks %q:\n%s", want, stderr)
					}
				}
				if c.extra[0] == "--force" && strings.Count(stderr, ": output "+g.out+" was written by this run") != len(g.inputs)-1 {
					t.Errorf("want %d lines saying %s was written by this run:\n%s", len(g.inputs)-1, g.out, stderr)
				}
			}
			czNoTemps(t, dir)
		})
	}
}

// TestCompressRmSwap: a file renamed over the original after it was read
// and before it is removed is kept, never deleted in its place (rule 19).
// strace delays the system calls of the removal to widen the window, and the
// test swaps the file inside it:
//   - unlinkat delayed: before, pbatch checked the name, then unlinked it, and
//     deleted the new file; now the name is renamed away first, and the new
//     file lands beside it under the original name;
//   - renameat2 delayed: the swap lands after pbatch checked the inode it read
//     and before it takes the name, so it takes the new file, sees another
//     inode, and puts it back (exit 1).
func TestCompressRmSwap(t *testing.T) {
	czNeed(t, "gzip", "zstd")
	for _, c := range []struct {
		name, delay string
		decompress  bool
		wantCode    int // -1: 0 or 1, depending on which side of the rename the swap lands
		wantMsg     string
	}{
		{"unlinkat", "unlinkat:delay_enter=1000000", false, -1, ""},
		{"unlinkat-decompress", "unlinkat:delay_enter=1000000", true, -1, ""},
		{"renameat2", "renameat2:delay_enter=1000000", false, 1, "file replaced after it was read: the new file is kept"},
		{"renameat2-decompress", "renameat2:delay_enter=1000000", true, 1, "file replaced after it was read: the new file is kept"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := fastTempDir(t)
			old, repl := czText(61, 64<<10), []byte("written over the original while pbatch was removing it\n")
			in, out, tool := "f", "f.zst", "zstd"
			args := []string{"compress", "-w", "1", "--rm", "--format", "zstd", in}
			if c.decompress {
				in, out = "g.gz", "g"
				czWrite(t, filepath.Join(dir, in), czGzipBytes(t, old), 0o644)
				args = []string{"decompress", "-w", "1", "--rm", in}
			} else {
				czWrite(t, filepath.Join(dir, in), old, 0o644)
			}
			cmd, _, stderr := czStraceStart(t, dir, []string{"trace=unlinkat,renameat2", "inject=" + c.delay}, args...)
			czWaitFile(t, filepath.Join(dir, out), cmd)
			// Into the delay of the call after the publishing rename: the
			// unlinkat, or the rename of the original to its private name.
			time.Sleep(300 * time.Millisecond)
			czSwap(t, filepath.Join(dir, in), repl)
			code := czExit(t, cmd.Wait(), stderr.String())
			if c.wantCode >= 0 && code != c.wantCode || code > 1 {
				t.Errorf("exit %d, want %d\n%s", code, c.wantCode, stderr)
			}
			if code == 1 && !strings.Contains(stderr.String(), "pbatch: "+in+": file replaced") {
				t.Errorf("exit 1 without the line saying the file was replaced:\n%s", stderr)
			}
			if c.wantMsg != "" && !strings.Contains(stderr.String(), c.wantMsg) {
				t.Errorf("stderr lacks %q:\n%s", c.wantMsg, stderr)
			}
			b, err := os.ReadFile(filepath.Join(dir, in))
			if err != nil || !bytes.Equal(b, repl) {
				t.Fatalf("the file renamed over %s was deleted or changed (%v, %.40q): data lost", in, err, b)
			}
			got := czRead(t, filepath.Join(dir, out))
			if !c.decompress {
				got = czDecode(t, tool, filepath.Join(dir, out))
			}
			if !bytes.Equal(got, old) {
				t.Errorf("%s does not hold the original's content", out)
			}
			czNoTemps(t, dir)
		})
	}
}

// czReadAs reports whether uid:gid (no supplementary groups) can read p.
func czReadAs(p string, uid, gid int) bool {
	return exec.Command("setpriv", "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(gid), "--clear-groups",
		"head", "-c", "1", p).Run() == nil
}

func czFacl(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command("getfacl", "-n", "-c", "-p", p).CombinedOutput()
	if err != nil {
		t.Fatalf("getfacl %s: %v\n%s", p, err, out)
	}
	return string(out)
}

// TestCompressACLBeforeMode: an input of mode 0640 whose ACL denies its
// owning group (group::---, mask::r--, user:daemon:r--) gives an output with
// the same ACL (getfacl), and its temporary file is never readable by that
// group: owner, xattrs and ACL are set while it is still 0600, the mode last
// (rule 23). The system calls are checked in order, and a probe reads the
// temporary file as the group while strace holds every fsetxattr for a while.
// Before, the mode came first: the temp file was 0640 without an ACL, open to
// the group, until the ACL followed.
func TestCompressACLBeforeMode(t *testing.T) {
	czNeedRoot(t, "chown to another user, setpriv")
	czNeed(t, "setfacl", "getfacl", "setpriv", "strace", "gzip")
	const uid, gid = 1234, 5678
	mk := func(t *testing.T) (dir, p string) {
		// Not tmpfs: user xattrs there need a recent kernel; ext4 has them.
		dir = t.TempDir()
		for d := dir; d != "/"; d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
			if d == os.TempDir() {
				break
			}
		}
		p = filepath.Join(dir, "secret")
		czWrite(t, p, czText(71, 200<<10), 0o640)
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.note", []byte("kept"), 0); err != nil {
			t.Skipf("user xattrs: %v", err)
		}
		if out, err := exec.Command("setfacl", "-m", "g::-,u:daemon:r,m::r", p).CombinedOutput(); err != nil {
			t.Skipf("setfacl: %v\n%s", err, out)
		}
		if czReadAs(p, uid+1, gid) {
			t.Fatal("control: the owning group can read the input")
		}
		return dir, p
	}

	t.Run("order", func(t *testing.T) {
		dir, p := mk(t)
		want := czFacl(t, p)
		lines := czStrace(t, dir, "compress", "-q", "-w", "1", "secret")
		fd := ""
		for _, l := range lines {
			if s := strings.SplitN(l, " = ", 2); strings.Contains(l, `"`+czTempPrefix) && strings.HasPrefix(l, "openat(") && len(s) == 2 {
				fd = s[1]
				break
			}
		}
		if fd == "" {
			t.Fatalf("no temporary file opened:\n%s", strings.Join(lines, "\n"))
		}
		chmod := czFind(lines, 0, `^fchmod\(`+fd+`, `)
		acl := czFind(lines, 0, `^fsetxattr\(`+fd+`, "system\.posix_acl_access"`)
		if chmod < 0 || acl < 0 {
			t.Fatalf("fchmod at %d, ACL set at %d:\n%s", chmod, acl, strings.Join(lines, "\n"))
		}
		for i, l := range lines {
			if i > chmod && strings.HasPrefix(l, "fsetxattr("+fd+",") {
				t.Errorf("xattr set after the mode: %s", l)
			}
		}
		if own := czFind(lines, 0, `^fchown\(`+fd+`, `); own < 0 || own > acl {
			t.Errorf("the owner (line %d) must be set before the ACL (line %d)", own, acl)
		}
		if got := czFacl(t, p+".gz"); got != want {
			t.Errorf("output ACL:\n%s\nwant the input's:\n%s", got, want)
		}
		if czReadAs(p+".gz", uid+1, gid) || !czReadAs(p+".gz", 1, 1) {
			t.Errorf("output access differs from the input's:\n%s", czFacl(t, p+".gz"))
		}
		// And back: decompress gives the same ACL.
		os.Remove(p)
		czMust(t, 0, dir, "decompress", "-q", "--rm", "secret.gz")
		if got := czFacl(t, p); got != want {
			t.Errorf("ACL after decompress:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("probe", func(t *testing.T) {
		dir, _ := mk(t)
		cmd, _, stderr := czStraceStart(t, dir, []string{"trace=fsetxattr,fchmod", "inject=fsetxattr:delay_enter=400000"},
			"compress", "-q", "-w", "1", "secret")
		var readable atomic.Value
		stop := make(chan struct{})
		done := make(chan struct{})
		probes := 0
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, tmp := range czTemps(t, dir) {
					probes++
					if czReadAs(tmp, uid+1, gid) {
						readable.Store(fmt.Sprintf("%s readable by gid %d:\n%s", filepath.Base(tmp), gid, czGetfacl(t, tmp)))
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		err := cmd.Wait()
		close(stop)
		<-done
		if code := czExit(t, err, stderr.String()); code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		if probes == 0 {
			t.Fatal("the temporary file was never probed")
		}
		if msg := readable.Load(); msg != nil {
			t.Errorf("the temporary file was more accessible than its input: %s", msg)
		}
	})
}

// czCapV2 is a version 2 security.capability value granting
// cap_net_bind_service, effective (what setcap cap_net_bind_service+ep writes).
func czCapV2() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001) // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	binary.LittleEndian.PutUint32(b[4:], 1<<10)      // permitted: CAP_NET_BIND_SERVICE
	return b
}

// TestCompressRmUncarriedXattrs: with --rm, a file carrying file
// capabilities or a trusted.* xattr, which the output does not get, is
// skipped with a note naming it, and kept; without --rm it is compressed, the
// output without them. The same for decompress. Before, --rm removed it and
// the capabilities were gone.
func TestCompressRmUncarriedXattrs(t *testing.T) {
	czNeedRoot(t, "security.capability and trusted.* need root")
	czNeed(t, "gzip")
	dir := t.TempDir()
	data := czText(73, 10<<10)
	set := map[string]struct {
		name string
		val  []byte
		note string
	}{
		"capped":  {"security.capability", czCapV2(), "skipped: carries file capabilities (security.capability)"},
		"trusted": {"trusted.origin", []byte("x"), `skipped: carries the extended attribute "trusted.origin"`},
	}
	for f, x := range set {
		p := filepath.Join(dir, f)
		czWrite(t, p, data, 0o755)
		if err := unix.Setxattr(p, x.name, x.val, 0); err != nil {
			t.Skipf("setxattr %s: %v", x.name, err)
		}
		gz := filepath.Join(dir, f+"-packed.gz")
		czWrite(t, gz, czGzipBytes(t, data), 0o644)
		if err := unix.Setxattr(gz, x.name, x.val, 0); err != nil {
			t.Fatal(err)
		}
	}
	czWrite(t, filepath.Join(dir, "plain"), data, 0o644)
	_, stderr := czMust(t, 0, dir, "compress", "--rm", "-w", "1", "capped", "trusted", "plain")
	_, stderr2 := czMust(t, 0, dir, "decompress", "--rm", "-w", "1", "capped-packed.gz", "trusted-packed.gz")
	for f, x := range set {
		for _, c := range []struct{ in, out, stderr string }{{f, f + ".gz", stderr}, {f + "-packed.gz", f + "-packed", stderr2}} {
			if want := "pbatch: " + c.in + ": " + x.note; !strings.Contains(c.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, c.stderr)
			}
			if got := czGetxattr(t, filepath.Join(dir, c.in), x.name); !bytes.Equal(got, x.val) {
				t.Errorf("%s lost %s", c.in, x.name)
			}
			czMissing(t, filepath.Join(dir, c.out))
		}
	}
	czMissing(t, filepath.Join(dir, "plain"))
	// Without --rm: compressed, nothing lost, the output without them.
	czMust(t, 0, dir, "compress", "-q", "capped", "trusted")
	for f, x := range set {
		if got := czGetxattr(t, filepath.Join(dir, f+".gz"), x.name); got != nil {
			t.Errorf("%s.gz carries %s", f, x.name)
		}
		if !bytes.Equal(czDecode(t, "gzip", filepath.Join(dir, f+".gz")), data) {
			t.Errorf("%s.gz does not decode to the input", f)
		}
	}
}

// TestCompressErrorsNamed: every failure names the operation and the object
// (rule: `pbatch: PATH: what went wrong`), and a temporary file is either
// removed or named. An append-only directory fails before any temporary file
// is written (it could be neither renamed nor removed); an unwritable one
// says the temporary file cannot be created there; an original that cannot
// be removed says so; a temporary file that cannot be removed is named.
// Before: "f: operation not permitted" with a full temporary file left, and
// "f: permission denied" for a readable f.
func TestCompressErrorsNamed(t *testing.T) {
	czNeedRoot(t, "chattr, setpriv")
	czNeed(t, "chattr", "setpriv", "gzip")
	data := czText(79, 50<<10)

	t.Run("append-only", func(t *testing.T) {
		root := t.TempDir() // ext4: tmpfs may lack chattr
		d := filepath.Join(root, "d")
		czWrite(t, filepath.Join(d, "f"), data, 0o644)
		if out, err := exec.Command("chattr", "+a", d).CombinedOutput(); err != nil {
			t.Skipf("chattr +a: %v\n%s", err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-a", d).Run() })
		for _, args := range [][]string{{"compress", "d/f"}, {"compress", "--rm", "d/f"}} {
			_, stderr := czMust(t, 1, root, args...)
			if want := "pbatch: d/f: cannot write in d: the directory is append-only"; !strings.Contains(stderr, want) {
				t.Errorf("%q: stderr:\n%s\nwant %q", args, stderr, want)
			}
			czNoTemps(t, root)
			if !bytes.Equal(czRead(t, filepath.Join(d, "f")), data) {
				t.Errorf("f changed")
			}
		}
	})

	t.Run("unwritable", func(t *testing.T) {
		nb := czNobodyBin(t)
		root := t.TempDir()
		for _, p := range []string{filepath.Dir(root), root} {
			os.Chmod(p, 0o755)
		}
		czWrite(t, filepath.Join(root, "d", "f"), data, 0o644)
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", nb, "compress", "d/f")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if code := czExit(t, err, string(out)); code != 1 {
			t.Errorf("exit %d, want 1\n%s", code, out)
		}
		if want := "pbatch: d/f: cannot create a temporary file in d: permission denied\n"; !strings.Contains(string(out), want) {
			t.Errorf("output:\n%s\nwant %q", out, want)
		}
	})

	t.Run("immutable-original", func(t *testing.T) {
		root := t.TempDir()
		p := filepath.Join(root, "f.gz")
		czWrite(t, p, czGzipBytes(t, data), 0o644)
		if out, err := exec.Command("chattr", "+i", p).CombinedOutput(); err != nil {
			t.Skipf("chattr +i: %v\n%s", err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-i", p).Run() })
		_, stderr := czMust(t, 1, root, "decompress", "--rm", "f.gz")
		if want := "pbatch: f.gz: cannot remove it (output kept): cannot rename it to ./" + czTempPrefix; !strings.Contains(stderr, want) ||
			!strings.Contains(stderr, "operation not permitted") {
			t.Errorf("stderr:\n%s\nwant %q… operation not permitted", stderr, want)
		}
		if !bytes.Equal(czRead(t, filepath.Join(root, "f")), data) {
			t.Errorf("f: not the decompressed content")
		}
		czNoTemps(t, root)
	})

	t.Run("temp-not-removable", func(t *testing.T) {
		dir := fastTempDir(t)
		czWrite(t, filepath.Join(dir, "f"), data, 0o644)
		cmd, _, stderr := czStraceStart(t, dir, []string{"trace=renameat2,unlinkat",
			"inject=renameat2:error=EIO", "inject=unlinkat:error=EPERM"}, "compress", "-w", "1", "f")
		if code := czExit(t, cmd.Wait(), stderr.String()); code != 1 {
			t.Errorf("exit %d, want 1\n%s", code, stderr)
		}
		tmps := czTemps(t, dir)
		if len(tmps) != 1 {
			t.Fatalf("temporary files %q, want the one that could not be removed", tmps)
		}
		name := filepath.Base(tmps[0])
		for _, want := range []string{
			"pbatch: f: cannot rename the temporary file ./" + name + " to f.gz: input/output error",
			"temporary file ./" + name + " left behind: cannot remove it: operation not permitted",
		} {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr:\n%s\nwant %q", stderr, want)
			}
		}
	})
}

// TestCompressRmSecondSignal: a second signal ends pbatch at once, but not
// between the rename of an original to its private name and the unlink or
// the rename back: a file renamed over the original must not be left under a
// temporary name (which later runs skip). strace holds every renameat2 for a
// second; the test swaps the original while pbatch takes it, and signals
// twice while it puts the new file back.
func TestCompressRmSecondSignal(t *testing.T) {
	czNeed(t, "zstd")
	dir := fastTempDir(t)
	old, repl := czText(83, 64<<10), []byte("renamed over the original\n")
	czWrite(t, filepath.Join(dir, "f"), old, 0o644)
	cmd, _, stderr := czStraceStart(t, dir, []string{"trace=renameat2", "inject=renameat2:delay_enter=1000000"},
		"compress", "-w", "1", "--rm", "--format", "zstd", "f")
	czWaitFile(t, filepath.Join(dir, "f.zst"), cmd) // the publishing rename is done
	time.Sleep(300 * time.Millisecond)              // into the delay of the rename to the private name
	czSwap(t, filepath.Join(dir, "f"), repl)
	time.Sleep(1200 * time.Millisecond) // into the delay of the rename back
	// strace passes signals on to its tracee.
	pid := cmd.Process.Pid
	if out, err := exec.Command("pgrep", "-P", strconv.Itoa(pid)).Output(); err == nil {
		if p, err := strconv.Atoi(strings.Fields(string(out))[0]); err == nil {
			pid = p
		}
	}
	unix.Kill(pid, unix.SIGTERM)
	time.Sleep(50 * time.Millisecond)
	unix.Kill(pid, unix.SIGTERM)
	cmd.Wait()
	if strings.Contains(stderr.String(), "ptrace") {
		t.Skipf("strace cannot trace here: %s", stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil || !bytes.Equal(b, repl) {
		t.Errorf("the file renamed over f is not back under its name (%v, %.30q); temporary files: %q\n%s",
			err, b, czTemps(t, dir), stderr)
	}
	czNoTemps(t, dir)
}
