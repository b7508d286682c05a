package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInputWaitEndsOnSignal: a manifest FIFO nobody opens for writing, and
// stdin nobody writes to, block pbatch only until the first SIGTERM (SAFETY
// 26): it dies by that signal (exit 143 in a shell) within a few seconds. A
// blocking open(2) of a FIFO ignored it. So does a wait for a lock held by
// another run (--wait-lock).
func TestInputWaitEndsOnSignal(t *testing.T) {
	bin := pbatchBin(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, "lock")
	lf, err := os.OpenFile(lock, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600) // pbatch refuses a lock others can read
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		stdin bool // stdin is a pipe whose writer stays open, silent
	}{
		{"check FIFO", []string{"check", fifo}, false},
		{"audit FIFO", []string{"audit", "--manifest", fifo, "."}, false},
		{"check stdin", []string{"check", "-"}, true},
		{"audit stdin", []string{"audit", "--manifest", "-", "."}, true},
		{"hash stdin list", []string{"hash", "-"}, true},
		{"hash --wait-lock", []string{"hash", "--lock", lock, "--wait-lock", "1h", "a"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Dir = dir
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if tc.stdin {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				defer r.Close()
				cmd.Stdin = r
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond) // let it reach the wait
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still running 5 s after one SIGTERM\nstderr: %s", stderr.String())
			}
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
				t.Errorf("got %v, want death by SIGTERM\nstderr: %s", cmd.ProcessState, stderr.String())
			}
			if strings.Contains(stderr.String(), "no properly formatted") || strings.Contains(stderr.String(), "timeout") {
				t.Errorf("an interrupted read was reported as a manifest problem:\n%s", stderr.String())
			}
		})
	}
}

// TestInputFIFOManifest: a FIFO manifest whose writer comes later is read
// whole, and so is a pipe named as /dev/fd/N (bash's <(…)), even when its
// writer is already gone or wrote nothing.
func TestInputFIFOManifest(t *testing.T) {
	bin := pbatchBin(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const sums = "87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7  a\n"
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, cmd *exec.Cmd, wantCode int, wantOut string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("hangs\nstderr: %s", stderr.String())
		}
		if got := cmd.ProcessState.ExitCode(); got != wantCode || stdout.String() != wantOut {
			t.Errorf("exit %d, stdout %q; want exit %d, stdout %q\nstderr: %s", got, stdout.String(), wantCode, wantOut, stderr.String())
		}
	}
	for _, args := range [][]string{{"check", fifo}, {"audit", "--all", "--manifest", fifo, "a"}} {
		t.Run(args[0]+" writer later", func(t *testing.T) {
			cmd := exec.Command(bin, args...)
			go func() {
				time.Sleep(300 * time.Millisecond)
				f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
				if err != nil {
					return
				}
				f.WriteString(sums[:10]) // in two parts, a pause between
				time.Sleep(100 * time.Millisecond)
				f.WriteString(sums[10:])
				f.Close()
			}()
			want := "a: OK\n"
			if args[0] == "audit" {
				want = "ok        a\n"
			}
			run(t, cmd, 0, want)
		})
	}
	pipe := func(t *testing.T, content string) *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.WriteString(content)
		w.Close()
		t.Cleanup(func() { r.Close() })
		return r
	}
	t.Run("check /dev/fd/3", func(t *testing.T) {
		cmd := exec.Command(bin, "check", "/dev/fd/3")
		cmd.ExtraFiles = []*os.File{pipe(t, sums)}
		run(t, cmd, 0, "a: OK\n")
	})
	t.Run("check /dev/fd/3, empty", func(t *testing.T) {
		cmd := exec.Command(bin, "check", "/dev/fd/3")
		cmd.ExtraFiles = []*os.File{pipe(t, "")}
		run(t, cmd, 1, "")
	})
	t.Run("check - from a pipe", func(t *testing.T) {
		cmd := exec.Command(bin, "check", "-")
		cmd.Stdin = pipe(t, sums)
		run(t, cmd, 0, "a: OK\n")
	})
}
