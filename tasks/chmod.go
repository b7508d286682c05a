package tasks

import (
	"context"
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

	noFast     atomic.Bool // fchmodat2 is missing: always use descriptors
	fixedOnce  sync.Once
	filesFixed bool // files' mode does not depend on the old one (fixedMode)
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

func (w chmodWorker) Run(ctx context.Context, e *walker.Entry, r *Result) { w.t.run(e, r) }

// PostOrder reports whether the walk must hand over each directory after
// everything below it is done: taking the owner's read or search permission
// away from a directory first could stop the walk below it (for a non-root
// owner). The walk, not this task, holds what waits, so that is bounded by
// the depth rather than the number of directories.
func (t *Chmod) PostOrder() bool {
	if t.dirs == nil {
		return false
	}
	for old := uint32(0); old <= modeBits; old++ {
		if (old&^t.dirs.Apply(old, true, t.umask))&0o500 != 0 {
			return true
		}
	}
	return false
}

func (t *Chmod) run(e *walker.Entry, r *Result) {
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
	r.Modified = true
	if t.opt.DryRun {
		return
	}
	if err := chmodFd(fd, mode); err != nil {
		r.Status, r.Err = Failed, err
	}
}

func (t *Chmod) fixedFiles() bool {
	t.fixedOnce.Do(func() { t.filesFixed = t.files != nil && fixedMode(t.files, t.umask) })
	return t.filesFixed
}

// fixedMode reports whether m gives every regular file the same bits whatever
// it had (0644, u=rw,go=r). Only then may the fast path change a name it
// examined a moment before (rule 19): a file renamed over that name meanwhile
// gets exactly what it would get where it was, while a relative mode (g+w)
// would give it bits computed from another file's (0644 made 0664 for a file
// that was 0600 and should become 0620).
func fixedMode(m *Mode, umask uint32) bool {
	want := m.Apply(0, false, umask)
	for old := uint32(1); old <= modeBits; old++ {
		if m.Apply(old, false, umask) != want {
			return false
		}
	}
	return true
}

// fast handles a file listed from a directory that is still open with one
// fstatat and, only if the mode differs, one fchmodat2(AT_SYMLINK_NOFOLLOW) — as
// chmod -R does, but never through a symlink. A name swapped meanwhile for
// another inode gets the mode meant for the one examined: so this path is
// taken only for a mode that does not depend on the old one (fixedMode), and
// only where hard links are allowed (fs.protected_hardlinks=1, or
// --allow-hardlinks), as the swapped-in file may be one. It reports false when
// the slower descriptor path must decide.
func (t *Chmod) fast(e *walker.Entry, r *Result) bool {
	if !t.opt.AllowHardlinks || t.noFast.Load() || e.Err != nil || e.Type != walker.File || !t.fixedFiles() {
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
