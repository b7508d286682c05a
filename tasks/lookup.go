package tasks

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// pathMax is Linux's PATH_MAX: the most bytes, with the NUL, that one system
// call takes as a path. A manifest may list longer paths (the walk reaches
// them through directory descriptors).
const pathMax = 4096

// resolveLong opens, as a directory (O_PATH), everything of name but a last
// part shorter than pathMax, in pieces shorter than pathMax cut at slashes, so
// that a path of any length can be looked up. Intermediate symlinks are
// followed, as the kernel follows them in a whole path. The caller closes dirfd
// unless it is AT_FDCWD.
func resolveLong(name string) (dirfd int, last string, err error) {
	dirfd = unix.AT_FDCWD
	for len(name) >= pathMax {
		i := strings.LastIndexByte(name[:pathMax-1], '/')
		if i <= 0 {
			// One component (or "/" and one) longer than any name can be.
			if dirfd != unix.AT_FDCWD {
				unix.Close(dirfd)
			}
			return -1, "", unix.ENAMETOOLONG
		}
		fd, err := walker.RetryOpen(func() (int, error) {
			return unix.Openat(dirfd, name[:i], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		})
		if dirfd != unix.AT_FDCWD {
			unix.Close(dirfd)
		}
		if err != nil {
			return -1, "", err
		}
		dirfd, name = fd, strings.TrimLeft(name[i+1:], "/")
	}
	if name == "" {
		name = "."
	}
	return dirfd, name, nil
}

// lstatName is lstat for a path of any length.
func lstatName(name string, st *unix.Stat_t) error {
	dirfd, last := unix.AT_FDCWD, name
	if len(name) >= pathMax {
		var err error
		if dirfd, last, err = resolveLong(name); err != nil {
			return err
		}
		defer unix.Close(dirfd)
	}
	for {
		err := unix.Fstatat(dirfd, last, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

// openLong opens a path that is too long for one open (ENAMETOOLONG) with
// flags, through resolveLong.
func openLong(name string, flags int) (int, error) {
	dirfd, last, err := resolveLong(name)
	if err != nil {
		return -1, err
	}
	if dirfd != unix.AT_FDCWD {
		defer unix.Close(dirfd)
	}
	return walker.RetryOpen(func() (int, error) { return unix.Openat(dirfd, last, flags, 0) })
}

// ErrUndecided wraps the error of a lookup that says neither that a listed path
// is there nor that it is absent (EACCES, EIO, ELOOP): it is reported, not
// guessed as either.
var ErrUndecided = errors.New("cannot tell whether it is missing")

// present reports whether a listed path exists (as lstat sees it, any length):
// false only for ENOENT and ENOTDIR (a component is not a directory: nothing
// can be below it); any other failure is an error wrapping ErrUndecided.
func present(name string) (bool, error) {
	var st unix.Stat_t
	switch err := lstatName(name, &st); err {
	case nil:
		return true, nil
	case unix.ENOENT, unix.ENOTDIR:
		return false, nil
	default:
		return false, fmt.Errorf("%w: %w", ErrUndecided, err)
	}
}
