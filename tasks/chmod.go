package tasks

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// Chmod sets permission bits on regular files and directories, writing only
// where the mode differs, always through a descriptor of the inode it examined.
type Chmod struct {
	files, dirs *Mode // nil leaves that type alone
	umask       uint32
	opt         MetaOptions

	mu       sync.Mutex
	deferred []walker.Entry // directories whose change would lock the walk out
	noFast   atomic.Bool    // fchmodat2 is missing: always use descriptors
	// Whether the files' mode gives every file the same bits whatever it
	// had: 0 not known yet, 1 yes, 2 no (see fixedFiles).
	filesFixed atomic.Int32
}

// NewChmod returns the chmod task: files applies to regular files and dirs to
// directories; either may be nil.
func NewChmod(files, dirs *Mode, opt MetaOptions) *Chmod {
	umask := syscall.Umask(0)
	syscall.Umask(umask)
	if protectedHardlinks() {
		opt.AllowHardlinks = true
	}
	return &Chmod{files: files, dirs: dirs, umask: uint32(umask), opt: opt}
}

func (t *Chmod) NewWorker() Worker { return chmodWorker{t} }

type chmodWorker struct{ t *Chmod }

func (w chmodWorker) Run(ctx context.Context, e *walker.Entry, r *Result) { w.t.run(e, r, false) }

func (t *Chmod) run(e *walker.Entry, r *Result, finishing bool) {
	if t.fast(e, r) {
		return
	}
	fd, st, ok := openMeta(e, r, true)
	if !ok {
		return
	}
	defer unix.Close(fd)
	if skipMetaType(&st, r) {
		return
	}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	m := t.files
	if dir {
		m = t.dirs
	}
	old := st.Mode & modeBits
	r.Old[0], r.New[0] = old, old
	if m == nil {
		return // OK, unchanged: not asked to touch this type
	}
	if !t.opt.AllowHardlinks && isHardlinked(&st) {
		r.Status, r.Err = Skipped, errHardlink
		return
	}
	mode := m.Apply(old, dir, t.umask)
	r.Old[0], r.New[0] = old, mode
	if mode == old {
		return // no write: ctime stays as it is
	}
	if dir && !finishing && (old&^mode)&0o500 != 0 {
		// Taking the owner's read or search permission away first could stop the
		// walk below (for a non-root owner): change it after its children.
		e.Hold()
		t.mu.Lock()
		t.deferred = append(t.deferred, *e)
		t.mu.Unlock()
		r.Later = true
		return
	}
	r.Modified = true
	if t.opt.DryRun {
		return
	}
	if err := chmodFd(fd, mode); err != nil {
		r.Status, r.Err = Failed, err
	}
}

// Finish changes the deferred directories, deepest first.
func (t *Chmod) Finish(ctx context.Context) []Result {
	t.mu.Lock()
	es := t.deferred
	t.deferred = nil
	t.mu.Unlock()
	slices.SortStableFunc(es, func(a, b walker.Entry) int { return b.Depth - a.Depth })
	rs := make([]Result, 0, len(es))
	for i := range es {
		if ctx.Err() == nil {
			r := Result{Entry: es[i]}
			t.run(&es[i], &r, true)
			rs = append(rs, r)
		}
		es[i].Done()
	}
	return rs
}

// fixedFiles reports whether the files' mode gives every regular file the
// same bits whatever it had (0644, u=rw,go=r). Only then may the fast path
// change a name it examined a moment before (rule 19): a file renamed over
// that name meanwhile gets exactly what it would get where it was, while a
// relative mode (g+w) would give it bits computed from another file's (0644
// made 0664 for a file that was 0600 and should become 0620).
func (t *Chmod) fixedFiles() bool {
	switch t.filesFixed.Load() {
	case 1:
		return true
	case 2:
		return false
	}
	fixed := true
	want := t.files.Apply(0, false, t.umask)
	for old := uint32(1); old <= modeBits && fixed; old++ {
		fixed = t.files.Apply(old, false, t.umask) == want
	}
	t.filesFixed.Store(map[bool]int32{true: 1, false: 2}[fixed])
	return fixed
}

// fast handles a file listed from a directory that is still open with one
// fstatat and, only if the mode differs, one fchmodat2(AT_SYMLINK_NOFOLLOW) — as
// chmod -R does, but never through a symlink. A name swapped meanwhile for
// another inode gets the mode meant for the one examined: so this path is
// taken only for a mode that does not depend on the old one (fixedFiles), and
// only where hard links are allowed (fs.protected_hardlinks=1, or
// --allow-hardlinks), as the swapped-in file may be one. It reports false when
// the slower descriptor path must decide.
func (t *Chmod) fast(e *walker.Entry, r *Result) bool {
	if !t.opt.AllowHardlinks || t.noFast.Load() || e.Err != nil || e.Type != walker.File || t.files == nil || !t.fixedFiles() {
		return false
	}
	dirfd, name, ok := e.AtBase()
	if !ok {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	old := st.Mode & modeBits
	mode := t.files.Apply(old, false, t.umask)
	r.Old[0], r.New[0] = old, mode
	if mode == old {
		return true
	}
	r.Modified = true
	if t.opt.DryRun {
		return true
	}
	if err := fchmodat2(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		// No fchmodat2 (ENOSYS before Linux 6.6; EPERM under a seccomp filter
		// that does not know it), the name became a symlink (EOPNOTSUPP) or
		// vanished, or a refusal: the descriptor path decides and reports,
		// now and, without fchmodat2, for the rest of the run.
		if err == unix.ENOSYS {
			t.noFast.Store(true)
		}
		r.Modified = false
		return false
	}
	return true
}
