package cache

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// maxHops is how many symlinks one path may go through, as the kernel's limit.
const maxHops = 40

// refused is a path component pbatch will not go through; it is ErrNotSafe.
type refused struct{ msg string }

func (r *refused) Error() string        { return r.msg + ": refused" }
func (r *refused) Is(target error) bool { return target == ErrNotSafe }

func refusef(format string, a ...any) error { return &refused{fmt.Sprintf(format, a...)} }

// ErrCannotCreate wraps the reasons a missing cache (or a directory on its
// way) could not be made: a read-only file system, no space, no inodes, no
// permission. The caller runs without the cache.
var ErrCannotCreate = errors.New("cannot be created")

type cannotCreate struct{ error }

func (c cannotCreate) Unwrap() error        { return c.error }
func (c cannotCreate) Is(target error) bool { return target == ErrCannotCreate }

// unavailable gives err, which says why there can be no cache, as ErrCannotCreate.
func unavailable(format string, a ...any) error { return cannotCreate{fmt.Errorf(format, a...)} }

type component struct {
	name string
	link bool // from a symlink's target: never created
}

// OpenDir resolves dir one component at a time from / (or the working
// directory for a relative dir) with O_PATH|O_NOFOLLOW, the way OpenSSH's
// StrictModes checks a path, and returns an O_PATH descriptor of it for the
// *at calls. Every directory on the way must be owned by root or this user and,
// if group or others can write it, be sticky (/tmp): anyone else who owns or
// can write a directory can rename a part of the path to one of theirs.
// A symlink is followed, with the same rules for its target, only if root or
// this user owns it (~/.cache may be a link to another disk); one another user
// owns is refused. With create, components missing from dir itself (not from a
// symlink's target) are made 0700.
func OpenDir(dir string, create bool) (int, error) {
	euid := uint32(os.Geteuid())
	const flags = unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
	var fd int
	var shown string
	start := func(abs bool) error {
		name := "."
		if abs {
			name = "/"
		}
		nfd, err := unix.Open(name, flags|unix.O_DIRECTORY, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: QuoteName(name), Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(nfd, &st); err != nil {
			unix.Close(nfd)
			return &os.PathError{Op: "fstat", Path: QuoteName(name), Err: err}
		}
		if err := checkDir(&st, name, euid); err != nil {
			unix.Close(nfd)
			return err
		}
		fd = nfd
		if abs {
			shown = "/"
		} else {
			shown = ""
		}
		return nil
	}
	if err := start(strings.HasPrefix(dir, "/")); err != nil {
		return -1, err
	}
	var todo []component
	for _, c := range strings.Split(dir, "/") {
		todo = append(todo, component{name: c})
	}
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		if c.name == "" || c.name == "." {
			continue
		}
		name := join(shown, c.name)
		nfd, err := unix.Openat(fd, c.name, flags, 0)
		// A missing directory followed by ".." is not made: the kernel says
		// ENOENT there, and the path would lead elsewhere than it reads.
		if err == unix.ENOENT && create && !c.link && c.name != ".." && !hasDotDot(todo) {
			if err := unix.Mkdirat(fd, c.name, 0o700); err != nil && err != unix.EEXIST {
				unix.Close(fd)
				return -1, unavailable("cannot be created: %w", &os.PathError{Op: "mkdir", Path: QuoteName(name), Err: err})
			}
			nfd, err = unix.Openat(fd, c.name, flags, 0)
		}
		if err != nil {
			unix.Close(fd)
			return -1, &os.PathError{Op: "open", Path: QuoteName(name), Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(nfd, &st); err != nil {
			unix.Close(nfd)
			unix.Close(fd)
			return -1, &os.PathError{Op: "fstat", Path: QuoteName(name), Err: err}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			unix.Close(fd)
			fd = nfd
			if err := checkDir(&st, name, euid); err != nil {
				unix.Close(fd)
				return -1, err
			}
			shown = name
		case unix.S_IFLNK:
			target, err := readLink(nfd)
			unix.Close(nfd)
			switch {
			case st.Uid != 0 && st.Uid != euid:
				err = refusef("%s is a symlink owned by uid %d", QuoteName(name), st.Uid)
			case err != nil:
				err = &os.PathError{Op: "readlink", Path: QuoteName(name), Err: err}
			case hops >= maxHops:
				err = &os.PathError{Op: "open", Path: QuoteName(name), Err: unix.ELOOP}
			}
			if err != nil {
				unix.Close(fd)
				return -1, err
			}
			hops++
			var more []component
			for _, t := range strings.Split(target, "/") {
				more = append(more, component{name: t, link: true})
			}
			todo = append(more, todo...)
			if strings.HasPrefix(target, "/") {
				unix.Close(fd)
				if err := start(true); err != nil {
					return -1, err
				}
			}
		default:
			unix.Close(nfd)
			unix.Close(fd)
			return -1, &os.PathError{Op: "open", Path: QuoteName(name), Err: unix.ENOTDIR}
		}
	}
	return fd, nil
}

// checkDir refuses a directory another user owns, or one that group or others
// can write unless it is sticky: then only the owner of a name in it can
// rename or remove it, and every name OpenDir goes through next is checked to
// be root's or this user's.
func checkDir(st *unix.Stat_t, name string, euid uint32) error {
	switch {
	case st.Uid != 0 && st.Uid != euid:
		return refusef("%s is a directory owned by uid %d", QuoteName(name), st.Uid)
	case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
		return refusef("%s is writable by group or others and not sticky (mode %04o)", QuoteName(name), st.Mode&0o7777)
	}
	return nil
}

func hasDotDot(todo []component) bool {
	for _, c := range todo {
		if c.name == ".." {
			return true
		}
	}
	return false
}

func join(dir, name string) string {
	switch {
	case dir == "":
		return name
	case strings.HasSuffix(dir, "/"):
		return dir + name
	}
	return dir + "/" + name
}

// readLink reads the target of the symlink open (O_PATH) as fd.
func readLink(fd int) (string, error) {
	for n := 256; ; n *= 2 {
		buf := make([]byte, n)
		m, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if m < n {
			return string(buf[:m]), nil
		}
		if n >= unix.PathMax {
			return "", unix.ENAMETOOLONG
		}
	}
}
