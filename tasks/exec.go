package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
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
	Shell   bool          // run the command as a sh -c script; values are its parameters
	Timeout time.Duration // kill the command (its whole process group) after this
	Batch   bool          // -X: many paths per invocation, bounded by ArgMax
	ArgMax  int           // bytes of arguments and environment one invocation may take
	// Lines, when set, receives the commands' output as it comes
	// (--line-buffer); each Write is whole lines of one job (or a piece of
	// at least lineMax of a longer line), so lines never mix. Otherwise each
	// job's output is captured (Result.Stdout, Stderr) and reported as one
	// block.
	Lines, ErrLines io.Writer
}

// Exec runs a command for each file (or, with Batch, for many files at once).
type Exec struct {
	argv   []string
	tmpl   []argTemplate // argv split into text and placeholders
	slots  []slot        // the values each path contributes
	places bool          // some argument holds a placeholder
	opt    ExecOptions
}

// NewExec validates the command line.
func NewExec(argv []string, opt ExecOptions) (*Exec, error) {
	if len(argv) == 0 {
		return nil, errors.New("no COMMAND given after --")
	}
	if opt.ArgMax <= 0 {
		opt.ArgMax = 128 << 10
	}
	t := &Exec{argv: argv, opt: opt}
	var err error
	t.tmpl, t.slots, err = templates(argv, opt.Shell, opt.Batch)
	if err != nil {
		return nil, err
	}
	for _, a := range t.tmpl {
		t.places = t.places || a.places
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

// FDsPerWorker: while a command starts, both ends of a stdout and a stderr
// pipe, /dev/null for stdin, the pipe that reports exec errors and a pidfd;
// then up to two spool files per job, its own and those of a result waiting
// in the queue.
func (t *Exec) FDsPerWorker() int { return 12 }

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

// expand is argument template a for path p, without a shell.
func (t *Exec) expand(a *argTemplate, p string) string {
	if len(a.pieces) == 1 && a.pieces[0].slot >= 0 {
		return t.slots[a.pieces[0].slot].value(p)
	}
	var b strings.Builder
	for _, pc := range a.pieces {
		if pc.slot < 0 {
			b.WriteString(pc.lit)
		} else {
			b.WriteString(t.slots[pc.slot].value(p))
		}
	}
	return b.String()
}

// shellName is the script's $0 in `sh -c SCRIPT sh VALUE…`: the shell's
// own messages then start "sh: ", not as if pbatch wrote them.
const shellName = "sh"

// allArgs is appended to a --shell script without placeholders: the paths
// are its positional parameters.
const allArgs = ` "$@"`

// command appends the argv for one invocation over paths to argv. A value
// that would begin an argument with '-' is given as ./VALUE (see slot).
func (t *Exec) command(argv, paths []string) []string {
	if t.opt.Shell {
		return t.shellCommand(argv, paths)
	}
	if !t.places {
		argv = append(argv, t.argv...)
		for _, p := range paths {
			argv = append(argv, guardDash(p))
		}
		return argv
	}
	for k := range t.tmpl {
		a := &t.tmpl[k]
		if !a.places {
			argv = append(argv, t.argv[k])
			continue
		}
		// With several paths (-X), an argument with a placeholder is
		// repeated once per path, as fd -X does.
		for _, p := range paths {
			argv = append(argv, t.expand(a, p))
		}
	}
	return argv
}

// shellCommand builds `sh -c SCRIPT sh VALUE…`: the script's first line
// copies each value from its positional parameter into a variable of its own
// (pbatch_1=${1} …: path i's slot s is value 1 + i*len(slots) + s), which the
// script refers to, so that no file name is ever part of the script and set
// --, shift or a function's own arguments do not change what a placeholder
// stands for.
func (t *Exec) shellCommand(argv, paths []string) []string {
	var script []byte
	if t.places {
		nv := len(paths) * len(t.slots)
		for n := 1; n <= nv; n++ {
			script = appendAssign(script, n)
			if n < nv {
				script = append(script, ' ')
			}
		}
		script = append(script, '\n')
	}
	for k := range t.tmpl {
		if k > 0 {
			script = append(script, ' ')
		}
		a := &t.tmpl[k]
		if !a.places {
			script = append(script, t.argv[k]...)
			continue
		}
		for i := range paths {
			if i > 0 {
				script = append(script, ' ')
			}
			for _, pc := range a.pieces {
				if pc.slot < 0 {
					script = append(script, pc.lit...)
				} else {
					script = appendRef(script, 1+i*len(t.slots)+pc.slot, pc.quoted)
				}
			}
		}
	}
	if !t.places {
		script = append(script, allArgs...)
	}
	argv = append(argv, "sh", "-c", string(script), shellName)
	for _, p := range paths {
		if !t.places {
			argv = append(argv, guardDash(p))
			continue
		}
		for _, s := range t.slots {
			argv = append(argv, s.value(p))
		}
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
	size, ssize := 0, 0
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
				rs[i].Stdout, rs[i].Stderr, rs[i].Note = r.Stdout, r.Stderr, r.Note
			}
		}
		clear(t.args) // the paths are garbage once the command has run
		clear(t.paths)
		t.buf = t.buf[:copy(t.buf, t.buf[cut:])]
		t.paths, t.idx, t.ends, size, ssize = t.paths[:0], t.idx[:0], t.ends[:0], 0, 0
	}
	base, limit, sbase, slimit := t.fixedCost()
	for i := range es {
		rs[i].Entry = es[i]
		if fromWalk(&es[i], &rs[i]) {
			continue
		}
		start := len(t.buf)
		t.buf = es[i].AppendPath(t.buf)
		// A path carried over to the next invocation keeps the cost it had
		// at its old place, never less than at its new one.
		n, sn := t.cost(t.buf[start:], len(t.ends))
		if len(t.ends) > 0 && (base+size+n > limit || sbase+ssize+sn > slimit) {
			flush(start)
		}
		t.ends = append(t.ends, len(t.buf))
		t.idx = append(t.idx, i)
		size += n
		ssize += sn
	}
	flush(len(t.buf))
}

// maxArgStrlen is the kernel's limit on any one argument (MAX_ARG_STRLEN,
// 32 pages), whatever the stack allows in all: the --shell script, which
// holds a reference per placeholder and path, is one argument.
const maxArgStrlen = 32 * 4096

// pointer is what the kernel counts for each argument besides its bytes and NUL.
const pointer = 8

// fixedCost returns the argument bytes an invocation takes before any path
// and the most it may take (the kernel counts each argument's bytes, its NUL
// and its pointer), and with --shell the same for the script alone, into
// which the arguments are joined with spaces.
func (t *Exec) fixedCost() (base, limit, sbase, slimit int) {
	limit, slimit = t.opt.ArgMax, t.opt.ArgMax
	if t.opt.Shell {
		slimit = maxArgStrlen - 1
		for k, a := range t.argv {
			if !t.tmpl[k].places {
				sbase += len(a)
			}
			sbase++ // the space after it
		}
		if !t.places {
			sbase += len(allArgs)
		}
		base = len("sh") + len("-c") + len(shellName) + 4*(1+pointer) + sbase
		return base, limit, sbase, slimit
	}
	for k, a := range t.argv {
		if !t.tmpl[k].places {
			base += len(a) + 1 + pointer
		}
	}
	return base, limit, 0, slimit
}

// cost returns what one path adds to an invocation, counted as fixedCost
// does: the path itself, or every argument holding a placeholder expanded for
// it, prefix and suffix included; with --shell, the references the script
// and the assignments the script gains for the path's place i and the values
// passed as parameters, and separately what the script gains.
func (t *Exec) cost(pb []byte, i int) (n, script int) {
	if !t.places {
		n = len(pb) + 1 + pointer
		if len(pb) > 0 && pb[0] == '-' {
			n += len("./")
		}
		return n, 0
	}
	p := string(pb)
	if t.opt.Shell {
		for k, s := range t.slots {
			n += len(s.value(p)) + 1 + pointer
			script += assignLen(1 + i*len(t.slots) + k)
		}
		for k := range t.tmpl {
			a := &t.tmpl[k]
			if !a.places {
				continue
			}
			script++ // the space between repetitions
			for _, pc := range a.pieces {
				if pc.slot < 0 {
					script += len(pc.lit)
				} else {
					script += refLen(1+i*len(t.slots)+pc.slot, pc.quoted)
				}
			}
		}
		return n + script, script
	}
	for k := range t.tmpl {
		a := &t.tmpl[k]
		if !a.places {
			continue
		}
		for _, pc := range a.pieces {
			if pc.slot < 0 {
				n += len(pc.lit)
			} else {
				n += len(t.slots[pc.slot].value(p))
			}
		}
		n += 1 + pointer
	}
	return n, 0
}

// outputGrace is how long output is still read after the command exited: a
// background process it started may hold its stdout or stderr open, and GNU
// parallel would wait for it forever.
const outputGrace = time.Second

// errHeldOpen is the note for a job whose output stayed open past outputGrace.
var errHeldOpen = errors.New("the command exited but a background process kept its output open; output after the exit discarded")

var copyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// run runs argv, which stays the caller's.
func (t *Exec) run(ctx context.Context, argv []string, r *Result) {
	if t.opt.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.opt.Timeout)
		defer cancel()
	}
	r.Exit = -1
	cmd := exec.CommandContext(ctx, argv[0])
	cmd.Args = argv // not copied, as CommandContext's variadic arguments would be
	// Its own process group, so a timeout or an interrupt kills what it started
	// too, not just the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		// And the command itself, should it have left its group: Wait
		// must end now, not after WaitDelay.
		return cmd.Process.Kill()
	}
	cmd.WaitDelay = time.Second
	var out, errOut io.Writer
	var lo, le *lineWriter
	if t.opt.Lines != nil {
		lo, le = &lineWriter{w: t.opt.Lines}, &lineWriter{w: t.opt.ErrLines}
		out, errOut = lo, le
	} else {
		r.Stdout, r.Stderr = new(Output), new(Output)
		out, errOut = r.Stdout, r.Stderr
	}
	// Our own pipes, not os/exec's: its Wait waits for every holder of their
	// write ends, a background process too, then fails with ErrWaitDelay.
	// Here Wait returns when the command exits, and the wait for its output
	// is separate and bounded (drain).
	outR, outW, err := os.Pipe()
	if err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("creating a pipe: %w", unwrapPathError(err))
		return
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		r.Status, r.Err = Failed, fmt.Errorf("creating a pipe: %w", unwrapPathError(err))
		return
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		r.Status, r.Err = Failed, err
		return
	}
	outDone, errDone := make(chan error, 1), make(chan error, 1)
	go copyOutput(out, outR, outDone)
	go copyOutput(errOut, errR, errDone)
	werr := cmd.Wait()
	// A timeout that comes after the exit only cuts the wait for output
	// short: the command's own status stands.
	ctxErr := ctx.Err()
	// Interrupted or timed out after the command exited: what the job left
	// running goes too, as it would have had the command not exited yet.
	// (While a member is alive the group keeps the job's id; with none left
	// the kill finds nothing, unless the pids wrapped around meanwhile.)
	leftKilled := false
	killLeft := func() { leftKilled = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) == nil || leftKilled }
	oerr, eerr := drain(ctx, outR, errR, outDone, errDone, killLeft)
	if t.opt.Timeout > 0 && ctx.Err() == nil {
		// --timeout bounds the job's whole process group: what the command
		// left running (its output closed, or held past outputGrace) is
		// killed when the timeout fires, and the job lasts until then.
		waitGroup(ctx, cmd.Process.Pid)
		if ctx.Err() != nil {
			killLeft()
			// Gone before the job is reported, as a job killed while
			// it runs is.
			gone, cancel := context.WithTimeout(context.Background(), killedGrace)
			waitGroup(gone, cmd.Process.Pid)
			cancel()
		}
	}
	if ctxErr == nil && errors.Is(ctx.Err(), context.Canceled) {
		ctxErr = ctx.Err() // interrupted meanwhile: the run is ending
	}
	if errors.Is(oerr, os.ErrDeadlineExceeded) || errors.Is(eerr, os.ErrDeadlineExceeded) {
		if ctxErr == nil {
			r.Note = errHeldOpen
		}
		if errors.Is(oerr, os.ErrDeadlineExceeded) {
			oerr = nil
		}
	}
	if ctxErr == nil && leftKilled {
		r.Note = fmt.Errorf("the command exited, but a process it started was still running at --timeout %s: killed", t.opt.Timeout)
	}
	if lo != nil {
		if err := lo.flush(); oerr == nil {
			oerr = err
		}
		le.flush()
	}
	if cmd.ProcessState != nil {
		r.Exit = cmd.ProcessState.ExitCode()
	}
	switch {
	case t.opt.Timeout > 0 && errors.Is(ctxErr, context.DeadlineExceeded):
		r.Status, r.Err = Failed, fmt.Errorf("timed out after %s: killed", t.opt.Timeout)
	case ctxErr != nil:
		r.Status, r.Err = Failed, ctxErr
	case r.Stdout.Err() != nil:
		r.Status, r.Err = Failed, r.Stdout.Err()
	case r.Stderr.Err() != nil:
		r.Status, r.Err = Failed, r.Stderr.Err()
	case oerr != nil:
		// --line-buffer: stdout failed (the run is stopping) or reading the
		// pipe did.
		r.Status, r.Err = Failed, oerr
	case werr == nil:
	default:
		var ee *exec.ExitError
		if errors.As(werr, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.Status, r.Err = Failed, fmt.Errorf("%s killed by signal %s", argv[0], signalName(ws.Signal()))
				return
			}
			r.Status, r.Err = Failed, fmt.Errorf("%s exited with status %d", argv[0], ee.ExitCode())
			return
		}
		r.Status, r.Err = Failed, werr
	}
}

// copyOutput copies a command's stdout or stderr from the pipe r to w until
// end of file, a read deadline (drain) or an error writing w; it then closes
// r, so that a writer still holding the pipe gets EPIPE, and sends the error.
func copyOutput(w io.Writer, r *os.File, done chan<- error) {
	buf := copyBufs.Get().(*[32 << 10]byte)
	var err error
	for {
		var n int
		n, err = r.Read(buf[:])
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				err = werr
				break
			}
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			break
		}
	}
	copyBufs.Put(buf)
	r.Close()
	done <- err
}

// drain waits for both copies to end once the command has exited: at once
// when every holder of the pipes has closed them, else for outputGrace, then
// the reads are cut short with a deadline (they fail with
// os.ErrDeadlineExceeded). When ctx ends (an interrupt, a timeout: the job's
// group was killed) what is in the pipes still comes out, which takes no
// time as the killed writers are gone, and the reads are cut within
// killedGrace: no wait on a child outlasts a signal. onDone is called then.
func drain(ctx context.Context, outR, errR *os.File, outDone, errDone <-chan error, onDone func()) (oerr, eerr error) {
	timer := time.NewTimer(outputGrace)
	defer timer.Stop()
	cut := func(at time.Time) {
		// On a file the copy has closed already this fails, harmlessly.
		if outDone != nil {
			outR.SetReadDeadline(at)
		}
		if errDone != nil {
			errR.SetReadDeadline(at)
		}
	}
	ctxDone := ctx.Done()
	for outDone != nil || errDone != nil {
		select {
		case oerr = <-outDone:
			outDone = nil
		case eerr = <-errDone:
			errDone = nil
		case <-timer.C:
			cut(time.Unix(1, 0))
		case <-ctxDone:
			ctxDone = nil
			onDone()
			cut(time.Now().Add(killedGrace))
		}
	}
	return oerr, eerr
}

// groupPoll is how often waitGroup looks whether a job's process group has
// ended: there is no event for it.
const groupPoll = 20 * time.Millisecond

// waitGroup waits until process group pgid has no member left or ctx ends.
func waitGroup(ctx context.Context, pgid int) {
	if syscall.Kill(-pgid, 0) != nil {
		return
	}
	tick := time.NewTicker(groupPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if syscall.Kill(-pgid, 0) != nil {
				return
			}
		}
	}
}

// killedGrace bounds the wait for output after a signal or timeout.
const killedGrace = 100 * time.Millisecond

func signalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(int(s))
}
