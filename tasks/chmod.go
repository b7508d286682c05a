package tasks

import (
	"context"
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

func (t *Chmod) NewWorker() Worker { return &chmodWorker{t: t} }

type chmodWorker struct {
	t *Chmod
	// direct skips the fast path's fstatat for the next regular file: the
	// last one needed a change, so this one likely does too, and the
	// descriptor path would stat it again.
	direct bool
}

func (w *chmodWorker) Run(ctx context.Context, e *walker.Entry, r *Result) {
	if !w.direct && w.t.fast(e, r) {
		return
	}
	w.direct = w.t.run(e, r) && e.Type == walker.File
}

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

// run examines e through an O_PATH descriptor and changes the mode of that
// inode only, by the rule for its type as fstat gives it. It reports whether
// the mode had to change.
func (t *Chmod) run(e *walker.Entry, r *Result) bool {
	fd, st, ok := openMeta(e, r, true)
	if !ok {
		return false
	}
	defer unix.Close(fd)
	if skipMetaType(&st, r) || unselected(t.opt.Select, &st, r) {
		return false
	}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	m := t.files
	if dir {
		m = t.dirs
	}
	old := st.Mode & modeBits
	r.Old[0], r.New[0] = old, old
	if m == nil {
		return false // OK, unchanged: not asked to touch this type
	}
	if !t.opt.AllowHardlinks && isHardlinked(&st) {
		r.Status, r.Err = Skipped, errHardlink
		return false
	}
	mode := m.Apply(old, dir, t.umask)
	r.Old[0], r.New[0] = old, mode
	if mode == old {
		return false // no write: ctime stays as it is
	}
	r.Modified = true
	if t.opt.DryRun {
		return true
	}
	if err := chmodFd(fd, mode); err != nil {
		r.Status, r.Err = Failed, err
	}
	return true
}

// fast settles, with one fstatat relative to the directory the file was
// listed from, a regular file whose mode is already right: nothing to write.
// It never changes anything: the name may hold another inode (a directory,
// another user's file) by the time a change by name would land, so every
// change goes through the descriptor path, which acts on the inode it
// examined. It reports false when that path must decide.
func (t *Chmod) fast(e *walker.Entry, r *Result) bool {
	if e.Err != nil || e.Type != walker.File || t.files == nil {
		return false
	}
	dirfd, name, ok := e.AtBase()
	if !ok {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG ||
		!t.opt.AllowHardlinks && st.Nlink > 1 || t.opt.Select != nil && !t.opt.Select(&st) {
		return false
	}
	old := st.Mode & modeBits
	if t.files.Apply(old, false, t.umask) != old {
		return false
	}
	r.Old[0], r.New[0] = old, old
	return true
}
