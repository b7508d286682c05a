package tasks

import (
	"bytes"
	"context"
	"errors"
	"hash"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"pbatch/manifest"
	"pbatch/walker"
)

// Audit verdicts: exactly these words, in text and JSON output.
const (
	VerdictOK       = "ok"
	VerdictModified = "modified" // content differs, and size or mtime changed: an edit
	VerdictDamaged  = "damaged"  // content differs, size and mtime did not: bit rot, tampering
	VerdictNew      = "new"      // on disk, not in the manifest
	VerdictMissing  = "missing"  // in the manifest, not on disk
	VerdictMoved    = "moved"    // missing at its old path, same content at a new one
)

type indexEntry struct {
	manifest.Entry
	seen     atomic.Bool // found at its own path by the walk
	consumed atomic.Bool // claimed as the old path of a moved file
}

// Index is a manifest held in memory for an audit: the only thing an audit
// holds, whatever the size of the tree.
type Index struct {
	entries  []*indexEntry // manifest order
	byPath   map[string]*indexEntry
	byDigest map[string][]*indexEntry // algorithm + digest
	alg      string                   // for files the manifest does not list
}

// ReadIndex loads a manifest for audit. Malformed records are returned as
// errors after the whole manifest is read, so the caller can report them all.
func ReadIndex(r io.Reader, opt manifest.Options) (*Index, []error, error) {
	ix := &Index{byPath: map[string]*indexEntry{}, byDigest: map[string][]*indexEntry{}, alg: opt.DefaultAlgorithm}
	mr := manifest.NewReader(r, opt)
	var bad []error
	for {
		e, err := mr.Next()
		if err == io.EOF {
			break
		}
		var le *manifest.LineError
		if errors.As(err, &le) {
			bad = append(bad, le)
			continue
		}
		if err != nil {
			return nil, bad, err
		}
		ie := &indexEntry{Entry: e}
		key := filepath.Clean(e.Name)
		if _, dup := ix.byPath[key]; dup {
			bad = append(bad, &manifest.LineError{Line: e.Line, Err: errors.New("path listed twice")})
			continue
		}
		ix.entries = append(ix.entries, ie)
		ix.byPath[key] = ie
		dk := e.Algorithm + ":" + string(e.Digest)
		ix.byDigest[dk] = append(ix.byDigest[dk], ie)
		if ix.alg == "" {
			ix.alg = e.Algorithm
		}
	}
	if ix.alg == "" {
		ix.alg = "sha256"
	}
	return ix, bad, nil
}

// Len is the number of files the manifest lists.
func (ix *Index) Len() int { return len(ix.entries) }

// Audit compares the files below the PATHs with an Index.
type Audit struct {
	ix    *Index
	roots []string // cleaned PATHs: only listed files below them can be missing
	ro    ReadOptions
}

// NewAudit returns the audit task for the given PATHs ("-" reads paths from
// stdin: then any listed file can be missing).
func NewAudit(ix *Index, roots []string, ro ReadOptions) *Audit {
	t := &Audit{ix: ix, ro: ro}
	for _, r := range roots {
		if r == "-" {
			t.roots = nil
			break
		}
		t.roots = append(t.roots, filepath.Clean(r))
	}
	return t
}

func (t *Audit) under(name string) bool {
	if t.roots == nil {
		return true
	}
	name = filepath.Clean(name)
	for _, r := range t.roots {
		if name == r || r == "." && !filepath.IsAbs(name) && name != ".." && !strings.HasPrefix(name, "../") ||
			strings.HasPrefix(name, r+"/") || r == "/" && filepath.IsAbs(name) {
			return true
		}
	}
	return false
}

func (t *Audit) NewWorker() Worker {
	return &auditWorker{t: t, rd: newReader(t.ro), hashes: map[string]hash.Hash{}}
}

type auditWorker struct {
	t      *Audit
	rd     reader
	hashes map[string]hash.Hash
}

func (w *auditWorker) hash(alg string) (hash.Hash, error) {
	h := w.hashes[alg]
	if h == nil {
		a, err := LookupAlgorithm(alg)
		if err != nil {
			return nil, err
		}
		h = a.New()
		w.hashes[alg] = h
	}
	h.Reset()
	return h, nil
}

func (w *auditWorker) Run(ctx context.Context, e *walker.Entry, r *Result) {
	path := e.Path()
	ie := w.t.ix.byPath[filepath.Clean(path)]
	alg := w.t.ix.alg
	if ie != nil {
		alg = ie.Algorithm
	}
	h, err := w.hash(alg)
	if err != nil {
		r.Status, r.Err = Failed, err
		return
	}
	if !w.rd.digest(ctx, e, alg, h, r) {
		if ie != nil && r.Status != OK && r.Status != Vanished && r.Err != nil && !errors.Is(r.Err, context.Canceled) {
			ie.seen.Store(true) // there, but unreadable: reported as a failure, not missing
		}
		return
	}
	sum := r.Digest()
	switch {
	case ie != nil:
		ie.seen.Store(true)
		r.Expected = ie.Digest
		switch {
		case bytes.Equal(sum, ie.Digest):
			r.Verdict = VerdictOK
		case ie.HasMeta && r.Size == ie.Size && ie.Mtime.Equal(time.Unix(r.Mtime.Unix())):
			r.Verdict = VerdictDamaged
		default:
			r.Verdict = VerdictModified
		}
	default:
		r.Verdict = VerdictNew
		// Moved: the same content is listed under a path that no longer exists.
		// Deciding now, by lstat, means an audit never holds the new files. An
		// old path whose lookup fails is not taken: Finish reports it.
		for _, old := range w.t.ix.byDigest[alg+":"+string(sum)] {
			if old.seen.Load() || old.consumed.Load() {
				continue
			}
			if there, err := present(old.Name); there || err != nil {
				continue
			}
			if old.consumed.CompareAndSwap(false, true) {
				r.Verdict, r.OldPath, r.Expected = VerdictMoved, old.Name, old.Digest
				break
			}
		}
	}
	if r.Verdict != VerdictOK {
		r.Status, r.Err = Failed, errors.New(r.Verdict)
	}
}

// Finish reports the listed files the walk did not find, in manifest order.
func (t *Audit) Finish(ctx context.Context) []Result {
	var rs []Result
	for _, ie := range t.ix.entries {
		if ctx.Err() != nil {
			break
		}
		if ie.seen.Load() || ie.consumed.Load() {
			continue
		}
		// Not walked is not missing: a filter, -x or --max-depth may have left it
		// out, or it lies outside the PATHs audited.
		if !t.under(ie.Name) {
			continue
		}
		there, err := present(ie.Name)
		if there {
			continue
		}
		if err != nil {
			rs = append(rs, Result{Entry: walker.NamedEntry(ie.Name, nil), Status: Failed, Err: err})
			continue
		}
		rs = append(rs, Result{
			Entry:    walker.NamedEntry(ie.Name, nil),
			Status:   Failed,
			Err:      errors.New(VerdictMissing),
			Verdict:  VerdictMissing,
			Expected: ie.Digest,
		})
	}
	return rs
}

// Flush releases the worker's cache transaction (see reader.Flush).
func (w *auditWorker) Flush() { w.rd.Flush() }
