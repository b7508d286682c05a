package main

// End-to-end tests of chmod and chown that a script cannot express: an
// immutable file (chattr +i must be undone even when the test fails), the
// hard-link rule (it depends on fs.protected_hardlinks), and a tree whose
// entries are swapped for symlinks while the binary runs.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runBin runs the built pbatch and returns its stdout, stderr and exit code;
// it fails the test if pbatch could not run or was killed by a signal.
func runBin(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		code = ee.ExitCode()
	default:
		t.Fatalf("pbatch %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), errb.String(), code
}

func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestChmodImmutable: an immutable file or directory (chattr +i) fails with
// EPERM, reported for that entry; the rest of the tree is still changed and
// the exit status is 1.
func TestChmodImmutable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chattr +i needs root")
	}
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("chattr not installed (e2fsprogs)")
	}
	bin := pbatchBin(t)
	root := t.TempDir() // not tmpfs: tmpfs has no immutable attribute before Linux 6.0
	d := filepath.Join(root, "d")
	writeTree(t, d, map[string]string{"a": "a\n", "imm": "i\n", "sub/b": "b\n", "immdir/c": "c\n"})
	for _, p := range []string{"a", "imm", "sub/b", "immdir/c"} {
		if err := os.Chmod(filepath.Join(d, p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"", "sub", "immdir"} {
		if err := os.Chmod(filepath.Join(d, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	imm := []string{filepath.Join(d, "imm"), filepath.Join(d, "immdir")}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if out, err := exec.Command("chattr", append([]string{"-i"}, imm...)...).CombinedOutput(); err != nil {
			t.Errorf("chattr -i: %v\n%s", err, out)
		}
	})
	if out, err := exec.Command("chattr", append([]string{"+i"}, imm...)...).CombinedOutput(); err != nil {
		t.Skipf("chattr +i is not supported on %s: %v %s", root, err, bytes.TrimSpace(out))
	}
	// Root itself cannot chmod them: the check below depends on it.
	if err := os.Chmod(imm[0], 0o600); !errors.Is(err, unix.EPERM) {
		t.Fatalf("chmod of an immutable file as root: %v, want EPERM", err)
	}

	t.Run("chmod", func(t *testing.T) {
		stdout, stderr, code := runBin(t, bin, "chmod", "-k", "--files", "0600", "--dirs", "0700", d)
		if code != 1 {
			t.Errorf("exit code %d, want 1\nstderr:\n%s", code, stderr)
		}
		for _, p := range imm {
			if want := "pbatch: " + p + ": operation not permitted\n"; !strings.Contains(stderr, want) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", stderr, want)
			}
			if strings.Contains(stdout, "  "+p+"\n") {
				t.Errorf("stdout reports %s as changed:\n%s", p, stdout)
			}
		}
		if !strings.HasSuffix(stderr, "; 2 failed\n") {
			t.Errorf("summary: %q, want it to end in \"; 2 failed\"", stderr)
		}
		// The rest of the tree, the immutable directory's contents included.
		for p, want := range map[string]os.FileMode{
			"": 0o700, "a": 0o600, "sub": 0o700, "sub/b": 0o600, "immdir/c": 0o600,
			"imm": 0o644, "immdir": 0o755,
		} {
			if got := modeOf(t, filepath.Join(d, p)); got != want {
				t.Errorf("%s: mode %04o, want %04o", filepath.Join(d, p), got, want)
			}
		}
		for _, line := range []string{
			"mode 0755 -> 0700  " + d + "\n",
			"mode 0644 -> 0600  " + d + "/a\n",
			"mode 0644 -> 0600  " + d + "/immdir/c\n",
			"mode 0644 -> 0600  " + d + "/sub/b\n",
		} {
			if !strings.Contains(stdout, line) {
				t.Errorf("stdout:\n%s\nwant the line %q", stdout, line)
			}
		}
	})

	t.Run("dry-run", func(t *testing.T) {
		_, stderr, code := runBin(t, bin, "chmod", "-n", "0640", d)
		if code != 0 || strings.Contains(stderr, "not permitted") {
			t.Errorf("chmod -n: exit code %d, want 0 and no failure (a dry run writes nothing)\nstderr:\n%s", code, stderr)
		}
	})

	t.Run("chown", func(t *testing.T) {
		stdout, stderr, code := runBin(t, bin, "chown", "-k", "1:1", d)
		if code != 1 {
			t.Errorf("exit code %d, want 1\nstderr:\n%s", code, stderr)
		}
		for _, p := range imm {
			if want := "pbatch: " + p + ": operation not permitted\n"; !strings.Contains(stderr, want) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", stderr, want)
			}
		}
		if want := "owner 0:0 -> 1:1  " + d + "/sub/b\n"; !strings.Contains(stdout, want) {
			t.Errorf("stdout:\n%s\nwant the line %q", stdout, want)
		}
		var st unix.Stat_t
		if err := unix.Lstat(imm[0], &st); err != nil || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: owner %d:%d (%v), want 0:0", imm[0], st.Uid, st.Gid, err)
		}
	})
}

// TestChmodHardlinks: a regular file with several links may be a link planted
// to a file elsewhere. It is skipped with a note unless --allow-hardlinks, or
// unless the kernel's fs.protected_hardlinks=1 already stops users from linking
// files they do not own.
func TestChmodHardlinks(t *testing.T) {
	bin := pbatchBin(t)
	b, err := os.ReadFile("/proc/sys/fs/protected_hardlinks")
	if err != nil {
		t.Skipf("cannot read fs.protected_hardlinks: %v", err)
	}
	protected := strings.TrimSpace(string(b)) == "1"
	t.Logf("fs.protected_hardlinks=%s", bytes.TrimSpace(b))
	root := fastTempDir(t)
	d := filepath.Join(root, "d")
	writeTree(t, d, map[string]string{"f": "f\n", "single": "s\n"})
	elsewhere := filepath.Join(root, "elsewhere")
	if err := os.Link(filepath.Join(d, "f"), elsewhere); err != nil {
		t.Fatal(err)
	}
	reset := func() {
		for _, p := range []string{"f", "single"} {
			if err := os.Chmod(filepath.Join(d, p), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	const note = "skipped: regular file with more than one hard link (use --allow-hardlinks)"

	t.Run("default", func(t *testing.T) {
		reset()
		stdout, stderr, code := runBin(t, bin, "chmod", "-k", "--files", "0600", d)
		if code != 0 {
			t.Errorf("exit code %d, want 0 (a skip is not a failure)\nstderr:\n%s", code, stderr)
		}
		if !strings.Contains(stdout, "mode 0644 -> 0600  "+d+"/single\n") {
			t.Errorf("stdout:\n%s\nwant the single-link file changed", stdout)
		}
		changed := strings.Contains(stdout, "mode 0644 -> 0600  "+d+"/f\n")
		if protected {
			if !changed || strings.Contains(stderr, "hard link") || modeOf(t, elsewhere) != 0o600 {
				t.Errorf("protected_hardlinks=1: want the hard-linked file changed without a note\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
			}
			return
		}
		if want := "pbatch: " + d + "/f: " + note + "\n"; changed || !strings.Contains(stderr, want) {
			t.Errorf("protected_hardlinks=0: want %q and no change\nstdout:\n%s\nstderr:\n%s", want, stdout, stderr)
		}
		if got := modeOf(t, elsewhere); got != 0o644 {
			t.Errorf("the other link's file: mode %04o, want 0644", got)
		}
		if !strings.Contains(stderr, "; 1 skipped\n") {
			t.Errorf("summary %q: want 1 skipped", stderr)
		}
	})

	t.Run("allow", func(t *testing.T) {
		reset()
		stdout, stderr, code := runBin(t, bin, "chmod", "-k", "--allow-hardlinks", "--files", "0600", d)
		if code != 0 || !strings.Contains(stdout, "mode 0644 -> 0600  "+d+"/f\n") || strings.Contains(stderr, "hard link") {
			t.Errorf("--allow-hardlinks: exit code %d, want 0 and the file changed\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	})

	t.Run("chown", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("chown needs root")
		}
		_, stderr, code := runBin(t, bin, "chown", "-k", "1:1", d)
		var st unix.Stat_t
		if err := unix.Stat(elsewhere, &st); err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			t.Errorf("exit code %d, want 0\nstderr:\n%s", code, stderr)
		}
		if protected != (st.Uid == 1) || protected == strings.Contains(stderr, note) {
			t.Errorf("protected_hardlinks=%v: hard-linked file now owned by %d:%d\nstderr:\n%s", protected, st.Uid, st.Gid, stderr)
		}
	})
}

// TestChmodRaceWithBinary swaps tree/x between a regular file and a symlink to
// a victim file outside the tree, and tree/d between a directory and a symlink
// to a victim directory, in a tight loop of atomic exchanges, while pbatch
// chmod and chown run over the tree again and again. Whatever pbatch reports,
// the victims must never change: every change goes through a descriptor of an
// inode found beneath the tree without following symlinks.
func TestChmodRaceWithBinary(t *testing.T) {
	bin := pbatchBin(t)
	cmds := [][]string{{bin, "chmod", "--files", "0777", "--dirs", "0777", "-q"}}
	if os.Geteuid() == 0 {
		cmds = append(cmds, []string{bin, "chown", "12345:12345", "-q"})
	} else {
		t.Log("not root: chmod only")
	}
	raceVictims(t, 4*time.Second, cmds)
}

// raceVictims runs each command with the tree appended, in turn, until d has
// passed, while the tree's x and d are swapped for symlinks out of the tree.
func raceVictims(t *testing.T, d time.Duration, cmds [][]string) {
	root := fastTempDir(t)
	tree := filepath.Join(root, "tree")
	stage := filepath.Join(root, "stage")
	victim := filepath.Join(root, "victim")
	vfile := filepath.Join(victim, "file")
	vdir := filepath.Join(victim, "dir")
	vinner := filepath.Join(vdir, "inner")
	files := map[string]string{"tree/x": "x\n", "tree/d/in": "in\n", "victim/file": "v\n", "victim/dir/inner": "vi\n"}
	for i := range 40 { // more to walk: more time for a swap between walk and change
		files[fmt.Sprintf("tree/s%02d/f", i)] = "s\n"
	}
	writeTree(t, root, files)
	if err := os.Mkdir(stage, 0o755); err != nil {
		t.Fatal(err)
	}
	// stage holds the other halves of the exchanges: symlinks out of the tree.
	xAlt, dAlt := filepath.Join(stage, "x"), filepath.Join(stage, "d")
	if err := os.Symlink(vfile, xAlt); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(vdir, dAlt); err != nil {
		t.Fatal(err)
	}
	for p, m := range map[string]os.FileMode{vfile: 0o600, vinner: 0o600, vdir: 0o700, victim: 0o700} {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	victims := []string{vfile, vdir, vinner}
	before := map[string]unix.Stat_t{}
	for _, p := range victims {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		before[p] = st
	}
	// Descriptors of the swapped file and directory: they put the inodes back
	// to 0600/0700 and 0:0 after each run, so that every run has to write
	// them, wherever their names are at that moment.
	xf, err := os.Open(filepath.Join(tree, "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer xf.Close()
	df, err := os.Open(filepath.Join(tree, "d"))
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	reset := func() {
		for _, c := range []struct {
			f *os.File
			m os.FileMode
		}{{xf, 0o600}, {df, 0o700}} {
			if err := c.f.Chmod(c.m); err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() == 0 {
				if err := c.f.Chown(0, 0); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	reset()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var swaps int
	var swapErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, p := range [][2]string{{filepath.Join(tree, "x"), xAlt}, {filepath.Join(tree, "d"), dAlt}} {
				if err := unix.Renameat2(unix.AT_FDCWD, p[0], unix.AT_FDCWD, p[1], unix.RENAME_EXCHANGE); err != nil {
					swapErr = fmt.Errorf("renameat2(%s, %s, RENAME_EXCHANGE): %w", p[0], p[1], err)
					return
				}
			}
			swaps++
		}
	})
	stopSwapping := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopSwapping()

	runs, wrote := 0, 0
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, c := range cmds {
			cmd := exec.Command(c[0], append(c[1:], tree)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			runs++
			var ee *exec.ExitError
			if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
				// 1: entries that vanished or turned into symlinks mid-run may be
				// reported as failures; anything else is not expected.
				stopSwapping()
				t.Fatalf("run %d, %s: %v\nstderr:\n%s", runs, strings.Join(c[1:], " "), err, stderr.String())
			}
			var xs, ds unix.Stat_t
			if unix.Fstat(int(xf.Fd()), &xs) == nil && unix.Fstat(int(df.Fd()), &ds) == nil &&
				(xs.Mode&0o777 == 0o777 || xs.Uid == 12345 || ds.Mode&0o777 == 0o777 || ds.Uid == 12345) {
				wrote++
			}
			reset()
			for _, p := range victims {
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					t.Fatal(err)
				}
				b := before[p]
				if st.Mode != b.Mode || st.Uid != b.Uid || st.Gid != b.Gid || st.Ctim != b.Ctim {
					stopSwapping()
					t.Fatalf("after run %d (%s): victim %s changed: mode %o -> %o, owner %d:%d -> %d:%d, ctime %v -> %v",
						runs, strings.Join(c[1:], " "), p, b.Mode, st.Mode, b.Uid, b.Gid, st.Uid, st.Gid,
						time.Unix(b.Ctim.Unix()), time.Unix(st.Ctim.Unix()))
				}
			}
		}
	}
	stopSwapping()
	if swapErr != nil {
		t.Fatal(swapErr)
	}
	t.Logf("%d runs, %d swaps; the swapped file or directory was written in %d runs", runs, swaps, wrote)
	if wrote == 0 {
		t.Errorf("no run changed the swapped entries: the race was never exercised")
	}
}
