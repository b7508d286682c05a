package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSelectionSwapE2E: an unprivileged user swaps a fresh file of someone
// else's (which --older-than 1d excludes) into the name of an old file after
// the walk selected it and before the task opens it: strace holds each
// openat2, and the swap (renameat2 RENAME_EXCHANGE) lands while the worker's
// open of old (chown, chmod) or of its directory (compress) is held. The
// task judges the selection again by the fstat of what it opened and leaves
// the victim alone, with a note. Before, chown gave the victim to 65534,
// chmod made it 0644, and compress --rm replaced it by old.gz.
func TestSelectionSwapE2E(t *testing.T) {
	czNeedRoot(t, "the victim belongs to another user")
	czNeed(t, "strace", "gzip")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"chown", []string{"chown", "-w", "1", "--older-than", "1d", "65534:65534"}},
		{"chmod relative", []string{"chmod", "-w", "1", "--older-than", "1d", "--files", "go+r"}},
		{"chmod absolute", []string{"chmod", "-w", "1", "--older-than", "1d", "--files", "0644"}},
		{"compress --rm", []string{"compress", "-w", "1", "--rm", "--older-than", "1d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.Chmod(dir, 0o777)
			old, victim := filepath.Join(dir, "old"), filepath.Join(dir, "secret")
			czWrite(t, old, []byte("old\n"), 0o600)
			past := time.Now().Add(-72 * time.Hour)
			os.Chtimes(old, past, past)
			czWrite(t, victim, []byte("TOPSECRET\n"), 0o600)
			os.Chown(victim, 1000, 1000)
			var vst unix.Stat_t
			unix.Lstat(victim, &vst)

			cmd, _, stderr := czStraceStart(t, dir, []string{"trace=openat2", "inject=openat2:delay_enter=1000000"},
				append(tc.args, ".")...)
			if !waitWorkerOpenat2(cmd.Process.Pid, 30*time.Second) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the worker never opened beneath the directory (openat2 relative to it)\n%s", stderr)
			}
			if err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, victim, unix.RENAME_EXCHANGE); err != nil {
				t.Fatal(err)
			}
			code := czExit(t, cmd.Wait(), stderr.String())
			if code != 0 {
				t.Errorf("exit %d, want 0 (a note, not a failure)\n%s", code, stderr)
			}
			if !strings.Contains(stderr.String(), "pbatch: ./old: skipped: changed since it was selected: left alone") {
				t.Errorf("no note that old changed since it was selected:\n%s", stderr)
			}
			var st unix.Stat_t
			if err := unix.Lstat(old, &st); err != nil {
				t.Fatalf("the victim, swapped into old's name, is gone: %v\n%s", err, stderr)
			}
			if st.Ino != vst.Ino || st.Uid != 1000 || st.Gid != 1000 || st.Mode != vst.Mode {
				t.Errorf("victim changed: owner %d:%d (want 1000:1000), mode %o (want %o)\n%s", st.Uid, st.Gid, st.Mode, vst.Mode, stderr)
			}
			if b, err := os.ReadFile(old); err != nil || !bytes.Equal(b, []byte("TOPSECRET\n")) {
				t.Errorf("victim's content: %q, %v", b, err)
			}
			if _, err := os.Lstat(old + ".gz"); err == nil {
				t.Errorf("the victim was compressed")
			}
		})
	}
}

// waitWorkerOpenat2 waits until a thread of strace's child (pbatch) is held
// in an openat2 relative to a directory descriptor (not AT_FDCWD, as the
// start-up probe is): a worker opening what the walk listed.
func waitWorkerOpenat2(stracePid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	started := false
	for time.Now().Before(deadline) {
		kids, _ := os.ReadFile("/proc/" + strconv.Itoa(stracePid) + "/task/" + strconv.Itoa(stracePid) + "/children")
		pids := strings.Fields(string(kids))
		if started && len(pids) == 0 {
			return false // pbatch exited without such an open
		}
		started = started || len(pids) > 0
		for _, pid := range pids {
			tasks, _ := filepath.Glob("/proc/" + pid + "/task/*/syscall")
			for _, p := range tasks {
				b, _ := os.ReadFile(p)
				f := strings.Fields(string(b))
				if len(f) > 1 && f[0] == strconv.Itoa(unix.SYS_OPENAT2) && f[1] != "0xffffffffffffff9c" {
					return true
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}
