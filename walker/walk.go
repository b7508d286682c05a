package walker

import (
	"context"
	"errors"
	"iter"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options controls a walk. The zero value walks everything below the roots,
// does not follow symlinks and does not emit directories.
type Options struct {
	Follow        bool    // -L: follow symlinks, even out of the tree; loops are cut
	OneFileSystem bool    // -x: do not descend into directories on other devices
	MaxDepth      int     // as find -maxdepth; negative means no limit
	Dirs          bool    // emit directories as entries too
	Sorted        bool    // one reader, names in byte order: the same tree gives the same order
	Readers       int     // directories read at once when not Sorted; default 4
	Filter        *Filter // nil selects everything
	// PreserveRoot refuses every directory that is "/" by identity (dev, ino),
	// as a PATH or met in the walk (a bind mount of "/" has the tree's device):
	// for tasks that change things.
	PreserveRoot  bool
	NoFollowRoots bool // a PATH that is a symlink is an entry itself, not followed (chown -h)
	// PostOrder emits each directory that is read (Dirs) after everything
	// below it, and only once every entry below it is Done: a task that may
	// lock itself out of a directory (chmod u-x) changes it last. What waits
	// is bounded by the depth and the directories queued, not their number.
	// Sorted, the walk waits at each directory for the entries below it.
	PostOrder bool
	// Named are the PATHs given as arguments, as the roots yield them (the
	// others are read from stdin): resolved before the walk, so that what one
	// of them names is left out of the others' walks (see overlap.go).
	Named []string
	// Stdin says some PATHs are read from stdin: any number, in any order
	// (`find -type d | pbatch hash -`), so one may lie below another that is
	// being walked or already was. Every directory read is then remembered,
	// so that each is read once, up to maxStdinSeen of them (a note past that).
	Stdin bool
	// Types, when not zero, emits only entries of these types (1<<File, 1<<Dir, …);
	// directories are walked whatever it says.
	Types uint8
	// Stat, when set, is asked with each non-directory entry's lstat (and, with
	// Dirs, each directory's) and drops the entry when it returns false: age and
	// size selection. It costs one fstatat per entry. It must not keep st.
	Stat func(st *unix.Stat_t) bool
	// NoAtime reads directories without setting their access time, where
	// the kernel allows it (owner or CAP_FOWNER): a selection by atime that
	// a task checks again on what it opens would see the walk's own read.
	NoAtime bool
	// Keep, when set, drops a non-directory entry when it returns false
	// (sharding by path). It must not keep e or its Rel.
	Keep func(e *Entry) bool
	// BatchSize is asked for the size of each batch as it is started, so that the
	// consumer can trade per-batch overhead against load balance; default 64.
	BatchSize func() int
	// DirHandles bounds the directories kept open for the entries in flight
	// (opening an entry then needs no path lookup from the root): 0 picks from
	// the descriptor limit, negative keeps none.
	DirHandles int
	// MaxRoots bounds the directory PATHs open at once (each stays open while
	// entries below it are in flight; paths read from stdin can be many); 0
	// means no bound.
	MaxRoots int
}

func (o *Options) setDefaults() {
	if o.Readers <= 0 {
		o.Readers = 4
	}
	if o.BatchSize == nil {
		o.BatchSize = func() int { return 64 }
	}
}

// ErrRoot refuses a directory that is "/" (PreserveRoot), by whatever path it
// was reached.
var ErrRoot = errors.New("refusing to operate recursively on '/' (use --no-preserve-root to override)")

// ErrSymlinkInPath is returned when a path below a root turned into a symlink (or
// "..") after it was listed: opening it would leave the tree.
var ErrSymlinkInPath = errors.New("not followed: path now contains a symbolic link")

// Walk sends every entry below roots to out, in batches, and returns when all roots
// are walked or ctx is done. A root yielded with an error and a path is one
// failed entry; with an empty path the error ends the walk. Directories are read by several goroutines at once
// (one when Sorted), all of which have returned when Walk returns. Per-path problems
// are entries with Err set; the returned error is ctx's or the root source's. Walk
// does not close out. The receiver owns each batch and must call Done on every entry.
func Walk(ctx context.Context, roots iter.Seq2[string, error], opt Options, out chan<- []Entry) error {
	opt.setDefaults()
	handles := opt.DirHandles
	if handles == 0 {
		handles = dirHandleBudget()
	}
	w := &walk{ctx: ctx, opt: opt, out: out, live: make(map[devIno]int32), dirSem: make(chan struct{}, max(handles, 0))}
	w.visitAll = opt.Follow || opt.Stdin
	if !w.visitAll {
		var ok bool
		w.binds, ok = bindDevices()
		w.visitAll = !ok
	}
	if w.visitAll || w.binds != nil {
		w.visited = make(map[devIno]struct{})
	}
	if opt.PostOrder {
		w.open = make(map[*dirNode]struct{})
	}
	if opt.MaxRoots > 0 {
		w.rootSem = make(chan struct{}, opt.MaxRoots)
	}
	if opt.PreserveRoot {
		var st unix.Stat_t
		if err := unix.Stat("/", &st); err != nil {
			return err // nothing could be refused: change nothing
		}
		w.slash = devIno{uint64(st.Dev), st.Ino}
	}
	w.cond.L = &w.mu
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	defer stop()

	var wg sync.WaitGroup
	if !opt.Sorted {
		for range opt.Readers {
			wg.Go(w.reader)
		}
	}
	w.ov.resolve(opt.Named, opt.NoFollowRoots)
	// Only a walk that emits every file below its PATH may stand in for a
	// file PATH read from stdin below it.
	w.ov.whole, w.ov.maxDepth = opt.Filter.empty() && !opt.OneFileSystem, opt.MaxDepth
	w.ov.root = unix.Geteuid() == 0
	feeder := w.newEmitter()
	var srcErr error
	ni := 0 // the next of opt.Named to come
	for p, err := range roots {
		if err != nil && p != "" {
			// One bad root (a path line too long to read): reported, and the
			// roots after it are still walked.
			feeder.add(Entry{Root: &Root{Path: p, fd: -1}, Err: err})
			continue
		}
		if err != nil {
			srcErr = err
			break
		}
		if ctx.Err() != nil {
			break
		}
		named := -1
		if ni < len(opt.Named) && p == opt.Named[ni] {
			named = ni
			ni++
		}
		w.feed(p, named, feeder)
	}
	feeder.flush()
	w.mu.Lock()
	w.fed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	wg.Wait()
	// Directories left unemitted after cancellation hold their root, as do
	// jobs left.
	w.mu.Lock()
	for n := range w.open {
		n.entry.Root.release()
	}
	clear(w.open)
	w.mu.Unlock()
	for _, j := range w.stack {
		if j.parent != nil {
			j.parent.release()
		}
		j.root.release()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return srcErr
}

type devIno struct{ dev, ino uint64 }

type dirJob struct {
	root   *Root
	rel    string
	depth  int
	parent *dirHandle // open parent to open rel relative to, if any (held)
	up     *dirNode   // the directory it was listed in (held), nil for a root
	inline int        // directories above it being read depth first (queue full)
}

// listing is a directory job as readDir reads it.
type listing struct {
	dirJob
	self *dirNode // once it is being read
	// claimed are the names in it that are non-directory PATHs of their own,
	// left out of this walk.
	claimed []string
}

// dirNode is a directory being walked, alive while it or anything below it
// is still to be read: the chain up to the root is its path, for loop checks.
type dirNode struct {
	id   devIno
	up   *dirNode
	refs atomic.Int64 // its own read, each subdirectory job listed in it, and (PostOrder) each entry below not yet done

	// PostOrder: the walk (set only then), the directory's own entry and
	// whether to emit it; the node holds a reference on the entry's root.
	w     *walk
	entry Entry
	emit  bool
}

// enter registers the directory read by job as live and reports false if it is
// one of its own ancestors: a loop (a bind mount of a directory below itself).
// Only live directories are kept, so memory follows the depth and the
// directories waiting to be read, not all directories walked.
func (w *walk) enter(job *listing, id devIno) bool {
	w.liveMu.Lock()
	hit := w.live[id] > 0
	if !hit {
		w.live[id]++
	}
	w.liveMu.Unlock()
	if hit {
		// Live somewhere: an ancestor, or a duplicate being walked at once
		// in another branch (a bind mount elsewhere), which is read as any
		// other path.
		for n := job.up; n != nil; n = n.up {
			if n.id == id {
				return false
			}
		}
		w.liveMu.Lock()
		w.live[id]++
		w.liveMu.Unlock()
	}
	n := &dirNode{id: id, up: job.up} // takes over job's reference on up
	n.refs.Store(1)
	if w.opt.PostOrder {
		n.w = w
		n.entry = Entry{Root: job.root, Rel: job.rel, Type: Dir, Depth: job.depth}
		job.root.acquire()
		w.mu.Lock()
		w.open[n] = struct{}{}
		w.mu.Unlock()
	}
	job.self = n
	return true
}

// leave drops one reference on n: once nothing below it is left to read, it
// is no longer live, and neither, in turn, may be its parent.
func (w *walk) leave(n *dirNode, k int64) {
	for n != nil {
		switch r := n.refs.Add(-k); {
		case r == 1 && n.w != nil && w.opt.Sorted:
			// Only its own reference is left: wake readDir waiting to emit it.
			w.mu.Lock()
			w.cond.Broadcast()
			w.mu.Unlock()
			return
		case r != 0:
			return
		}
		w.forget(n)
		if n.w != nil {
			// Its entry goes out from a reader (this may be a worker, which
			// must not block on the walk's output), which then leaves n.up.
			w.mu.Lock()
			w.ready = append(w.ready, n)
			w.cond.Broadcast()
			w.mu.Unlock()
			return
		}
		n, k = n.up, 1
	}
}

func (w *walk) forget(n *dirNode) {
	w.liveMu.Lock()
	if w.live[n.id]--; w.live[n.id] == 0 {
		delete(w.live, n.id)
	}
	w.liveMu.Unlock()
}

// postParent is what an entry for the directory of job, emitted at once,
// holds with PostOrder: its parent's node, emitted after it.
func (w *walk) postParent(job *listing) *dirNode {
	if job.up != nil && job.up.w != nil {
		return job.up
	}
	return nil
}

// finishSorted emits a directory read by a sorted walk once everything below
// it is done (PostOrder): in place, so that the order stays the same.
func (w *walk) finishSorted(n *dirNode, em *emitter) {
	em.flush() // the entries below go to the workers, whose end it waits for
	w.mu.Lock()
	for n.refs.Load() > 1 && w.ctx.Err() == nil {
		w.cond.Wait()
	}
	w.mu.Unlock()
	if w.ctx.Err() != nil {
		return // Walk releases its root
	}
	n.refs.Store(0)
	w.forget(n)
	w.emitPost(n, em)
}

// emitPost emits a directory whose subtree is done (PostOrder), as an entry
// listed in its parent, and drops its reference on the parent.
func (w *walk) emitPost(n *dirNode, em *emitter) {
	w.mu.Lock()
	delete(w.open, n)
	w.cond.Broadcast() // the walk may be over
	w.mu.Unlock()
	if n.emit {
		e := n.entry
		e.node = n.up
		em.add(e)
		em.takeRefs()
	}
	n.entry.Root.release()
	w.leave(n.up, 1)
}

type walk struct {
	ctx context.Context
	opt Options
	out chan<- []Entry

	mu      sync.Mutex
	cond    sync.Cond
	stack   []dirJob // directories waiting to be read; LIFO keeps it short
	pending int      // jobs pushed and not yet finished
	fed     bool     // every root has been fed

	ready []*dirNode            // PostOrder: directories done, to emit (under mu)
	open  map[*dirNode]struct{} // PostOrder: directories read and not yet emitted (under mu)

	liveMu sync.Mutex
	live   map[devIno]int32 // directories being walked (see dirNode), by how many nodes

	visitMu   sync.Mutex
	visited   map[devIno]struct{} // directories read, so each is read once (see remembers)
	visitFull bool                // Stdin without -L: visited reached maxStdinSeen
	visitAll  bool                // -L or Stdin: every directory read goes in visited
	binds     map[uint64]struct{} // else only those on these devices (see bindDevices)

	slash devIno // "/" by identity, with PreserveRoot
	ov    overlap

	dirSem  chan struct{} // bounds the directory descriptors kept for entries in flight
	rootSem chan struct{} // bounds the directory roots open at once (nil: no bound)
}

// MaxDirHandles bounds the directories kept open for their entries; past it,
// entries are opened from the root with their whole path.
const MaxDirHandles = 64

// dirHandleBudget keeps held directories to a small share of the descriptor
// limit, so that a low `ulimit -n` leaves room for the workers' files (none
// are held when the limit is very low).
func dirHandleBudget() int {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return int(min(MaxDirHandles, max(0, (int64(rl.Cur)-64)/4)))
}

// emitter collects one goroutine's entries into batches.
type emitter struct {
	w     *walk
	batch []Entry
	limit int // the size asked for this batch (a recycled one may be larger)
	refd  int // entries of batch whose references are taken
	// st is the lstat handed to Options.Stat: one per goroutine, since a
	// local passed to a func value would be one allocation per entry.
	st unix.Stat_t
}

func (w *walk) newEmitter() *emitter { return &emitter{w: w} }

func (em *emitter) add(e Entry) {
	if e.Root != nil && e.Depth < e.Root.shadow {
		return // the walk of a PATH above emits it
	}
	if em.batch == nil {
		em.limit = max(em.w.opt.BatchSize(), 1)
		em.batch = newBatch(em.limit)
	}
	// References are taken once per run of entries sharing a root and a
	// directory (see DoneAll); a run ends when either changes, and before the
	// batch leaves, so the caller's own references cover the entries until then.
	if len(em.batch) > 0 {
		last := &em.batch[len(em.batch)-1]
		if last.Root != e.Root || last.dir != e.dir || last.node != e.node {
			em.takeRefs()
		}
	}
	em.batch = append(em.batch, e)
	if len(em.batch) >= em.limit {
		em.flush()
	}
}

// takeRefs takes the references of the entries added since the last call.
func (em *emitter) takeRefs() {
	for em.refd < len(em.batch) {
		e := &em.batch[em.refd]
		j := em.refd + 1
		for j < len(em.batch) && em.batch[j].Root == e.Root && em.batch[j].dir == e.dir && em.batch[j].node == e.node {
			j++
		}
		n := int64(j - em.refd)
		e.Root.refs.Add(n)
		if e.dir != nil {
			e.dir.refs.Add(n)
		}
		if e.node != nil {
			e.node.refs.Add(n)
		}
		em.refd = j
	}
}

func (em *emitter) flush() {
	if len(em.batch) == 0 {
		return
	}
	em.takeRefs()
	em.refd = 0
	b := em.batch
	em.batch = nil
	select {
	case em.w.out <- b:
	case <-em.w.ctx.Done():
		DoneAll(b)
	}
}

// Batches are recycled (see Recycle): on small files they were the largest
// source of garbage after the results, and collections cost more than the walk.
var batches sync.Pool // *[]Entry, empty

func newBatch(n int) []Entry {
	if p, _ := batches.Get().(*[]Entry); p != nil && cap(*p) >= n {
		return (*p)[:0]
	}
	b := make([]Entry, n)
	// Written page by page before anything reads it, as main's result batches
	// are (see newResults there): no zero-page mapping, no TLB flush later.
	step := max(1, os.Getpagesize()/int(unsafe.Sizeof(Entry{})))
	for i := 0; i < n; i += step {
		b[i].Depth = 0
	}
	if n > 0 {
		b[n-1].Depth = 0 // the last page, which the step may have passed over
	}
	return b[:0]
}

// Recycle gives a batch back for reuse once nothing refers to its entries any
// more (after DoneAll, the entries copied out).
func Recycle(b []Entry) {
	b = b[:cap(b)]
	clear(b) // drop the references to roots, directories and names
	b = b[:0]
	batches.Put(&b)
}

// feed turns one PATH argument into a root. Arguments are resolved as named, following
// symlinks (as find -H does): the user chose them. What is below them is not.
func (w *walk) feed(path string, named int, em *emitter) {
	if path == "" {
		em.add(Entry{Root: &Root{Path: path, fd: -1}, Err: unix.ENOENT})
		return
	}
	var st unix.Stat_t
	stat := unix.Stat
	if w.opt.NoFollowRoots {
		stat = unix.Lstat
	}
	// A named PATH was looked at before the walk; age and size selections
	// need the whole stat, taken now.
	if w.opt.Stat != nil || !w.ov.stat(named, &st) {
		if err := stat(path, &st); err != nil {
			em.add(Entry{Root: &Root{Path: path, fd: -1}, Err: err})
			return
		}
	}
	// '/' is refused each time it is named, not noted as a repeat.
	slash := w.opt.PreserveRoot && st.Ino == w.slash.ino && uint64(st.Dev) == w.slash.dev
	var shadow int
	if named < 0 {
		var covered bool
		if covered, shadow = w.ov.below(path, &st); covered {
			return // a walk emits it: processed once, and not a repeat to note
		}
	}
	seen, limit := false, false
	if !slash {
		seen, limit = w.ov.repeat(path, named, &st)
	}
	if limit {
		em.add(Entry{Root: &Root{Path: "-", fd: -1}, Err: ErrSeenLimit})
	}
	if seen {
		em.add(Entry{Root: &Root{Path: path, fd: -1}, Type: typeOfMode(st.Mode), Err: ErrSeen})
		return
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		e := Entry{Root: &Root{Path: path, fd: -1}, Type: typeOfMode(st.Mode)}
		if (w.opt.Types != 0 && w.opt.Types&(1<<e.Type) == 0) || (w.opt.Keep != nil && !w.opt.Keep(&e)) ||
			(w.opt.Stat != nil && !w.opt.Stat(&st)) {
			return
		}
		em.add(e)
		return
	}
	w.ov.claimFiles() // before any directory is read
	if w.rootSem != nil {
		// The entries this emitter holds may be what keeps other roots open.
		em.flush()
		select {
		case w.rootSem <- struct{}{}:
		case <-w.ctx.Done():
			return
		}
	}
	fail := func(err error) {
		if w.rootSem != nil {
			<-w.rootSem
		}
		em.add(Entry{Root: &Root{Path: path, fd: -1}, Type: Dir, Err: err})
	}
	fd, err := RetryOpen(func() (int, error) {
		return unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err == nil {
		w.noAtime(fd)
		err = unix.Fstat(fd, &st)
	}
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		fail(err)
		return
	}
	if w.ov.replaced(named, &st) {
		// The other PATHs' walks left out the directory this name held when
		// the run began; now it holds another, so that one may have been
		// walked by nobody. Said, not silent; the new one is walked.
		em.add(Entry{Root: &Root{Path: path, fd: -1}, Type: Dir, Err: ErrReplaced})
	}
	if !w.opt.Follow {
		w.ov.addDirPath(path) // its walk has begun: paths below it are its to emit
	}
	root := &Root{Path: path, fd: fd, dev: st.Dev, ino: st.Ino, sem: w.rootSem, shadow: shadow}
	if noOpenat2.Load() {
		if root.os, err = os.OpenRoot(procFd(fd)); err != nil {
			unix.Close(fd)
			fail(err)
			return
		}
	}
	root.acquire() // held by the job until the root directory has been read
	job := dirJob{root: root}
	if w.opt.Sorted {
		w.readDir(job, em, make([]byte, scratchSize))
		root.release()
		return
	}
	em.flush() // entries of earlier file roots should not wait for this tree
	w.mu.Lock()
	for len(w.stack) >= 2*w.opt.Readers && w.ctx.Err() == nil {
		w.cond.Wait() // bound the roots read ahead from stdin
	}
	w.stack = append(w.stack, job)
	w.pending++
	w.cond.Signal()
	w.mu.Unlock()
}

const scratchSize = 32 << 10

func (w *walk) reader() {
	em := w.newEmitter()
	scratch := make([]byte, scratchSize)
	for {
		job, post, ok := w.next(em)
		if !ok {
			em.flush()
			return
		}
		if post != nil {
			w.emitPost(post, em)
			continue
		}
		w.readDir(job, em, scratch)
		job.root.release()
		w.mu.Lock()
		w.pending--
		w.cond.Broadcast() // wakes idle readers at the end, and a waiting feeder
		w.mu.Unlock()
	}
}

// next returns a directory to read, or (PostOrder) one to emit.
func (w *walk) next(em *emitter) (dirJob, *dirNode, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Directories done go out first: they are what PostOrder holds.
	if len(w.ready) > 0 && w.ctx.Err() == nil {
		n := w.ready[len(w.ready)-1]
		w.ready = w.ready[:len(w.ready)-1]
		return dirJob{}, n, true
	}
	for len(w.stack) == 0 {
		if w.ctx.Err() != nil || (w.pending == 0 && w.fed && len(w.open) == 0) {
			return dirJob{}, nil, false
		}
		if len(w.ready) > 0 {
			n := w.ready[len(w.ready)-1]
			w.ready = w.ready[:len(w.ready)-1]
			return dirJob{}, n, true
		}
		if len(em.batch) > 0 {
			// Nothing to read right now: hand over what we hold before sleeping,
			// so workers never wait on entries parked in an idle reader.
			w.mu.Unlock()
			em.flush()
			w.mu.Lock()
			continue
		}
		w.cond.Wait()
	}
	if w.ctx.Err() != nil {
		return dirJob{}, nil, false
	}
	job := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	return job, nil, true
}

// maxQueued bounds the directories waiting to be read: a directory of a
// million subdirectories would otherwise queue them all (a variable, for tests).
var maxQueued = 4096

// maxInline bounds how deep a reader goes depth first below the directory it
// took from the queue: each level holds a descriptor, and readers × depth of
// them would not fit a low open-file limit (a tree of long chains lost
// subtrees to EMFILE). Past it the queue takes the directory anyway.
const maxInline = 8

// push queues a directory to be read, or reports false when the queue is
// full (unless force): the caller reads it itself, at once.
func (w *walk) push(job dirJob, force bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.stack) >= maxQueued && !force {
		return false
	}
	job.root.acquire()
	w.stack = append(w.stack, job)
	w.pending++
	w.cond.Signal()
	return true
}

// scratches are getdents buffers for directories read inside the listing of
// another (the queue was full), which is still using its own.
var scratches = sync.Pool{New: func() any { b := make([]byte, scratchSize); return &b }}

// remembers reports whether directories read on dev go in visited.
func (w *walk) remembers(dev uint64) bool {
	// With a depth limit, a directory read first with less depth left
	// would keep a later walk that goes deeper out of it: what is below
	// would be lost. Read twice rather than not at all (-L aside: loops).
	if w.opt.MaxDepth >= 0 && !w.opt.Follow {
		return false
	}
	if w.visitAll {
		return true
	}
	_, ok := w.binds[dev]
	return ok
}

func (w *walk) visit(st *unix.Stat_t, em *emitter) bool {
	k := devIno{uint64(st.Dev), st.Ino}
	w.visitMu.Lock()
	defer w.visitMu.Unlock()
	if _, ok := w.visited[k]; ok {
		return false
	}
	// -L needs every directory to break loops (SAFETY 2); stdin lists and
	// bind-mounted devices only to leave out overlaps, so memory stays
	// bounded there.
	if !w.opt.Follow && len(w.visited) >= maxStdinSeen {
		if !w.visitFull {
			w.visitFull = true
			em.add(Entry{Root: &Root{Path: "-", fd: -1}, Err: ErrVisitLimit})
		}
		return true
	}
	w.visited[k] = struct{}{}
	return true
}

// ErrVisited marks a directory reached a second time: through a symlink loop (-L),
// a bind mount, or overlapping PATH arguments. It is read only once.
var ErrVisited = errors.New("directory already visited (filesystem loop or overlapping path)")

func procFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// readDir reads one directory: opens it beneath its root, emits it (Dirs), then
// emits its non-directory children and pushes (or, Sorted, descends into) its
// subdirectories.
func (w *walk) readDir(j dirJob, em *emitter, scratch []byte) {
	job := &listing{dirJob: j}
	// Entries emitted here take their references before the caller lets go of
	// the root (and, below, before this directory's handle is released).
	defer em.takeRefs()
	// The reference on the parent's node passes to this directory's own,
	// if it is read; else it is dropped here.
	defer func() {
		em.takeRefs() // entries below take their references on the node first
		switch {
		case job.self == nil:
			w.leave(job.up, 1)
		case job.self.w != nil && w.opt.Sorted:
			w.finishSorted(job.self, em)
		default:
			w.leave(job.self, 1)
		}
	}()
	fd := job.root.fd
	var dh *dirHandle
	if job.rel != "" {
		var err error
		base, name := job.root.fd, job.rel
		if job.parent != nil {
			base, name = job.parent.fd, job.rel[strings.LastIndexByte(job.rel, '/')+1:]
		}
		fd, err = openBeneath(job.root, base, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, w.opt.Follow)
		if job.parent != nil {
			job.parent.release()
		}
		if err != nil {
			em.add(Entry{Root: job.root, Rel: job.rel, Type: Dir, Depth: job.depth, Err: openErr(err, w.opt.Follow)})
			return
		}
		w.noAtime(fd)
		select {
		case w.dirSem <- struct{}{}:
			dh = &dirHandle{fd: fd, sem: w.dirSem}
			dh.refs.Store(1) // readDir's own, released when it returns
			defer dh.release()
			defer em.takeRefs()
		default:
			defer func() {
				if fd >= 0 {
					unix.Close(fd)
				}
			}()
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		em.add(Entry{Root: job.root, Rel: job.rel, Type: Dir, Depth: job.depth, Err: err})
		return
	}
	// Checked on every directory, before it is emitted or read: one met at
	// the depth limit or across a mount point is still changed itself.
	if w.opt.PreserveRoot && st.Ino == w.slash.ino && uint64(st.Dev) == w.slash.dev {
		em.add(Entry{Root: job.root, Rel: job.rel, Type: Dir, Depth: job.depth, Err: ErrRoot})
		return
	}
	id := devIno{uint64(st.Dev), st.Ino}
	if job.rel != "" && w.ov.claimed(job.root, id) {
		return // a PATH of its own: walked (and emitted) under it
	}
	if w.ov.files != nil {
		job.claimed = w.ov.files[id]
	}
	// A directory counts as visited only once it is read: one met at the depth
	// limit or across a mount point may still be read when named as a PATH.
	read := !(w.opt.MaxDepth >= 0 && job.depth >= w.opt.MaxDepth) &&
		!(job.rel != "" && w.opt.OneFileSystem && st.Dev != job.root.dev)
	// Without -L only a loop can bring the walk back to a directory (see
	// enter); with it, symlinks make any directory reachable many times.
	if read && (w.visited != nil && w.remembers(st.Dev) && !w.visit(&st, em) || !w.enter(job, id)) {
		em.add(Entry{Root: job.root, Rel: job.rel, Type: Dir, Depth: job.depth, Err: ErrVisited})
		return
	}
	// Directories are walked whatever --include says, but emitted only if they
	// match it too.
	if w.opt.Dirs && (w.opt.Types == 0 || w.opt.Types&(1<<Dir) != 0) && (w.opt.Stat == nil || w.opt.Stat(&st)) &&
		(w.opt.Filter == nil || len(w.opt.Filter.include) == 0 || w.opt.Filter.Selected(job.rel)) {
		if job.self != nil && job.self.w != nil {
			job.self.emit = true // after what is below it
		} else {
			em.add(Entry{Root: job.root, Rel: job.rel, Type: Dir, Depth: job.depth, node: w.postParent(job)})
		}
	}
	if !read {
		return // at the depth limit, or a mount point under -x (find -xdev)
	}
	var sorted sortedNames
	var nb []byte
	err := readDirents(fd, scratch, func(name []byte, dt uint8) bool {
		if w.ctx.Err() != nil {
			return false
		}
		if w.opt.Sorted {
			sorted.add(name, dt)
			return true
		}
		var c child
		if job.rel != "" {
			nb = append(append(append(nb[:0], job.rel...), '/'), name...)
			c.rel = string(nb)
			c.name = c.rel[len(job.rel)+1:]
		} else {
			c.name = string(name)
			c.rel = c.name
		}
		c.typ, c.err = direntType(fd, c.name, dt)
		if sub, ok := w.child(job, fd, dh, c, em); ok && !w.push(sub, job.inline >= maxInline) {
			// Depth first, as a sorted walk goes: what this holds is bounded
			// by the depth, one descriptor and one buffer a level.
			b := scratches.Get().(*[]byte)
			job.root.acquire()
			sub.inline = job.inline + 1
			w.readDir(sub, em, *b)
			job.root.release()
			scratches.Put(b)
		}
		return true
	})
	if w.ctx.Err() != nil {
		return
	}
	if err != nil {
		em.add(Entry{Root: job.root, Rel: job.rel, Type: Dir, Depth: job.depth, Err: err})
	}
	if w.opt.Sorted {
		w.readSorted(job, &fd, dh, &sorted, em, scratch)
	}
}

// readSorted classifies the names of a directory read for a sorted walk, in
// byte order, while the directory is open (lstat for selections, -L); then,
// unless it is kept as a handle, closes it before the children are emitted
// and descended into, in order, so that a deep tree holds no more descriptors
// than the handle budget.
func (w *walk) readSorted(job *listing, fdp *int, dh *dirHandle, s *sortedNames, em *emitter, scratch []byte) {
	defer s.close()
	if s.spill != nil {
		w.readMerged(job, *fdp, dh, s, em, scratch)
		return
	}
	s.sort()
	fd := *fdp
	var nb []byte
	// rel builds a child's path in nb: a string without a copy for the
	// checks, which do not keep it, and copied only for an entry or a job.
	rel := func(name []byte) string {
		nb = nb[:0]
		if job.rel != "" {
			nb = append(append(nb, job.rel...), '/')
		}
		nb = append(nb, name...)
		return unsafe.String(unsafe.SliceData(nb), len(nb))
	}
	for i, k := range s.idx {
		if w.ctx.Err() != nil {
			s.idx = s.idx[:i] // the dir references below are taken for these only
			break
		}
		name := s.name(k)
		r := rel(name)
		c := child{rel: r, name: r[len(r)-len(name):]}
		c.typ, c.err = direntType(fd, c.name, uint8(k&0xff))
		e, emit, _, dir := w.classify(job, fd, dh, c, em)
		k = k &^ 0xff
		k |= uint64(e.Type)
		if emit {
			k |= snEmit
		}
		if dir {
			k |= snDir
		}
		if e.Err != nil {
			k |= snErr
			if s.errs == nil {
				s.errs = make(map[int]error)
			}
			s.errs[i] = e.Err
		}
		s.idx[i] = k
	}
	if dh == nil && job.rel != "" {
		unix.Close(fd)
		*fdp = -1 // for readDir's deferred close
	}
	for i, k := range s.idx {
		if w.ctx.Err() != nil {
			for _, rest := range s.idx[i:] {
				if rest&snDir != 0 && dh != nil {
					dh.release() // taken by classify for the read that will not happen
				}
			}
			return
		}
		if k&(snEmit|snDir) == 0 {
			continue
		}
		r := strings.Clone(rel(s.name(k)))
		if k&snEmit != 0 {
			e := Entry{Root: job.root, Rel: r, Type: Type(k & snType), Depth: job.depth + 1, dir: dh}
			if job.self.w != nil {
				e.node = job.self
			}
			if k&snErr != 0 {
				e.Err = s.errs[i]
			}
			em.add(e)
		}
		if k&snDir != 0 {
			job.root.acquire()
			w.readDir(dirJob{root: job.root, rel: r, depth: job.depth + 1, parent: dh, up: job.self}, em, scratch)
			job.root.release()
		}
	}
}

type child struct {
	name string
	rel  string
	typ  Type
	err  error
}

// child emits one listed name, or returns the directory job to read for it.
func (w *walk) child(job *listing, dirfd int, dh *dirHandle, c child, em *emitter) (dirJob, bool) {
	e, emit, sub, dir := w.classify(job, dirfd, dh, c, em)
	if emit {
		em.add(e)
	}
	return sub, dir
}

// classify returns the entry to emit for one listed name (emit), or the
// directory job to read for it (dir).
func (w *walk) classify(job *listing, dirfd int, dh *dirHandle, c child, em *emitter) (e Entry, emit bool, sub dirJob, dir bool) {
	rel := c.rel
	e = Entry{Root: job.root, Rel: rel, Depth: job.depth + 1, dir: dh}
	if job.self.w != nil {
		e.node = job.self
	}
	if c.err != nil {
		e.Err = unwrapPathErr(c.err)
		if errors.Is(e.Err, unix.ENOENT) {
			e.Err = ErrVanished
		}
		return e, true, dirJob{}, false
	}
	e.Type = c.typ
	if e.Type == Symlink && w.opt.Follow {
		var st unix.Stat_t
		err := unix.Fstatat(dirfd, c.name, &st, 0)
		switch {
		case err == unix.ENOENT:
			e.Err = ErrDangling
		case err != nil:
			e.Err = err
		default:
			e.Type = typeOfMode(st.Mode)
		}
	}
	if e.Type == Dir {
		if w.opt.Filter.Excluded(rel) {
			return e, false, dirJob{}, false
		}
		if dh != nil {
			dh.refs.Add(1) // released by readDir of the subdirectory once opened
		}
		job.self.refs.Add(1) // released by readDir of the subdirectory when done
		return e, false, dirJob{root: job.root, rel: rel, depth: e.Depth, parent: dh, up: job.self}, true
	}
	if job.claimed != nil && slices.Contains(job.claimed, c.name) {
		return e, false, dirJob{}, false // a PATH of its own
	}
	if !w.opt.Filter.Selected(rel) || !w.selected(&e, dirfd, c.name, &em.st) {
		return e, false, dirJob{}, false
	}
	return e, true, dirJob{}, false
}

// selected applies the type, shard and stat selections to a listed entry.
func (w *walk) selected(e *Entry, dirfd int, name string, st *unix.Stat_t) bool {
	if w.opt.Types != 0 && w.opt.Types&(1<<e.Type) == 0 && e.Err == nil {
		return false
	}
	if w.opt.Keep != nil && e.Err == nil {
		// A copy: handing e itself to a func value moved every entry the walk
		// classifies to the heap, sharded or not (one allocation per name).
		ek := *e
		if !w.opt.Keep(&ek) {
			return false
		}
	}
	if w.opt.Stat != nil && e.Err == nil {
		flags := unix.AT_SYMLINK_NOFOLLOW
		if w.opt.Follow {
			flags = 0
		}
		if err := unix.Fstatat(dirfd, name, st, flags); err != nil {
			if err == unix.ENOENT {
				e.Err = ErrVanished
			} else {
				e.Err = err
			}
			return true // reported, not silently dropped
		}
		return w.opt.Stat(st)
	}
	return true
}

// noAtime sets O_NOATIME on a directory about to be read, if asked to; where
// the kernel refuses (EPERM: neither owner nor CAP_FOWNER) the read sets the
// access time, as any other would.
func (w *walk) noAtime(fd int) {
	if w.opt.NoAtime {
		unix.FcntlInt(uintptr(fd), unix.F_SETFL, unix.O_NOATIME)
	}
}

// TypeOfMode is the Type of a stat's st_mode.
func TypeOfMode(m uint32) Type { return typeOfMode(m) }

func typeOfMode(m uint32) Type {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return File
	case unix.S_IFDIR:
		return Dir
	case unix.S_IFLNK:
		return Symlink
	}
	return Other
}

// openErr turns an open failure below a root into what the user should read.
func openErr(err error, follow bool) error {
	switch {
	case err == unix.ENOENT:
		return ErrVanished
	case !follow && (err == unix.ELOOP || err == unix.EXDEV):
		return ErrSymlinkInPath
	}
	return err
}

// OpenErr is openErr for tasks: they open entries with Entry.Open.
func OpenErr(e *Entry, err error, follow bool) error {
	if e.Rel == "" {
		return err // a PATH argument that is missing is a failure, not a vanished entry
	}
	return openErr(err, follow)
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
