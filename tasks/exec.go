package tasks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// ExecOptions configure the exec task.
type ExecOptions struct {
	Shell   bool          // run the command with sh -c; placeholders are shell-quoted
	Timeout time.Duration // kill the command (its whole process group) after this
	Batch   bool          // -X: many paths per invocation, bounded by ArgMax
	ArgMax  int           // bytes of arguments and environment one invocation may take
	// Lines, when set, receives the commands' output line by line as it comes
	// (--line-buffer); each Write is one whole line, so lines never mix.
	// Otherwise each job's output is captured and reported as one block.
	Lines, ErrLines io.Writer
}

// Exec runs a command for each file (or, with Batch, for many files at once).
type Exec struct {
	argv   []string
	places bool // some argument holds a placeholder
	opt    ExecOptions
}

var placeholders = []string{"{/.}", "{//}", "{/}", "{.}", "{}"}

// NewExec validates the command line.
func NewExec(argv []string, opt ExecOptions) (*Exec, error) {
	if len(argv) == 0 {
		return nil, errors.New("no COMMAND given after --")
	}
	if opt.ArgMax <= 0 {
		opt.ArgMax = 128 << 10
	}
	t := &Exec{argv: argv, opt: opt}
	for _, a := range argv {
		t.places = t.places || hasPlaceholder(a)
	}
	// A command that cannot run would fail every file with the same message:
	// say it once, before the walk (as xargs does). A command that is itself
	// a placeholder ({} runs each file) is looked up per file.
	if !opt.Shell && !hasPlaceholder(argv[0]) {
		if _, err := exec.LookPath(argv[0]); err != nil {
			var ee *exec.Error
			var pe *fs.PathError
			if errors.As(err, &ee) {
				err = ee.Err
			}
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, fmt.Errorf("%s: %w", argv[0], err)
		}
	}
	return t, nil
}

// FDsPerWorker: while a command starts, os/exec holds both ends of a stdout
// and a stderr pipe, /dev/null for stdin, the pipe that reports exec errors and
// a pidfd.
func (t *Exec) FDsPerWorker() int { return 8 }

func (t *Exec) NewWorker() Worker {
	if t.opt.Batch {
		return &execBatch{Exec: t}
	}
	return t
}

// execBatch is the -X worker: it takes whole batches (see BatchWorker). Its
// slices are reused from one invocation to the next: with a few thousand
// paths each, building them afresh was most of exec -X's garbage.
type execBatch struct {
	*Exec
	paths, args []string
	idx         []int
	buf         []byte // the paths of the next invocation, end to end
	ends        []int  // where each path ends in buf
}

// expand replaces the placeholders in arg for one path; quote shell-quotes the
// values (--shell).
func expand(arg, p string, quote bool) string {
	if !strings.Contains(arg, "{") {
		return arg
	}
	base := path.Base(p)
	dir := path.Dir(p)
	noExt := func(s string) string {
		b := path.Base(s)
		if i := strings.LastIndexByte(b, '.'); i > 0 {
			return s[:len(s)-(len(b)-i)]
		}
		return s
	}
	vals := map[string]string{"{}": p, "{/}": base, "{//}": dir, "{.}": noExt(p), "{/.}": noExt(base)}
	var b strings.Builder
	for i := 0; i < len(arg); {
		matched := false
		for _, ph := range placeholders {
			if strings.HasPrefix(arg[i:], ph) {
				v := vals[ph]
				if quote {
					v = shellQuote(v)
				}
				b.WriteString(v)
				i += len(ph)
				matched = true
				break
			}
		}
		if !matched {
			b.WriteByte(arg[i])
			i++
		}
	}
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// command appends the argv for one invocation over paths to argv.
func (t *Exec) command(argv, paths []string) []string {
	if t.places {
		for _, a := range t.argv {
			if !hasPlaceholder(a) {
				argv = append(argv, a)
				continue
			}
			// With several paths (-X), an argument with a placeholder is
			// repeated once per path, as fd -X does.
			for _, p := range paths {
				argv = append(argv, expand(a, p, t.opt.Shell))
			}
		}
	} else {
		argv = append(argv, t.argv...)
		for _, p := range paths {
			if t.opt.Shell {
				p = shellQuote(p)
			}
			argv = append(argv, p)
		}
	}
	if t.opt.Shell {
		return []string{"sh", "-c", strings.Join(argv, " ")}
	}
	return argv
}

// Run runs the command for one entry.
func (t *Exec) Run(ctx context.Context, e *walker.Entry, r *Result) {
	if fromWalk(e, r) {
		return
	}
	t.run(ctx, t.command(nil, []string{e.Path()}), r)
}

// RunBatch runs the command over many entries at once (-X), in as few
// invocations as the argument size limit allows.
func (t *execBatch) RunBatch(ctx context.Context, es []walker.Entry, rs []Result) {
	size := 0
	// flush runs the command over the paths in buf[:cut]; what follows cut
	// is the start of the next invocation.
	flush := func(cut int) {
		if len(t.ends) == 0 {
			return
		}
		// One string for all the paths of the invocation, not one each: a few
		// thousand small allocations per command were a tenth of exec -X's CPU.
		all := string(t.buf[:cut])
		prev := 0
		for _, end := range t.ends {
			t.paths = append(t.paths, all[prev:end])
			prev = end
		}
		var r Result
		t.args = t.command(t.args[:0], t.paths)
		t.run(ctx, t.args, &r)
		// Every file of the invocation shares its outcome; the output is
		// reported once, with the first.
		for k, i := range t.idx {
			rs[i].Status, rs[i].Err, rs[i].Exit = r.Status, r.Err, r.Exit
			if k == 0 {
				rs[i].Stdout, rs[i].Stderr = r.Stdout, r.Stderr
			}
		}
		clear(t.args) // the paths are garbage once the command has run
		clear(t.paths)
		t.buf = t.buf[:copy(t.buf, t.buf[cut:])]
		t.paths, t.idx, t.ends, size = t.paths[:0], t.idx[:0], t.ends[:0], 0
	}
	base, limit := t.fixedCost()
	for i := range es {
		rs[i].Entry = es[i]
		if fromWalk(&es[i], &rs[i]) {
			continue
		}
		start := len(t.buf)
		t.buf = es[i].AppendPath(t.buf)
		n := t.cost(t.buf[start:])
		if len(t.ends) > 0 && base+size+n > limit {
			flush(start)
		}
		t.ends = append(t.ends, len(t.buf))
		t.idx = append(t.idx, i)
		size += n
	}
	flush(len(t.buf))
}

// maxArgStrlen is the kernel's limit on any one argument (MAX_ARG_STRLEN,
// 32 pages), whatever the stack allows in all: --shell passes the whole
// command line, paths included, as one argument.
const maxArgStrlen = 32 * 4096

// fixedCost returns the argument bytes an invocation takes before any path
// and the most it may take: the kernel counts each argument's bytes, its NUL
// and its pointer; with --shell what counts is the one sh -c string, into
// which the arguments are joined with spaces.
func (t *Exec) fixedCost() (base, limit int) {
	limit = t.opt.ArgMax
	if t.opt.Shell {
		base = len("sh") + len("-c") + 2*(1+8) + 1 + 8
		limit = min(limit, maxArgStrlen)
	}
	for _, a := range t.argv {
		if !hasPlaceholder(a) {
			base += len(a) + t.perArg()
		}
	}
	return base, limit
}

// cost returns what one path adds to an invocation, counted as fixedCost
// does: the path itself (quoted, with --shell), or every argument holding a
// placeholder expanded for it, prefix and suffix included.
func (t *Exec) cost(p []byte) int {
	if !t.places {
		n := len(p)
		if t.opt.Shell {
			n += 2 + 3*bytes.Count(p, []byte{'\''}) // as shellQuote quotes it
		}
		return n + t.perArg()
	}
	n := 0
	for _, a := range t.argv {
		if hasPlaceholder(a) {
			n += len(expand(a, string(p), t.opt.Shell)) + t.perArg()
		}
	}
	return n
}

// perArg is what an argument costs besides its bytes: its NUL and pointer,
// or with --shell the space that joins it to the command line.
func (t *Exec) perArg() int {
	if t.opt.Shell {
		return 1
	}
	return 1 + 8
}

func hasPlaceholder(a string) bool {
	for _, p := range placeholders {
		if strings.Contains(a, p) {
			return true
		}
	}
	return false
}

// run runs argv, which stays the caller's.
func (t *Exec) run(ctx context.Context, argv []string, r *Result) {
	if t.opt.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.opt.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, argv[0])
	cmd.Args = argv // not copied, as CommandContext's variadic arguments would be
	// Its own process group, so a timeout or an interrupt kills what it started
	// too, not just the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out, errb bytes.Buffer
	var lo, le *lineWriter
	if t.opt.Lines != nil {
		lo, le = &lineWriter{w: t.opt.Lines}, &lineWriter{w: t.opt.ErrLines}
		cmd.Stdout, cmd.Stderr = lo, le
	} else {
		cmd.Stdout, cmd.Stderr = &out, &errb
	}
	err := cmd.Run()
	if lo != nil {
		lo.flush()
		le.flush()
	}
	r.Stdout, r.Stderr = out.Bytes(), errb.Bytes()
	r.Exit = -1
	if cmd.ProcessState != nil {
		r.Exit = cmd.ProcessState.ExitCode()
	}
	switch {
	case err == nil:
	case t.opt.Timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded):
		r.Status, r.Err = Failed, fmt.Errorf("timed out after %s: killed", t.opt.Timeout)
	case ctx.Err() != nil:
		r.Status, r.Err = Failed, ctx.Err()
	default:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.Status, r.Err = Failed, fmt.Errorf("%s killed by signal %s", argv[0], signalName(ws.Signal()))
				return
			}
			r.Status, r.Err = Failed, fmt.Errorf("%s exited with status %d", argv[0], ee.ExitCode())
			return
		}
		r.Status, r.Err = Failed, err
	}
}

// lineWriter passes on whole lines only, so that lines from concurrent jobs
// never mix (--line-buffer).
type lineWriter struct {
	w   io.Writer
	buf []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.w.Write(l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *lineWriter) flush() {
	if len(l.buf) > 0 {
		l.w.Write(append(l.buf, '\n'))
		l.buf = nil
	}
}

// LockedWriter makes a writer safe for whole-line writes from many goroutines.
type LockedWriter struct {
	mu sync.Mutex
	W  io.Writer
}

func (l *LockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.W.Write(p)
}

func signalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(int(s))
}
