package tasks

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// MetaOptions are shared by the tasks that change metadata (chmod, chown).
type MetaOptions struct {
	DryRun         bool // report what would change, change nothing
	AllowHardlinks bool // change regular files with more than one link
	// Select, when set, is the run's selection, asked again with the fstat
	// of the descriptor the change goes through (see ReadOptions.Select).
	Select func(st *unix.Stat_t) bool
}

// protectedHardlinks reports whether the kernel stops users from linking files
// they do not own (fs.protected_hardlinks=1): then a hard link in the tree cannot
// have been planted to make us change a file elsewhere.
func protectedHardlinks() bool {
	b, err := os.ReadFile("/proc/sys/fs/protected_hardlinks")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// ErrHardlink is the reason a multiply-linked file is left alone.
var errHardlink = skipError("skipped: regular file with more than one hard link (use --allow-hardlinks)")

// openMeta opens e for a metadata change: with O_PATH beneath its root, no symlink
// followed, then fstat. Walk errors, vanished entries and failures fill in r and
// return ok=false. The caller closes fd.
func openMeta(e *walker.Entry, r *Result, followRoot bool) (fd int, st unix.Stat_t, ok bool) {
	if e.Err != nil {
		fromWalk(e, r)
		return -1, st, false
	}
	fd, err := e.OpenPath(followRoot)
	if err != nil {
		err = walker.OpenErr(e, err, false)
		if err == walker.ErrVanished {
			r.Status, r.Err = Vanished, err
		} else {
			r.Status, r.Err = Failed, err
		}
		return -1, st, false
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		r.Status, r.Err = Failed, err
		return -1, st, false
	}
	return fd, st, true
}

// errUnselected is the reason an entry is left alone when what its name holds
// by the time it is opened no longer matches the selection the walk applied:
// replaced by another file, or changed (grown past --max-size, written to).
var errUnselected = skipError("skipped: changed since it was selected: left alone")

// unselected applies sel to st, the fstat of what is about to be read or
// changed, and fills in r when it no longer matches.
func unselected(sel func(*unix.Stat_t) bool, st *unix.Stat_t, r *Result) bool {
	if sel == nil || sel(st) {
		return false
	}
	r.Status, r.Err = Skipped, errUnselected
	return true
}

// noFchmodat2 is set once the kernel answered ENOSYS: before Linux 6.6.
var noFchmodat2 atomic.Bool

// fchmodat2 is the system call itself: x/sys's Fchmodat turns its ENOSYS into
// EOPNOTSUPP, which a filesystem may also answer, so a missing system call
// could not be told from a refusal. A variable, so that tests can play an old
// kernel or a seccomp filter.
var fchmodat2 = func(dirfd int, path string, mode uint32, flags int) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	return retryErrno(func() unix.Errno {
		_, _, e := unix.Syscall6(unix.SYS_FCHMODAT2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(mode), uintptr(flags), 0, 0)
		return e
	})
}

// retryErrno makes a raw system call (one x/sys has no wrapper for) again on
// EINTR. The call converts its pointers to uintptr itself, in the Syscall
// argument list, as unsafe.Pointer's rules require.
func retryErrno(call func() unix.Errno) error {
	for {
		switch e := call(); e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return e
		}
	}
}

// chmodFd changes the mode of the inode fd (an O_PATH descriptor) refers to.
// fchmod refuses O_PATH descriptors; fchmodat2 (Linux 6.6) takes one with
// AT_EMPTY_PATH, and before it /proc/self/fd/N names exactly that inode.
func chmodFd(fd int, mode uint32) error {
	if noFchmodat2.Load() {
		return chmodProc(fd, mode)
	}
	err := fchmodat2(fd, "", mode, unix.AT_EMPTY_PATH)
	switch err {
	case nil:
		return nil
	case unix.ENOSYS:
		noFchmodat2.Store(true)
		return chmodProc(fd, mode)
	case unix.EOPNOTSUPP, unix.EINVAL, unix.EPERM:
		// A filesystem that refuses it, or a seccomp filter that does not
		// know the system call (EPERM): /proc, if mounted, may still do it.
		if perr := chmodProc(fd, mode); perr != unix.ENOENT {
			return perr
		}
	}
	return err
}

func chmodProc(fd int, mode uint32) error {
	for {
		err := unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), mode, 0)
		if err != unix.EINTR {
			return err
		}
	}
}

// futimens sets the access and modification times of the file open as fd, to
// the nanosecond. x/sys has no futimens (its Futimes goes through /proc and
// microseconds): this is glibc's, utimensat with a NULL path.
func futimens(fd int, ts *[2]unix.Timespec) error {
	return retryErrno(func() unix.Errno {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
		return e
	})
}

func isHardlinked(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1
}

var errSpecialLeftAlone = skipError("skipped: special file left alone")

func skipMetaType(st *unix.Stat_t, r *Result) bool {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		return false
	case unix.S_IFLNK:
		r.Status, r.Err = Skipped, skipReason(walker.Symlink)
	default:
		r.Status, r.Err = Skipped, errSpecialLeftAlone
	}
	return true
}
