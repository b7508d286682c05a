package main

// Go tests of the built binary for what a script cannot express: concurrent
// output of many jobs, process trees left by jobs, signals sent while pbatch
// runs, and the progress display on a real terminal (tmux).

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// running is a started pbatch (or a wrapper that execs it).
type running struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{} // closed when Wait returned
	err            error         // Wait's result, once done is closed
}

// start runs argv in its own process group, so that the test's terminal or
// shell never delivers signals to it and cleanup can kill all of it. Signals
// the test process ignores (nohup, a background job) are reset to their
// default for the child first.
func start(t *testing.T, argv ...string) *running {
	t.Helper()
	defaultSignals(t)
	r := &running{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(argv[0], argv[1:]...)
	r.cmd.Stdout, r.cmd.Stderr = r.stdout, r.stderr
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.done
		}
	})
	return r
}

// wait waits at most d for the process to end.
func (r *running) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(d):
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
		t.Fatalf("%s still running after %s; stderr:\n%s", strings.Join(r.cmd.Args, " "), d, r.stderr)
	}
}

func (r *running) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// waitStatus is how the process ended.
func (r *running) waitStatus(t *testing.T) syscall.WaitStatus {
	t.Helper()
	<-r.done
	ws, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		t.Fatalf("no wait status: %v", r.err)
	}
	return ws
}

func describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

var defaultSignalsMu sync.Mutex

// defaultSignals makes INT, HUP and TERM start with their default action in
// children: a signal ignored by the test process would stay ignored across
// exec, while a caught one is reset to the default.
func defaultSignals(t *testing.T) {
	defaultSignalsMu.Lock()
	defer defaultSignalsMu.Unlock()
	for _, s := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM} {
		if signal.Ignored(s) {
			c := make(chan os.Signal, 1)
			signal.Notify(c, s)
			t.Cleanup(func() { signal.Stop(c) })
		}
	}
}

// signalMask reads a mask (SigCgt, SigIgn) of /proc/PID/status.
func signalMask(pid int, field string) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func sigBit(s syscall.Signal) uint64 { return 1 << (uint(s) - 1) }

// waitCaught waits until pid has handlers for sigs, so that a signal sent next
// is handled by pbatch and not by the default action of a process still starting.
func waitCaught(t *testing.T, pid int, sigs ...syscall.Signal) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := signalMask(pid, "SigCgt")
		if err != nil {
			t.Fatal(err)
		}
		all := true
		for _, s := range sigs {
			all = all && m&sigBit(s) != 0
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d does not catch %v (SigCgt %x)", pid, sigs, m)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var markerSeq atomic.Int64

// newMarker returns a sleep duration no other process on the machine uses, so
// that the processes a test started can be found by their command line.
func newMarker(whole int) string {
	return fmt.Sprintf("%d.%d%03d", whole, os.Getpid(), markerSeq.Add(1))
}

// sleepers lists the pids of live `sleep MARKER` processes.
func sleepers(marker string) []int {
	want := "sleep\x00" + marker + "\x00"
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.HasSuffix(string(b), want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killSleepersAtCleanup kills whatever a failed test left behind.
func killSleepersAtCleanup(t *testing.T, marker string) {
	t.Cleanup(func() {
		for _, pid := range sleepers(marker) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// waitSleepers waits until some `sleep MARKER` runs: the jobs have started.
func waitSleepers(t *testing.T, marker string, r *running) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(sleepers(marker)) == 0 {
		if r.exited() || time.Now().After(deadline) {
			t.Fatalf("no job started; stderr:\n%s", r.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkNoSleepers fails if `sleep MARKER` processes outlive pbatch. Killed
// processes may take a moment to be reaped; a zombie has no command line.
func checkNoSleepers(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		pids := sleepers(marker)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("pbatch ended but %d job processes (sleep %s) still run: pids %v", len(pids), marker, pids)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func makeFiles(t *testing.T, dir string, n int, content func(i int) string) {
	t.Helper()
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("f%03d", i)] = content(i)
	}
	writeTree(t, dir, files)
}

// TestExecGroupedOutputNeverInterleaves: with 8 jobs at once, each writing its
// output in pieces with pauses in between (some more than a pipe buffer), every
// job's stdout and stderr reach pbatch's as one contiguous block in order;
// with --line-buffer the lines of jobs may alternate but each is whole.
func TestExecGroupedOutputNeverInterleaves(t *testing.T) {
	bin := pbatchBin(t)
	const files, lines = 200, 50
	dir := fastTempDir(t)
	makeFiles(t, dir, files, func(i int) string {
		var b strings.Builder
		pad := ""
		if i%25 == 0 {
			pad = " " + strings.Repeat("x", 4000) // 200 kB in all: more than a pipe holds
		}
		for n := range lines {
			fmt.Fprintf(&b, "f%03d line %d%s\n", i, n, pad)
		}
		return b.String()
	})

	t.Run("grouped", func(t *testing.T) {
		// Five pieces of ten lines, each followed by a line on stderr and a pause.
		job := `i=0; while [ $i -lt 5 ]; do sed -n "$((i*10+1)),$((i*10+10))p" "$1"; echo "${1##*/} err $i" >&2; sleep 0.005; i=$((i+1)); done`
		r := start(t, bin, "exec", "-w", "8", dir, "--", "sh", "-c", job, "sh")
		r.wait(t, 3*time.Minute)
		if ws := r.waitStatus(t); ws.Signaled() || ws.ExitStatus() != 0 {
			t.Fatalf("pbatch exec: %s; stderr:\n%s", describe(ws), r.stderr)
		}
		checkBlocks(t, "stdout", r.stdout.String(), files, lines)
		var errLines []string
		for _, l := range strings.Split(strings.TrimSuffix(r.stderr.String(), "\n"), "\n") {
			if !strings.HasPrefix(l, "pbatch: ") {
				errLines = append(errLines, strings.Replace(l, " err ", " line ", 1))
			}
		}
		checkBlocks(t, "stderr", strings.Join(errLines, "\n")+"\n", files, 5)
	})

	t.Run("line-buffer", func(t *testing.T) {
		// Each line in two pieces with a pause between them.
		job := `i=0; while [ $i -lt 10 ]; do printf "%s part1 " "${1##*/}"; sleep 0.002; printf "part2 %d\n" $i; i=$((i+1)); done`
		r := start(t, bin, "exec", "--line-buffer", "-w", "8", dir, "--", "sh", "-c", job, "sh")
		r.wait(t, 3*time.Minute)
		if ws := r.waitStatus(t); ws.Signaled() || ws.ExitStatus() != 0 {
			t.Fatalf("pbatch exec --line-buffer: %s; stderr:\n%s", describe(ws), r.stderr)
		}
		re := regexp.MustCompile(`^(f\d{3}) part1 part2 (\d+)$`)
		next := map[string]int{}
		switches, prev := 0, ""
		out := strings.TrimSuffix(r.stdout.String(), "\n")
		for i, l := range strings.Split(out, "\n") {
			m := re.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("stdout line %d is not a whole line: %q", i+1, l)
			}
			if n, _ := strconv.Atoi(m[2]); n != next[m[1]] {
				t.Fatalf("stdout line %d: %q, want part %d of %s next", i+1, l, next[m[1]], m[1])
			}
			next[m[1]]++
			if m[1] != prev {
				switches++
				prev = m[1]
			}
		}
		if len(next) != files {
			t.Errorf("got lines of %d jobs, want %d", len(next), files)
		}
		for tag, n := range next {
			if n != 10 {
				t.Errorf("%s: %d lines, want 10", tag, n)
			}
		}
		t.Logf("%d changes of job in %d lines", switches, files*10)
	})

	t.Run("line-buffer streams", func(t *testing.T) {
		// The first line must arrive while the job still runs.
		one := filepath.Join(dir, "f001")
		cmd := exec.Command(bin, "exec", "--line-buffer", one, "--", "sh", "-c", "echo first; sleep 3; echo second")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		begun := time.Now()
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "first\n" {
			t.Fatalf("first line: %q, %v", line, err)
		}
		if d := time.Since(begun); d > 2*time.Second {
			t.Errorf("first line arrived after %s: --line-buffer held it until the job ended", d.Round(time.Millisecond))
		}
	})
}

// checkBlocks checks that text holds, for each of n jobs, its lines "TAG line
// I…" for I = 0…per-1 in order and contiguous.
func checkBlocks(t *testing.T, what, text string, n, per int) {
	t.Helper()
	re := regexp.MustCompile(`^(f\d{3}) line (\d+)( x+)?$`)
	seen := map[string]bool{}
	cur, next := "", 0
	for i, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		m := re.FindStringSubmatch(l)
		if m == nil {
			if len(l) > 80 {
				l = l[:80] + "…"
			}
			t.Fatalf("%s line %d: %q: not a line a job wrote (mixed with another?)", what, i+1, l)
		}
		k, _ := strconv.Atoi(m[2])
		if m[1] != cur {
			if cur != "" && next != per {
				t.Fatalf("%s line %d: %s starts while %s has written %d of its %d lines: output interleaved", what, i+1, m[1], cur, next, per)
			}
			if seen[m[1]] {
				t.Fatalf("%s line %d: %s appears again after another job's output: output interleaved", what, i+1, m[1])
			}
			seen[m[1]] = true
			cur, next = m[1], 0
		}
		if k != next {
			t.Fatalf("%s line %d: %s line %d, want line %d", what, i+1, cur, k, next)
		}
		next++
	}
	if next != per {
		t.Errorf("%s: last job %s wrote %d of %d lines", what, cur, next, per)
	}
	if len(seen) != n {
		t.Errorf("%s: output of %d jobs, want %d", what, len(seen), n)
	}
}

// TestExecTimeoutKillsChildren: --timeout kills the job's whole process group,
// so background grandchildren die with it, whether or not they hold the job's
// output pipes; the file fails and pbatch does not wait for them.
func TestExecTimeoutKillsChildren(t *testing.T) {
	bin := pbatchBin(t)
	dir := fastTempDir(t)
	makeFiles(t, dir, 2, func(int) string { return "x" })
	marker := newMarker(100)
	killSleepersAtCleanup(t, marker)
	job := fmt.Sprintf("sleep %[1]s & sleep %[1]s >/dev/null 2>&1 </dev/null & sleep %[1]s; echo never", marker)

	begun := time.Now()
	r := start(t, bin, "exec", "--timeout", "1s", "-w", "2", dir, "--", "sh", "-c", job, "sh")
	waitSleepers(t, marker, r)
	if n := len(sleepers(marker)); n < 2 {
		t.Logf("only %d job processes seen running", n)
	}
	r.wait(t, 30*time.Second)
	elapsed := time.Since(begun)
	ws := r.waitStatus(t)
	if ws.Signaled() || ws.ExitStatus() != 1 {
		t.Errorf("pbatch exec --timeout: %s, want exit status 1", describe(ws))
	}
	if elapsed > 10*time.Second {
		t.Errorf("pbatch took %s with --timeout 1s", elapsed.Round(time.Millisecond))
	}
	for _, f := range []string{"f000", "f001"} {
		want := fmt.Sprintf("pbatch: %s: timed out after 1s: killed\n", filepath.Join(dir, f))
		if !strings.Contains(r.stderr.String(), want) {
			t.Errorf("stderr:\n%s\nwant it to contain %q", r.stderr, want)
		}
	}
	if strings.Contains(r.stdout.String(), "never") {
		t.Errorf("a timed-out job went on: stdout %q", r.stdout)
	}
	checkNoSleepers(t, marker)
}

var statusRE = regexp.MustCompile(`^pbatch: status: ([\d,]+) of ([\d,]+) entries done \(walk (running|done)\), .*\d+ failed, \d+ skipped, .* elapsed$`)

// statusLines returns the SIGUSR1 answers in stderr.
func statusLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "pbatch: status: ") {
			out = append(out, l)
		}
	}
	return out
}

// waitStatusLines waits until stderr holds n status lines.
func waitStatusLines(t *testing.T, r *running, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := statusLines(r.stderr.String())
		if len(lines) >= n {
			return lines
		}
		if r.exited() {
			t.Fatalf("pbatch ended (%v) with %d status lines, want %d; stderr:\n%s", r.err, len(lines), n, r.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d status lines after 10s, want %d; stderr:\n%s", len(lines), n, r.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSIGUSR1Status: SIGUSR1 prints one status line on stderr (no terminal
// needed) and pbatch goes on; SIGTERM then ends it with the interrupted summary.
func TestSIGUSR1Status(t *testing.T) {
	bin := pbatchBin(t)

	t.Run("hash", func(t *testing.T) {
		// Sparse files: hashing 4 × 16 GiB of zeros takes far longer than the
		// test, and costs no disk.
		dir := t.TempDir()
		for i := range 4 {
			p := filepath.Join(dir, fmt.Sprintf("sparse%d", i))
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, 16<<30); err != nil {
				t.Skipf("no sparse files here: %v", err)
			}
		}
		r := start(t, bin, "hash", "-w", "2", dir)
		waitCaught(t, r.cmd.Process.Pid, syscall.SIGUSR1, syscall.SIGTERM)
		for n := 1; n <= 2; n++ {
			time.Sleep(100 * time.Millisecond)
			if err := r.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			waitStatusLines(t, r, n)
		}
		time.Sleep(300 * time.Millisecond)
		if r.exited() {
			t.Fatalf("pbatch ended after SIGUSR1: %v; stderr:\n%s", r.err, r.stderr)
		}
		lines := statusLines(r.stderr.String())
		if len(lines) != 2 {
			t.Errorf("got %d status lines for 2 SIGUSR1, want 2:\n%s", len(lines), r.stderr)
		}
		for _, l := range lines {
			m := statusRE.FindStringSubmatch(l)
			if m == nil {
				t.Errorf("status line %q does not match %s", l, statusRE)
				continue
			}
			if m[3] == "done" && m[2] != "4" {
				t.Errorf("status line %q: the walk is done, want 4 entries in all", l)
			}
		}
		if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		r.wait(t, 20*time.Second)
		if ws := r.waitStatus(t); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("after SIGTERM: %s, want killed by SIGTERM", describe(ws))
		}
		stderr := r.stderr.String()
		if !regexp.MustCompile(`(?m)^pbatch: interrupted: `).MatchString(stderr) {
			t.Errorf("no interrupted summary in stderr:\n%s", stderr)
		}
		if i, j := strings.LastIndex(stderr, "pbatch: status: "), strings.Index(stderr, "pbatch: interrupted: "); j >= 0 && i > j {
			t.Errorf("a status line after the summary:\n%s", stderr)
		}
	})

	t.Run("total once the walk is done", func(t *testing.T) {
		// 20 jobs of 0.2 s on 2 workers: the walk ends long before the jobs.
		dir := fastTempDir(t)
		makeFiles(t, dir, 20, func(int) string { return "x" })
		r := start(t, bin, "exec", "-w", "2", dir, "--", "sh", "-c", "sleep 0.2", "sh")
		waitCaught(t, r.cmd.Process.Pid, syscall.SIGUSR1)
		var done string
		for n := 1; done == "" && !r.exited(); n++ {
			time.Sleep(100 * time.Millisecond)
			if r.cmd.Process.Signal(syscall.SIGUSR1) != nil {
				break
			}
			lines := waitStatusLines(t, r, n)
			if last := lines[len(lines)-1]; strings.Contains(last, "(walk done)") {
				done = last
			}
		}
		r.wait(t, time.Minute)
		if done == "" {
			t.Fatalf("no status line said the walk was done; stderr:\n%s", r.stderr)
		}
		m := statusRE.FindStringSubmatch(done)
		if m == nil {
			t.Fatalf("status line %q does not match %s", done, statusRE)
		}
		if m[2] != "20" {
			t.Errorf("status line %q: the walk is done and found 20 files, want \"of 20 entries\"", done)
		}
	})
}

// TestSignalsDieBySameSignal: SIGINT, SIGTERM and SIGHUP stop dispatching,
// kill the jobs in flight, print the summary, and pbatch dies by the same
// signal (a shell sees 130, 143, 129). A signal its parent ignored stays
// ignored. A second signal ends pbatch at once.
func TestSignalsDieBySameSignal(t *testing.T) {
	bin := pbatchBin(t)
	dir := fastTempDir(t)
	makeFiles(t, dir, 20, func(int) string { return "x" })

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(signalName(sig), func(t *testing.T) {
			marker := newMarker(200)
			killSleepersAtCleanup(t, marker)
			r := start(t, bin, "exec", "-w", "2", dir, "--", "sh", "-c", "sleep "+marker, "sh")
			waitCaught(t, r.cmd.Process.Pid, sig)
			waitSleepers(t, marker, r)
			if err := r.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			r.wait(t, 20*time.Second)
			if ws := r.waitStatus(t); !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("after %s: %s, want killed by %s", signalName(sig), describe(ws), signalName(sig))
			}
			if !regexp.MustCompile(`(?m)^pbatch: interrupted: 0 files in `).MatchString(r.stderr.String()) {
				t.Errorf("stderr:\n%s\nwant the interrupted summary", r.stderr)
			}
			checkNoSleepers(t, marker)
		})
	}

	// What a shell reports. (A background job of a non-interactive shell
	// starts with SIGINT ignored, so SIGINT is left out here.)
	for _, c := range []struct {
		sig  string
		want string
	}{{"TERM", "status=143"}, {"HUP", "status=129"}} {
		t.Run("shell sees "+c.sig, func(t *testing.T) {
			if _, err := exec.LookPath("pgrep"); err != nil {
				t.Skip("no pgrep")
			}
			marker := newMarker(300)
			killSleepersAtCleanup(t, marker)
			// Once a job runs, pbatch handles the signals.
			script := `"$0" exec -w 2 "$1" -- sh -c "sleep $2" sh 2>/dev/null & p=$!
until pgrep -f "sleep $2" >/dev/null; do sleep 0.02; done
kill -$3 $p; wait $p; echo "status=$?"`
			r := start(t, "sh", "-c", script, bin, dir, marker, c.sig)
			r.wait(t, 30*time.Second)
			if got := strings.TrimSpace(r.stdout.String()); got != c.want {
				t.Errorf("shell: %q, want %q; stderr:\n%s", got, c.want, r.stderr)
			}
			checkNoSleepers(t, marker)
		})
	}

	// An inherited ignored SIGINT (or SIGHUP, as under nohup) stays ignored:
	// the run completes, twice signalled.
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP} {
		name := strings.TrimPrefix(signalName(sig), "SIG")
		t.Run(signalName(sig)+" ignored by the parent", func(t *testing.T) {
			wrapper := `trap "" ` + name + `; exec "$0" "$@"`
			r := start(t, "sh", "-c", wrapper, bin, "exec", "-w", "2", dir, "--", "sh", "-c", "sleep 0.1", "sh")
			waitCaught(t, r.cmd.Process.Pid, syscall.SIGTERM) // pbatch runs: sh exec'd it
			if m, err := signalMask(r.cmd.Process.Pid, "SigIgn"); err != nil || m&sigBit(sig) == 0 {
				t.Fatalf("%s not ignored in pbatch (SigIgn %x, %v)", signalName(sig), m, err)
			}
			for range 2 {
				time.Sleep(150 * time.Millisecond)
				r.cmd.Process.Signal(sig)
			}
			r.wait(t, time.Minute)
			if ws := r.waitStatus(t); ws.Signaled() || ws.ExitStatus() != 0 {
				t.Errorf("%s: %s, want exit status 0; stderr:\n%s", signalName(sig), describe(ws), r.stderr)
			}
			stderr := r.stderr.String()
			if strings.Contains(stderr, "interrupted") || !regexp.MustCompile(`(?m)^pbatch: 20 files in `).MatchString(stderr) {
				t.Errorf("stderr:\n%s\nwant all 20 files done, not interrupted", stderr)
			}
		})
	}

	// A job whose detached grandchild holds its output pipe keeps pbatch
	// waiting after the first signal; the second ends it at once.
	t.Run("second signal", func(t *testing.T) {
		marker, held := newMarker(400), newMarker(3)
		killSleepersAtCleanup(t, marker)
		killSleepersAtCleanup(t, held)
		job := fmt.Sprintf("setsid sleep %s & sleep %s", held, marker)
		r := start(t, bin, "exec", "-w", "2", dir, "--", "sh", "-c", job, "sh")
		waitCaught(t, r.cmd.Process.Pid, syscall.SIGTERM)
		waitSleepers(t, marker, r)
		r.cmd.Process.Signal(syscall.SIGTERM)
		time.Sleep(100 * time.Millisecond)
		if r.exited() {
			t.Skipf("pbatch ended on the first signal (%v): nothing left to check", r.err)
		}
		second := time.Now()
		r.cmd.Process.Signal(syscall.SIGTERM)
		r.wait(t, 20*time.Second)
		if d := time.Since(second); d > 500*time.Millisecond {
			t.Errorf("pbatch ended %s after the second SIGTERM, want at once", d.Round(time.Millisecond))
		}
		if ws := r.waitStatus(t); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("after two SIGTERM: %s, want killed by SIGTERM", describe(ws))
		}
	})
}

// --- the progress display on a terminal ---

// tmuxPane runs a shell command in a detached tmux session of its own server.
type tmuxPane struct {
	t    *testing.T
	sock string
}

func newTmuxPane(t *testing.T, width, height int, command string) *tmuxPane {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("no tmux to provide a terminal")
	}
	// A short socket path: unix socket names are limited to 108 bytes.
	sockDir, err := os.MkdirTemp("", "pbt")
	if err != nil {
		t.Fatal(err)
	}
	p := &tmuxPane{t: t, sock: filepath.Join(sockDir, "s")}
	t.Cleanup(func() {
		exec.Command("tmux", "-S", p.sock, "kill-server").Run()
		os.RemoveAll(sockDir)
	})
	// The pane stays after the command so that the screen can be read.
	script := command + `; echo "EXIT=$?"; sleep 600`
	out, err := exec.Command("tmux", "-S", p.sock, "-f", "/dev/null", "new-session", "-d",
		"-x", strconv.Itoa(width), "-y", strconv.Itoa(height), "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Skipf("tmux cannot start a session here: %v: %s", err, out)
	}
	return p
}

// screen returns the visible pane, or with history the scrolled-off lines too.
func (p *tmuxPane) screen(history bool) string {
	args := []string{"-S", p.sock, "capture-pane", "-p"}
	if history {
		args = append(args, "-S", "-1000")
	}
	out, err := exec.Command("tmux", args...).Output()
	if err != nil {
		p.t.Fatalf("tmux capture-pane: %v", err)
	}
	return string(out)
}

var exitRE = regexp.MustCompile(`(?m)^EXIT=(\d+)$`)

// run polls the screen every 40 ms until the command has ended, and returns
// every snapshot, the last one taken after the end.
func (p *tmuxPane) run(timeout time.Duration) []string {
	var shots []string
	deadline := time.Now().Add(timeout)
	for {
		s := p.screen(false)
		shots = append(shots, s)
		if exitRE.MatchString(s) {
			return shots
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("command still running after %s; screen:\n%s", timeout, s)
		}
		time.Sleep(40 * time.Millisecond)
	}
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, " "); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// progressRE matches what only the progress display prints: the counter
// "(N/M," or "(N/-," with a rate in files, or the walk's running count.
var (
	progressRE = regexp.MustCompile(`\(\d+/(\d+|-), |files/(s|min|hr)|found so far`)
	barRE      = regexp.MustCompile(`(\d+)% .*\((\d+)/(\d+), `)
)

// checkBar checks the figures of every progress bar seen: its total is the
// number of files, and its percentage agrees with its count.
func checkBar(t *testing.T, shots []string, total int) {
	t.Helper()
	var badTotal, badPct string
	for _, s := range shots {
		for _, l := range strings.Split(s, "\n") {
			m := barRE.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			pct, _ := strconv.Atoi(m[1])
			n, _ := strconv.Atoi(m[2])
			of, _ := strconv.Atoi(m[3])
			// While the walk runs (bounded buffers: it cannot run far ahead
			// of slow jobs) the total is what was found so far, and says so;
			// once the walk is done it is the number of files.
			counting := strings.Contains(l, "found so far")
			if (counting && of > total || !counting && of != total) && badTotal == "" {
				badTotal = strings.TrimSpace(l)
			}
			if of > 0 && (pct < n*100/of-2 || pct > n*100/of+2) && badPct == "" {
				badPct = strings.TrimSpace(l)
			}
		}
	}
	if badTotal != "" {
		t.Errorf("progress bar total is not the %d files:\n%s", total, badTotal)
	}
	if badPct != "" {
		t.Errorf("progress bar percentage disagrees with its count:\n%s", badPct)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestProgressInTerminal: with stderr on a terminal, a live progress line
// shows the files done and their total; it is erased before results reach the
// terminal and before the summary, so that after the run the screen holds
// results and the summary only. Results on a redirected stdout never carry any
// of it. --progress never shows nothing, and auto shows nothing when stderr is
// not a terminal.
func TestProgressInTerminal(t *testing.T) {
	bin := pbatchBin(t)
	dir := fastTempDir(t)
	const n = 60
	makeFiles(t, filepath.Join(dir, "slow"), n, func(int) string { return "x" })
	job := `sh -c 'sleep 0.05; echo "done $1"' sh`
	resultRE := regexp.MustCompile(`^done slow/f\d{3}$`)
	summaryRE := regexp.MustCompile(`^pbatch: 60 files in [0-9.]+m?s$`)
	cd := "cd " + shellQuote(dir) + " && "

	checkResults := func(t *testing.T, out string) {
		t.Helper()
		if strings.ContainsAny(out, "\x1b\r") {
			t.Errorf("results hold terminal control characters: %q", out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != n {
			t.Errorf("%d result lines, want %d:\n%s", len(lines), n, out)
		}
		for _, l := range lines {
			if !resultRE.MatchString(l) {
				t.Errorf("result line %q", l)
			}
		}
	}

	t.Run("stdout to a file", func(t *testing.T) {
		out := filepath.Join(dir, "out.txt")
		p := newTmuxPane(t, 120, 20, cd+shellQuote(bin)+" exec -w 2 slow -- "+job+" > "+shellQuote(out))
		shots := p.run(time.Minute)
		seen := false
		for _, s := range shots {
			seen = seen || progressRE.MatchString(s)
		}
		if !seen {
			t.Errorf("no progress line in %d snapshots of the terminal; last:\n%s", len(shots), shots[len(shots)-1])
		}
		checkBar(t, shots, n)
		final := nonEmptyLines(p.screen(true))
		if len(final) != 2 || !summaryRE.MatchString(final[0]) || final[1] != "EXIT=0" {
			t.Errorf("screen after the run:\n%s\nwant only the summary and EXIT=0", strings.Join(final, "\n"))
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		checkResults(t, string(b))
	})

	t.Run("stdout on the terminal too", func(t *testing.T) {
		p := newTmuxPane(t, 120, 20, cd+shellQuote(bin)+" exec -w 2 slow -- "+job)
		shots := p.run(time.Minute)
		seen := false
		for _, s := range shots {
			seen = seen || progressRE.MatchString(s)
		}
		if !seen {
			t.Errorf("no progress line in %d snapshots of the terminal", len(shots))
		}
		final := nonEmptyLines(p.screen(true))
		if len(final) < 2 || final[len(final)-1] != "EXIT=0" || !summaryRE.MatchString(final[len(final)-2]) {
			t.Fatalf("screen after the run:\n%s\nwant results, the summary and EXIT=0", strings.Join(final, "\n"))
		}
		checkResults(t, strings.Join(final[:len(final)-2], "\n")+"\n")
	})

	t.Run("line-buffer on the terminal", func(t *testing.T) {
		// Streamed lines, on stdout and on stderr, reach the terminal with the
		// progress line erased first, as grouped output does.
		lbJob := `sh -c 'sleep 0.05; echo "done $1"; echo "note $1" >&2' sh`
		p := newTmuxPane(t, 120, 20, cd+shellQuote(bin)+" exec --line-buffer -w 2 slow -- "+lbJob)
		p.run(time.Minute)
		final := nonEmptyLines(p.screen(true))
		if len(final) < 2 || final[len(final)-1] != "EXIT=0" || !summaryRE.MatchString(final[len(final)-2]) {
			t.Fatalf("screen after the run:\n%s\nwant results, the summary and EXIT=0", strings.Join(final, "\n"))
		}
		noteRE := regexp.MustCompile(`^note slow/f\d{3}$`)
		var results, mixed []string
		for _, l := range final[:len(final)-2] {
			switch {
			case resultRE.MatchString(l):
				results = append(results, l)
			case noteRE.MatchString(l):
			default:
				mixed = append(mixed, l)
			}
		}
		if len(mixed) > 0 {
			t.Errorf("%d screen lines mix progress with streamed output, first:\n%s", len(mixed), strings.Join(mixed[:min(3, len(mixed))], "\n"))
		}
		if len(results) != n {
			t.Errorf("%d whole result lines on the screen, want %d", len(results), n)
		}
	})

	t.Run("never", func(t *testing.T) {
		p := newTmuxPane(t, 120, 20, cd+shellQuote(bin)+" exec --progress never -w 2 slow -- "+job+" > /dev/null")
		shots := p.run(time.Minute)
		for _, s := range shots {
			if progressRE.MatchString(s) {
				t.Fatalf("--progress never, yet the terminal showed:\n%s", s)
			}
		}
		final := nonEmptyLines(p.screen(true))
		if len(final) != 2 || !summaryRE.MatchString(final[0]) || final[1] != "EXIT=0" {
			t.Errorf("screen after the run:\n%s\nwant only the summary and EXIT=0", strings.Join(final, "\n"))
		}
	})

	t.Run("auto without a terminal", func(t *testing.T) {
		r := start(t, bin, "exec", "-w", "2", filepath.Join(dir, "slow"), "--", "sh", "-c", `sleep 0.05; echo "done ${1#*/slow/}"`, "sh")
		r.wait(t, time.Minute)
		if ws := r.waitStatus(t); ws.Signaled() || ws.ExitStatus() != 0 {
			t.Fatalf("%s; stderr:\n%s", describe(ws), r.stderr)
		}
		stderr := r.stderr.String()
		if strings.ContainsAny(stderr, "\x1b\r") || progressRE.MatchString(stderr) {
			t.Errorf("stderr is a pipe, yet it got a progress display: %q", stderr)
		}
		if lines := nonEmptyLines(stderr); len(lines) != 1 || !regexp.MustCompile(`^pbatch: 60 files in `).MatchString(lines[0]) {
			t.Errorf("stderr: %q, want the summary only", stderr)
		}
	})

	t.Run("always without a terminal", func(t *testing.T) {
		r := start(t, bin, "exec", "--progress", "always", "-w", "2", filepath.Join(dir, "slow"), "--", "sh", "-c", `sleep 0.05; echo "done slow/${1##*/}"`, "sh")
		r.wait(t, time.Minute)
		if ws := r.waitStatus(t); ws.Signaled() || ws.ExitStatus() != 0 {
			t.Fatalf("%s; stderr:\n%s", describe(ws), r.stderr)
		}
		if !progressRE.MatchString(r.stderr.String()) {
			t.Errorf("--progress always showed no progress on stderr: %q", r.stderr)
		}
		checkResults(t, r.stdout.String())
	})
}

// TestExecStdoutErrors: exec's output obeys the stdout policy of every other
// mode, grouped, -X and --line-buffer alike: a closed pipe ends the run
// quietly (death by SIGPIPE) and stops dispatching, any other error is
// reported once and exits 1.
func TestExecStdoutErrors(t *testing.T) {
	bin := pbatchBin(t)
	dir := fastTempDir(t)
	makeFiles(t, dir, 3000, func(int) string { return "x" })
	log := filepath.Join(t.TempDir(), "jobs.log")
	job := []string{"--", "sh", "-c", `echo "$1"; echo ran >> "$0"`, log}
	for _, mode := range [][]string{{"--line-buffer"}, {}, {"-k", "-w", "1"}} {
		name := strings.Join(mode, " ")
		t.Run("closed pipe "+name, func(t *testing.T) {
			os.Remove(log)
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd := exec.Command(bin, append(append(append([]string{"exec"}, mode...), dir), job...)...)
			cmd.Stdout, cmd.Stderr = pw, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			line, err := bufio.NewReader(pr).ReadString('\n')
			pr.Close() // as head -1 does
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
				t.Fatal("pbatch did not end after its reader went away")
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGPIPE {
				t.Errorf("got %v, want death by SIGPIPE", err)
			}
			if s := strings.ToLower(stderr.String()); strings.Contains(s, "broken pipe") || strings.Contains(s, "write error") || strings.Contains(s, "failed") {
				t.Errorf("stderr mentions the closed pipe:\n%s", stderr.String())
			}
			data, _ := os.ReadFile(log)
			if n := bytes.Count(data, []byte("ran")); n > 500 {
				t.Errorf("%d of 3000 jobs ran after the reader went away; dispatching must stop", n)
			}
		})
	}
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	for _, mode := range [][]string{{"--line-buffer"}, {}, {"-X"}, {"--format", "json"}} {
		t.Run("full "+strings.Join(mode, " "), func(t *testing.T) {
			os.Remove(log)
			var stderr bytes.Buffer
			cmd := exec.Command(bin, append(append(append([]string{"exec"}, mode...), dir), job...)...)
			cmd.Stdout, cmd.Stderr = full, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("> /dev/full: got %v, want exit status 1", err)
			}
			if want := "pbatch: write error: no space left on device\n"; strings.Count(stderr.String(), want) != 1 {
				t.Errorf("stderr:\n%s\nwant %q once", stderr.String(), want)
			}
			data, _ := os.ReadFile(log)
			if n := bytes.Count(data, []byte("ran")); n > 500 && mode[0] != "-X" {
				t.Errorf("%d of 3000 jobs ran after stdout failed; dispatching must stop", n)
			}
		})
	}
}

// TestExecSpool: a job's output past a small bound goes to an unlinked file
// in $TMPDIR, not memory: pbatch's peak RSS stays far below what jobs write,
// and the output comes out byte for byte, grouped, in order with -k, stdout
// and stderr alike, and in JSON records.
func TestExecSpool(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200 MB through pbatch")
	}
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		t.Skip("measures peak RSS with /usr/bin/time (Debian package time), not installed")
	}
	bin := pbatchBin(t)
	dir := t.TempDir()
	makeFiles(t, dir, 2, func(int) string { return "x" })
	tmp := t.TempDir()
	// Deterministic, incompressible enough, and long lines.
	gen := `yes "$1 $(printf '%0500d' 0)" | head -c $2`
	runTo := func(t *testing.T, o, e io.Writer, args ...string) (maxRSS int64) {
		// Measured by /usr/bin/time, which forks pbatch from its own small
		// process: Linux carries the parent's peak RSS into a vforked child's
		// ru_maxrss at exec, so os/exec's rusage reports this test process's
		// peak (hundreds of MiB after the other tests) rather than pbatch's.
		rss := filepath.Join(t.TempDir(), "rss")
		cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", rss, bin}, args...)...)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		cmd.Stdout, cmd.Stderr = o, e
		if err := cmd.Run(); err != nil {
			t.Fatalf("pbatch %s: %v", strings.Join(args, " "), err)
		}
		b, err := os.ReadFile(rss)
		if err != nil {
			t.Fatal(err)
		}
		kib, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatalf("/usr/bin/time wrote %q", b)
		}
		return kib << 10
	}
	run := func(t *testing.T, args ...string) (stdout, stderr []byte) {
		var o, e bytes.Buffer
		runTo(t, &o, &e, args...)
		return o.Bytes(), e.Bytes()
	}
	expect := func(t *testing.T, name string, n int) []byte {
		out, err := exec.Command("sh", "-c", gen, "sh", name, strconv.Itoa(n)).Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Run("200 MB", func(t *testing.T) {
		const n = 200 << 20
		got, gotErr := sha256.New(), sha256.New()
		rss := runTo(t, got, gotErr, "exec", "-q", "-w", "1", filepath.Join(dir, "f000"), "--", "sh", "-c", gen+"; "+gen+" >&2", "sh", "{/}", strconv.Itoa(n))
		want := sha256.New()
		cmd := exec.Command("sh", "-c", gen, "sh", "f000", strconv.Itoa(n))
		cmd.Stdout = want
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Sum(nil), want.Sum(nil)) || !bytes.Equal(gotErr.Sum(nil), want.Sum(nil)) {
			t.Errorf("stdout or stderr differs from what the job wrote")
		}
		if rss > 64<<20 {
			t.Errorf("peak RSS %d MiB for a job writing 2 × 200 MiB; want under 64 MiB", rss>>20)
		}
		t.Logf("peak RSS %.1f MiB", float64(rss)/(1<<20))
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			t.Errorf("spool files left in $TMPDIR: %v", ents)
		}
	})
	t.Run("-k groups", func(t *testing.T) {
		// The first file's job is the slower: -k still prints it first, each
		// job's output one block, stderr too.
		const n = 5 << 20
		stdout, stderr := run(t, "exec", "-q", "-k", "-w", "2", dir, "--", "sh", "-c",
			`case $1 in f000) sleep 0.3;; esac; `+gen+`; `+gen+` >&2`, "sh", "{/}", strconv.Itoa(n))
		want := append(expect(t, "f000", n), expect(t, "f001", n)...)
		if !bytes.Equal(stdout, want) {
			t.Errorf("stdout: %d bytes, not the two blocks in order", len(stdout))
		}
		a, b := expect(t, "f000", n), expect(t, "f001", n)
		if !bytes.Equal(stderr, append(a, b...)) && !bytes.Equal(stderr, append(b, a...)) {
			t.Errorf("stderr: %d bytes, not two whole blocks", len(stderr))
		}
	})
	t.Run("json", func(t *testing.T) {
		const n = 3 << 20
		stdout, _ := run(t, "exec", "-q", "--format", "json", filepath.Join(dir, "f001"), "--", "sh", "-c", gen+`; printf '\303\251\377'`, "sh", "{/}", strconv.Itoa(n))
		var rec struct {
			Stdout string `json:"stdout"`
		}
		if err := json.Unmarshal(stdout, &rec); err != nil {
			t.Fatalf("record: %v", err)
		}
		if w := string(expect(t, "f001", n)) + "é\ufffd"; rec.Stdout != w {
			t.Errorf("stdout in the record: %d bytes, want the job's %d", len(rec.Stdout), len(w))
		}
	})
}
