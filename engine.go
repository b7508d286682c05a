package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"

	"pbatch/manifest"
	"pbatch/pool"
	"pbatch/tasks"
	"pbatch/walker"
)

// errBrokenPipe ends a run whose stdout reader went away.
var errBrokenPipe = errors.New("broken pipe")

// errStopped ends a run whose failure policy (--fail-fast, --max-errors) says so.
var errStopped = errors.New("stopped by the failure policy")

// errStdout ends a run whose results cannot be written.
var errStdout = errors.New("cannot write results")

// job is a batch of entries on its way from the walker to a worker; seq numbers
// batches in walk order so that -k can put results back in that order.
type job struct {
	seq     uint64
	entries []walker.Entry
}

type done struct {
	seq     uint64
	results []tasks.Result
}

// runEngine wires walker → pool → collector for one task:
//
//	walker (several readers) ─entries─► sequencer ─jobs─► pool (N workers) ─results─► collector (this goroutine)
//
// Every channel is bounded, so a slow stage throttles the ones before it and memory
// stays flat whatever the tree size. Each goroutine's owner and end is noted where
// it starts; runEngine returns only after all of them have ended.
func runEngine(parent context.Context, cmd string, paths []string, o *engineOpts, task tasks.Task, f formatter,
	stdin io.Reader, stdout, stderr io.Writer) error {
	if len(paths) == 0 && o.source == nil {
		return usagef(cmd, "no PATH given (use . for the current directory, - to read paths from stdin)")
	}
	dashes := 0
	for _, p := range paths {
		if p == "-" {
			dashes++
		}
	}
	if dashes > 1 {
		return usagef(cmd, "'-' (read paths from stdin) may be given only once")
	}
	filter, err := walker.NewFilter(o.include.Value(), o.exclude.Value())
	if err != nil {
		return usagef(cmd, "%s", err)
	}
	sel, err := o.selection(cmd)
	if err != nil {
		return err
	}
	// Last before any work: niceness, I/O class, and the lock.
	if err := applyProcess(parent, cmd, o, stderr); err != nil {
		return err
	}
	readers, dirHandles, maxRoots, err := fitFDs(cmd, o, task, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pbatch: %s\n", err)
		return exitError{exitFailed}
	}

	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)

	// Batch size adapts to the measured cost per file: large batches amortise
	// channel hand-offs for small files, single files keep both workers busy when
	// each file takes long.
	var costNs atomic.Int64
	batchSize := func() int {
		if o.batch > 0 {
			return o.batch
		}
		c := costNs.Load()
		if c <= 0 {
			// Nothing measured yet: single files, so that a few large files at
			// the start are spread over all workers.
			return 1
		}
		return int(min(max(2*int64(time.Millisecond)/c, 1), 256))
	}
	wopt := walker.Options{
		Follow:        o.follow,
		OneFileSystem: o.oneFS,
		MaxDepth:      o.maxDepth,
		Sorted:        o.keepOrder,
		Readers:       readers,
		DirHandles:    dirHandles,
		MaxRoots:      maxRoots,
		Filter:        filter,
		BatchSize:     batchSize,
		Dirs:          o.dirs || sel.types&(1<<walker.Dir) != 0,
		PreserveRoot:  o.preserveRoot,
		NoFollowRoots: o.noFollowRoots,
		Types:         sel.types,
		Stat:          sel.stat,
		NoAtime:       sel.stat != nil && o.timeField == "atime",
		Keep:          sel.keep,
		Named:         named(paths),
		Stdin:         slices.Contains(paths, "-"),
	}
	if po, ok := task.(interface{ PostOrder() bool }); ok {
		wopt.PostOrder = po.PostOrder()
	}

	// Queues hold batches; with exec -X's large fixed batches, the usual depths
	// would keep tens of thousands of entries (and their results) in flight,
	// which only costs memory and collection work: one spare batch suffices.
	depth := o.workers
	if o.batch > 256 {
		depth = 1
	}
	entries := make(chan []walker.Entry, depth)
	jobs := make(chan job, depth)
	results := make(chan done, 2*depth)
	// With -k, results wait in the collector until all earlier ones are out; the
	// semaphore bounds how many batches may be out of order at once.
	var window chan struct{}
	if o.keepOrder {
		window = make(chan struct{}, 4*o.workers+4)
	}

	if o.lines != nil {
		// The jobs write stdout themselves: the first error stops the run as
		// the collector's would, before another job is dispatched.
		o.lines.OnError = func(err error) {
			if errors.Is(err, syscall.EPIPE) {
				cancel(errBrokenPipe)
			} else {
				cancel(errStdout)
			}
		}
	}
	var failures atomic.Int64 // for --fail-fast and --max-errors, counted as they happen
	countFailure := func(r *tasks.Result) {
		if r.Status.IsFailure() && (o.failFast || o.maxErrors > 0) {
			if n := failures.Add(1); o.failFast || n >= int64(o.maxErrors) {
				cancel(errStopped)
			}
		}
	}
	var found atomic.Int64 // entries the walk has produced so far (progress, status)
	var walkDone atomic.Bool
	walkErr := make(chan error, 1)
	go func() { // walker: ends when every root is walked or ctx is done; closes entries
		if o.source != nil {
			walkErr <- o.source(ctx, batchSize, entries)
		} else {
			walkErr <- walker.Walk(ctx, rootSeq(paths, stdin, o.null), wopt, entries)
		}
		close(entries)
	}()
	go func() { // sequencer: ends when entries is closed; closes jobs
		defer close(jobs)
		// The walk is done for the display once every entry has been counted.
		defer walkDone.Store(true)
		var seq uint64
		for b := range entries {
			found.Add(int64(len(b)))
			if window != nil {
				select {
				case window <- struct{}{}:
				case <-ctx.Done():
					releaseAll(b)
					continue
				}
			}
			select {
			case jobs <- job{seq, b}:
				seq++
			case <-ctx.Done():
				releaseAll(b)
			}
		}
	}()
	go func() { // pool: ends when jobs is closed or ctx is done; closes results
		pool.Run(ctx, o.workers, jobs, results, func() func(context.Context, job) done {
			w := task.NewWorker()
			flusher, _ := w.(interface{ Flush() })
			return func(ctx context.Context, j job) done {
				if flusher != nil {
					defer flusher.Flush() // between batches a worker holds nothing
				}
				start := time.Now()
				res := newResults(len(j.entries))
				if bw, ok := w.(tasks.BatchWorker); ok {
					bw.RunBatch(ctx, j.entries, res)
					releaseAll(j.entries)
					for i := range res {
						countFailure(&res[i])
					}
					return done{j.seq, res}
				}
				for i := range j.entries {
					e := &j.entries[i]
					if ctx.Err() != nil {
						// Interrupted or stopped: the rest of the batch is not run.
						res = res[:i]
						break
					}
					res[i].Entry = *e
					w.Run(ctx, e, &res[i])
					countFailure(&res[i])
				}
				releaseAll(j.entries)
				if len(res) == 0 {
					return done{j.seq, res}
				}
				per := int64(time.Since(start)) / int64(len(res))
				old := costNs.Load()
				if old == 0 {
					costNs.Store(per)
				} else {
					costNs.Store(old + (per-old)/4)
				}
				return done{j.seq, res}
			}
		})
		// Batches the pool did not take after cancellation still hold roots.
		for j := range jobs {
			releaseAll(j.entries)
		}
		close(results)
	}()

	col := newCollector(stdout, stderr, f, o.quiet)
	col.meta, col.dryRun = o.meta, o.dryRun
	col.jsonOut = o.format == "json"
	col.noDiag = o.noDiag
	col.noBytes = cmd == "exec" || cmd == "list"
	col.start = time.Now()
	var tick <-chan time.Time
	if o.progress == "always" || (o.progress == "auto" && isTerminal(stderr)) {
		col.prog = newProgress(stderr)
		col.stdoutIsTTY = isTerminal(stdout)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	pending := map[uint64][]tasks.Result{}
	var next uint64
	onTick := func() { col.prog.update(col, found.Load(), walkDone.Load()) }
	onUSR1 := func() {
		col.prog.clear()
		io.WriteString(stderr, col.statusLine(found.Load(), walkDone.Load()))
	}
	for {
		// A steady stream of results must not starve the display or SIGUSR1.
		select {
		case <-tick:
			onTick()
		case <-usr1:
			onUSR1()
		default:
		}
		var d done
		var ok bool
		select {
		case d, ok = <-results:
		default:
			// Nothing ready: push out what is buffered so a reader sees results
			// as they come, while bursts still go out in large writes.
			col.flush()
			for waiting := true; waiting; {
				select {
				case d, ok = <-results:
					waiting = false
				case <-tick:
					onTick()
				case <-usr1:
					onUSR1()
				}
			}
		}
		if !ok {
			break
		}
		if window == nil {
			col.addAll(d.results)
			recycleResults(d.results)
		} else {
			pending[d.seq] = d.results
			for r, ok := pending[next]; ok; r, ok = pending[next] {
				col.addAll(r)
				recycleResults(r)
				delete(pending, next)
				next++
				<-window
			}
		}
		if col.werr != nil && ctx.Err() == nil {
			if col.werr == errBrokenPipe {
				cancel(errBrokenPipe)
			} else {
				cancel(errStdout)
			}
		}
	}
	// After cancellation some batches never ran: print what did, in order.
	for len(pending) > 0 {
		if r, ok := pending[next]; ok {
			col.addAll(r)
			delete(pending, next)
		}
		next++
	}
	if fin, ok := task.(tasks.Finisher); ok {
		col.addAll(fin.Finish(ctx))
	}
	col.flush()
	if fin, ok := f.(interface{ finish(stderr io.Writer) int64 }); ok {
		col.failed += fin.finish(stderr)
	}
	col.flush()
	srcErr := <-walkErr
	if o.lines != nil && col.werr == nil {
		if err := o.lines.Err(); err != nil {
			col.setErr(err)
		}
	}
	if col.werr == errBrokenPipe {
		return errBrokenPipe
	}
	if srcErr != nil && !errors.Is(srcErr, context.Canceled) {
		fmt.Fprintf(stderr, "pbatch: %s\n", srcErr)
		col.failed++
	}
	col.stop = errors.Is(context.Cause(ctx), errStopped)
	if !o.quiet && !o.noSummary {
		var in interrupted
		col.summary(errors.As(context.Cause(ctx), &in))
	}
	if col.werr != nil || col.failed > 0 {
		return exitError{exitFailed}
	}
	return nil
}

// releaseAll ends a batch: its entries' references are dropped and the slice
// goes back to the walker for reuse, so no entry of b may be used afterwards
// (results hold copies).
func releaseAll(b []walker.Entry) {
	walker.DoneAll(b)
	walker.Recycle(b)
}

// Result batches are recycled once the collector is done with them: they were
// the largest source of garbage (a Result is 360 bytes), and on small files
// collections cost more than the walk (exec -X: 72 -> 39 MB allocated and a
// third less wall time over 100k files).
var resultPool sync.Pool // *[]tasks.Result

func newResults(n int) []tasks.Result {
	if p, _ := resultPool.Get().(*[]tasks.Result); p != nil && cap(*p) >= n {
		return (*p)[:n]
	}
	rs := make([]tasks.Result, n)
	// Written before anything reads it: during a collection, the first store
	// of a pointer into fresh memory reads the old value (write barrier), the
	// kernel maps its shared zero page for that read, and the store then takes
	// a copy-on-write fault that flushes the TLB of every CPU running this
	// process. On exec -X's 1.4 MB batches that was 8% of the CPU; a write to
	// each page first costs one plain fault per page.
	step := max(1, os.Getpagesize()/int(unsafe.Sizeof(tasks.Result{})))
	for i := 0; i < n; i += step {
		rs[i].SumLen = 0
	}
	if n > 0 {
		rs[n-1].SumLen = 0 // the last page, which the step may have passed over
	}
	return rs
}

// recycleResults takes a batch the collector has finished with: no reference
// into it may remain (formats copy what they keep).
func recycleResults(rs []tasks.Result) {
	rs = rs[:cap(rs)]
	clear(rs)
	resultPool.Put(&rs)
}

// named returns the PATH arguments other than "-", in order.
func named(paths []string) []string {
	var ns []string
	for _, p := range paths {
		if p != "-" {
			ns = append(ns, p)
		}
	}
	return ns
}

// maxPathLine bounds one path read from stdin (PATH_MAX is 4096, but longer
// paths exist and are walked); a longer line is reported and skipped.
const maxPathLine = 1 << 20

// rootSeq yields the PATH arguments in order, with "-" replaced by the paths read
// from stdin (one per line, or NUL-separated with -0), streamed, never collected.
// A line too long to be a path is yielded with an error, as walker.Walk takes a
// failed root: reported, and the list goes on.
func rootSeq(paths []string, stdin io.Reader, null bool) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		for _, p := range paths {
			if p != "-" {
				if !yield(p, nil) {
					return
				}
				continue
			}
			sep := byte('\n')
			if null {
				sep = 0
			}
			lr := manifest.NewLineReader(stdin, sep, maxPathLine)
			for n := 1; ; n++ {
				rec, tooLong, err := lr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					yield("", fmt.Errorf("reading paths from stdin: %w", err))
					return
				}
				if tooLong {
					if !yield(truncatedPath(rec), fmt.Errorf("path line too long: more than %d bytes (line %d of stdin)", maxPathLine, n)) {
						return
					}
					continue
				}
				if len(rec) == 0 {
					continue
				}
				if !yield(string(rec), nil) {
					return
				}
			}
		}
	}
}

// truncatedPath is the start of an overlong path line, to name it in a message.
func truncatedPath(b []byte) string {
	const show = 64
	if len(b) <= show {
		return string(b)
	}
	n := show
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + "…"
}
