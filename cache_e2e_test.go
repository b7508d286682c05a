package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"pbatch/cache"
)

// mountExt4OneSecond mounts a new ext4 with 128-byte inodes (timestamps in
// whole seconds) on a loop device and returns its directory, or skips.
func mountExt4OneSecond(t *testing.T) string {
	t.Helper()
	czNeedRoot(t, "mounts a loop device")
	czNeed(t, "mkfs.ext4", "mount", "umount")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-I", "128", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4 -I 128: %v %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -o loop: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	return mnt
}

// A file rewritten with the same size within the second its digest was
// cached keeps mtime and ctime on a file system with 1-second timestamps: the
// cache must not trust that entry (it used to, forever).
func TestCacheRacyOneSecondTimestamps(t *testing.T) {
	mnt := mountExt4OneSecond(t)
	tree := filepath.Join(mnt, "t")
	f := filepath.Join(tree, "f")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := func() unix.Stat_t {
		var st unix.Stat_t
		if err := unix.Stat(f, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	for try := 0; ; try++ {
		if try == 5 {
			t.Skip("could not write, hash and rewrite within one second")
		}
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
		czWrite(t, f, []byte("old content\n"), 0o644)
		before := stat()
		if before.Mtim.Nsec != 0 {
			t.Fatalf("mtime %v on ext4 -I 128: not whole seconds", before.Mtim)
		}
		sums, _ := czMust(t, 0, mnt, "hash", "-q", "--cache=c.db", "t")
		czWrite(t, f, []byte("new content\n"), 0o644)
		if after := stat(); after.Mtim != before.Mtim || after.Ctim != before.Ctim || after.Size != before.Size {
			continue // crossed a second: not the case under test
		}
		czWrite(t, filepath.Join(mnt, "sums"), []byte(sums), 0o644)
		out, _ := czMust(t, 1, mnt, "check", "--cache=c.db", "sums")
		if !strings.Contains(out, "t/f: FAILED") {
			t.Errorf("check --cache after a same-second rewrite:\n%s\nwant t/f: FAILED", out)
		}
		break
	}
	// Once the file is older than the margin, its new digest is recorded and
	// trusted like any other.
	time.Sleep(racyWait)
	sums, _ := czMust(t, 0, mnt, "hash", "-q", "--cache=c.db", "t")
	czWrite(t, filepath.Join(mnt, "sums"), []byte(sums), 0o644)
	czMust(t, 0, mnt, "check", "-q", "--cache=c.db", "sums")
}

// racyWait outlasts the cache's margin for racy timestamps.
const racyWait = 3500 * time.Millisecond

// SAFETY 26: --wait-lock ends on the first signal, as does the cache's short
// wait; pbatch dies by that signal.
func TestLockWaitEndsOnSignal(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) not installed")
	}
	dir := t.TempDir()
	lock := filepath.Join(dir, "l.lock")
	czWrite(t, filepath.Join(dir, "d", "f"), []byte("f\n"), 0o644)
	czWrite(t, lock, nil, 0o600)
	holder := start(t, "flock", lock, "sleep", "30")
	deadline := time.Now().Add(5 * time.Second)
	for { // until the holder has the lock
		fd, err := unix.Open(lock, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		unix.Close(fd)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("flock(1) did not take the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := start(t, pbatchBin(t), "list", "--lock", lock, "--wait-lock", "60s", filepath.Join(dir, "d"))
	time.Sleep(300 * time.Millisecond)
	if r.exited() {
		t.Fatalf("pbatch did not wait for the lock: %s", r.stderr)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t, 2*time.Second)
	if ws := r.waitStatus(t); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("after SIGTERM while waiting for the lock: %s, want killed by SIGTERM; stderr:\n%s", describe(ws), r.stderr)
	}
	if s := r.stdout.String(); s != "" {
		t.Errorf("stdout %q, want nothing: nothing may run without the lock", s)
	}
	_ = holder
}

// A cache truncated while bbolt opens it (after pbatch checked it, before
// bbolt reads its pages) must not crash pbatch: with no freelist in the file,
// bbolt rebuilt it in a goroutine of its own, where the fault was SIGBUS and
// exit 2. strace holds bbolt's mmap of the file for 1.5 s, the truncation
// comes in the middle.
func TestCacheTruncatedDuringOpen(t *testing.T) {
	czNeed(t, "strace")
	dir := t.TempDir()
	tree := filepath.Join(dir, "t")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		czWrite(t, filepath.Join(tree, "f"+strconv.Itoa(i)), []byte(strconv.Itoa(i)), 0o644)
	}
	db := filepath.Join(dir, "c.db")
	czMust(t, 0, dir, "hash", "-q", "--cache="+db, "t")
	cmd := exec.Command("strace", "-f", "-o", "/dev/null", "-P", db, "-e", "trace=mmap",
		"-e", "inject=mmap:delay_exit=1500000", pbatchBin(t), "hash", "-q", "--cache="+db, "t")
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	if err := os.Truncate(db, 8192); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if strings.Contains(stderr.String(), "fatal error") || code == 2 || code < 0 {
		t.Fatalf("exit %d (%v), stderr:\n%.2000s", code, err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "damaged") {
		t.Errorf("exit %d, stderr %q: want the cache reported damaged", code, stderr.String())
	}
}

// Package cache quotes the names in its messages itself (cache.QuoteName):
// it must quote as the rest of pbatch does.
func TestCacheQuoteNameAgrees(t *testing.T) {
	for _, s := range []string{"plain", "/tmp/a b", "a\nb", "\xff", "tab\there", "q\"uote", "zero\u200bwidth", "é", "\x1b[31m"} {
		if got, want := cache.QuoteName(s), quoteName(s); got != want {
			t.Errorf("%q: cache.QuoteName %s, quoteName %s", s, got, want)
		}
	}
}
