package tasks

import (
	"bytes"
	"context"
	"errors"
	"hash"
	"strings"

	"golang.org/x/sys/unix"

	"pbatch/manifest"
	"pbatch/walker"
)

// CheckItem is what a manifest says of one record; it travels in Entry.Aux.
type CheckItem struct {
	Manifest string // as named on the command line ("-" for stdin)
	Index    int    // which manifest argument, from 0
	Entry    manifest.Entry
	Err      error // the record is malformed or names an unsupported algorithm
	Open     error // the manifest itself could not be opened or read
}

var (
	// ErrMismatch is a digest that differs from the manifest's.
	ErrMismatch = errors.New("computed checksum did NOT match")
	// ErrMalformedLine marks a record that is not a checksum line.
	ErrMalformedLine = errors.New("improperly formatted checksum line")
	// ErrIgnoredMissing marks a missing file under --ignore-missing.
	ErrIgnoredMissing = skipError("missing, ignored")
)

// Check verifies files against manifest records under the same safety model as
// hash: opened without blocking, only regular files read, read to EOF, fstat
// compared before and after.
type Check struct {
	ignoreMissing bool
	strict        bool
	ro            ReadOptions
}

// NewCheck returns the check task. Names in a manifest are opened as named, as
// coreutils does.
func NewCheck(ignoreMissing, strict bool, ro ReadOptions) *Check {
	ro.Follow = true
	return &Check{ignoreMissing: ignoreMissing, strict: strict, ro: ro}
}

func (t *Check) NewWorker() Worker {
	return &checkWorker{t: t, rd: newReader(t.ro), hashes: map[string]hash.Hash{}}
}

type checkWorker struct {
	t      *Check
	rd     reader
	hashes map[string]hash.Hash // one state per algorithm, reused
}

func (w *checkWorker) Run(ctx context.Context, e *walker.Entry, r *Result) {
	item, _ := e.Aux.(*CheckItem)
	if item == nil {
		fromWalk(e, r)
		return
	}
	if item.Open != nil {
		r.Status, r.Err = Failed, item.Open
		return
	}
	if item.Err != nil {
		r.Status, r.Err = Skipped, item.Err
		if w.t.strict {
			r.Status = Failed
		}
		return
	}
	h := w.hashes[item.Entry.Algorithm]
	if h == nil {
		alg, err := LookupAlgorithm(item.Entry.Algorithm)
		if err != nil {
			r.Status, r.Err = Failed, err
			return
		}
		h = alg.New()
		w.hashes[item.Entry.Algorithm] = h
	}
	if !w.rd.digest(ctx, e, item.Entry.Algorithm, h, r) {
		if w.t.ignoreMissing && errors.Is(r.Err, unix.ENOENT) {
			r.Status, r.Err = Skipped, ErrIgnoredMissing
		} else if r.Status == Skipped || r.Status == Vanished {
			// A listed file that cannot be read fails the check. Directories
			// are named as coreutils names them; FIFOs and devices are never
			// opened for reading (one could block forever).
			r.Status = Failed
			switch {
			case r.Err == skipReason(walker.Dir):
				r.Err = unix.EISDIR
			case r.Status == Failed && r.Err != nil && strings.HasPrefix(r.Err.Error(), "skipped: "):
				r.Err = errors.New("not a regular file: not read")
			}
		}
		return
	}
	if !bytes.Equal(r.Digest(), item.Entry.Digest) {
		r.Status, r.Err = Failed, ErrMismatch
	}
}

// Flush releases the worker's cache transaction (see reader.Flush).
func (w *checkWorker) Flush() { w.rd.Flush() }
