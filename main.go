// Command pbatch runs a task (hash, list, …) over every file below many directory
// trees with a fixed pool of workers. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"pbatch/tasks"
)

// Exit codes, documented in --help and README.md.
const (
	exitOK      = 0
	exitFailed  = 1 // at least one file failed, or stdout could not be written
	exitUsage   = 2
	exitSignal0 = 128 // + signal number
)

func main() {
	if os.Getenv("GOGC") == "" {
		// The live heap is small and flat (a few MiB whatever the tree); collecting
		// at 200% instead of 100% halves the GC work on small files (15-20% less
		// CPU measured) for ~4 MiB more RSS.
		debug.SetGCPercent(200)
	}
	if l := fdLimit(); l > 0 && l < minFDs {
		fmt.Fprintf(os.Stderr, "pbatch: open file limit (ulimit -n) is %d: too low, pbatch needs at least %d; raise it\n", l, minFDs)
		os.Exit(exitFailed)
	}
	code, sig := run(os.Args, os.Stdin, os.Stdout, os.Stderr)
	if sig != 0 {
		dieBy(sig)
	}
	os.Exit(code)
}

// dieBy re-raises sig with its default action so that the parent (a shell, cron,
// systemd) sees that pbatch was killed by it, as cp and rsync do.
func dieBy(sig syscall.Signal) {
	signal.Reset(sig)
	if sig == syscall.SIGPIPE {
		// Go ignores a SIGPIPE sent with kill; it dies by one only when a write
		// to stdout fails with EPIPE and nobody is notified. Cause that write.
		os.Stdout.Write([]byte{'\n'})
		os.Exit(exitSignal0 + int(sig))
	}
	syscall.Kill(os.Getpid(), sig)
	time.Sleep(time.Second) // the signal is delivered asynchronously
	os.Exit(exitSignal0 + int(sig))
}

// signalGrace is how long a run may take to stop after the first signal
// before it is ended as if by a second: aborting work in flight, removing
// temporary files and printing the summary take far less.
const signalGrace = 5 * time.Second

// interrupted is the cancellation cause when a signal stops the run.
type interrupted struct{ sig syscall.Signal }

func (i interrupted) Error() string { return "interrupted by " + signalName(i.sig) }

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGPIPE:
		return "SIGPIPE"
	}
	return s.String()
}

// run is main without the process exit, so tests can call it. It returns the exit
// code, or the signal the process must die by.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) (int, syscall.Signal) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)

	sigc := make(chan os.Signal, 2)
	for _, s := range []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		// A signal ignored by whoever started us (nohup, a background job) stays
		// ignored.
		if !signal.Ignored(s) {
			signal.Notify(sigc, s)
		}
	}
	// With SIGPIPE caught, a write to a closed stdout returns EPIPE instead of
	// killing the process, so the run can stop cleanly first.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	signal.Notify(usr1, syscall.SIGUSR1)
	// Past a file size limit (ulimit -f) a write must fail with EFBIG, which fails
	// that one file, instead of SIGXFSZ killing the process mid-run.
	signal.Ignore(syscall.SIGXFSZ)
	defer signal.Stop(sigc)
	done := make(chan struct{})
	defer close(done)
	go func() {
		var first syscall.Signal
		select {
		case s := <-sigc:
			first = s.(syscall.Signal)
			cancel(interrupted{first})
		case <-done:
			return
		}
		grace := time.NewTimer(signalGrace)
		defer grace.Stop()
		select {
		case s := <-sigc: // a second signal: the user means it
			tasks.HoldRemovals(time.Second)
			dieBy(s.(syscall.Signal))
		case <-grace.C:
			// Something does not give way to the cancellation: a write to a
			// stdout nobody reads, a file system that does not answer. The
			// first signal must still end the run (SAFETY 26).
			// stderr may be the stuck pipe too (2>&1): the line gets a moment,
			// not the power to stop the exit.
			said := make(chan struct{})
			go func() {
				fmt.Fprintf(stderr, "pbatch: still running %v after %s: exiting\n", signalGrace, signalName(first))
				close(said)
			}()
			select {
			case <-said:
			case <-time.After(100 * time.Millisecond):
			}
			tasks.HoldRemovals(time.Second)
			dieBy(first)
		case <-done:
		}
	}()

	if n := len(args); n > 1 && args[n-1] == "--generate-bash-completion" {
		complete(args[1:n-1], stdout)
		return exitOK, 0
	}
	// A read of stdin that nobody writes to must end on the first signal too.
	stdin = stdinReader(ctx, stdin)
	err := newApp(stdin, stdout, stderr).RunContext(ctx, reorderArgs(args))
	var code int
	var ue usageError
	var ee exitError
	switch {
	case err == nil, errors.Is(err, errBrokenPipe):
		code = exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "pbatch: %s\n", ue.msg)
		if ue.cmd != "" {
			fmt.Fprintf(stderr, "Try 'pbatch %s --help' for more information.\n", ue.cmd)
		} else {
			fmt.Fprintln(stderr, "Try 'pbatch --help' for more information.")
		}
		code = exitUsage
	case errors.As(err, &ee):
		code = ee.code
	default:
		fmt.Fprintf(stderr, "pbatch: %s\n", err)
		code = exitFailed
	}
	if errors.Is(err, errBrokenPipe) {
		// The reader of stdout went away (pbatch hash d | head -1): end as quietly
		// as coreutils do, by the signal the write would have raised.
		return exitSignal0 + int(syscall.SIGPIPE), syscall.SIGPIPE
	}
	var in interrupted
	if errors.As(context.Cause(ctx), &in) {
		return exitSignal0 + int(in.sig), in.sig
	}
	return code, 0
}

// usageError makes run print a one-line message and a hint, and exit 2.
type usageError struct{ cmd, msg string }

func (e usageError) Error() string { return e.msg }

func usagef(cmd, format string, a ...any) error {
	return usageError{cmd: cmd, msg: fmt.Sprintf(format, a...)}
}

// exitError carries an exit code whose message, if any, was already printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }
