// Package tasks holds the per-file work pbatch can run. Each task is one file
// here and one entry in main's command table.
package tasks

import (
	"context"
	"errors"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// Task is one kind of per-file work, validated by its constructor.
type Task interface {
	// NewWorker is called once per pool goroutine. The Worker it returns is used
	// by that goroutine only, so it may keep buffers and hash state between files.
	NewWorker() Worker
}

// FDUser is a Task whose workers may each hold more than one file descriptor
// at once (the others hold at most one); the engine fits the worker count
// into the open-file limit with it.
type FDUser interface {
	FDsPerWorker() int
}

// Worker processes one entry at a time and fills in r. It must watch ctx so that
// a cancelled run aborts files in flight.
type Worker interface {
	Run(ctx context.Context, e *walker.Entry, r *Result)
}

// Status is the outcome for one entry.
type Status uint8

const (
	OK       Status = iota
	Failed          // counts as a failure: exit 1
	Skipped         // not processed on purpose: symlink, special file, loop
	Changed         // modified while being processed: counts as a failure
	Vanished        // listed, then gone before it was opened: a note
)

func (s Status) String() string {
	return [...]string{"ok", "failed", "skipped", "changed", "vanished"}[s]
}

// IsFailure reports whether the status makes the run exit 1.
func (s Status) IsFailure() bool { return s == Failed || s == Changed }

// Result is what a worker reports for one entry. The collector owns it once sent.
type Result struct {
	Entry  walker.Entry
	Status Status
	Err    error         // reason, for every status but OK
	Size   int64         // bytes read
	Mtime  unix.Timespec // from the fstat before reading: an int64 of ns would wrap past 2262
	Sum    [64]byte
	SumLen uint8

	// Metadata tasks (chmod, chown): Modified is true when the entry was (or,
	// with --dry-run, would be) changed from Old to New: mode bits in Old[0], or
	// uid in [0] and gid in [1].
	Modified bool
	Old, New [2]uint32
	// exec: the command's exit status (-1 if it did not exit) and, unless
	// streamed with --line-buffer, its captured output.
	Exit           int
	Stdout, Stderr *Output
	// Note is reported on stderr whatever the status, without failing the
	// file (exec: output cut short after the command exited).
	Note error

	// audit: the verdict (ok, modified, damaged, new, missing, moved), the
	// manifest's digest, and for moved the path the manifest listed.
	Verdict  string
	Expected []byte
	OldPath  string

	// compress, decompress: the name written next to the input, and its size.
	Output  string
	OutSize int64
}

// BatchWorker is a Worker that handles a whole batch at once (exec -X); it fills
// rs[i] for es[i] and does not call Done.
type BatchWorker interface {
	RunBatch(ctx context.Context, es []walker.Entry, rs []Result)
}

// Finisher is a Task with work left after every entry was run: Finish is called
// once, after the pool has stopped, and returns the remaining results.
type Finisher interface {
	Finish(ctx context.Context) []Result
}

// Digest is the computed digest, empty unless Status is OK.
func (r *Result) Digest() []byte { return r.Sum[:r.SumLen] }

// ErrChanged reports a file whose size, mtime or ctime changed while it was read.
var ErrChanged = errors.New("file changed while being read")

// fromWalk fills r from a walk-level error or a non-file entry and reports
// whether the entry needs no further work.
func fromWalk(e *walker.Entry, r *Result) bool {
	switch {
	case e.Err == nil:
	case errors.Is(e.Err, walker.ErrVanished):
		r.Status, r.Err = Vanished, e.Err
		return true
	case errors.Is(e.Err, walker.ErrVisited), errors.Is(e.Err, walker.ErrDangling),
		errors.Is(e.Err, walker.ErrSeen), errors.Is(e.Err, walker.ErrSeenLimit), errors.Is(e.Err, walker.ErrVisitLimit):
		r.Status, r.Err = Skipped, e.Err
		return true
	default:
		r.Status, r.Err = Failed, e.Err
		return true
	}
	if e.Type != walker.File {
		r.Status, r.Err = Skipped, skipReason(e.Type)
		return true
	}
	return false
}

type skipError string

func (s skipError) Error() string { return string(s) }

func skipReason(t walker.Type) error {
	return skipError("skipped: " + t.String())
}
