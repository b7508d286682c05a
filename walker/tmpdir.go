package walker

import (
	"strings"

	"golang.org/x/sys/unix"
)

// OpenDirNoSymlinks opens directory dir (O_PATH, for *at calls) without
// following a symlink in any component of its name: with openat2
// RESOLVE_NO_SYMLINKS (ELOOP for a symlink anywhere), or where the kernel
// lacks it one component at a time with O_NOFOLLOW (ENOTDIR). It is for
// directories pbatch writes its own files in, such as $TMPDIR, which must not
// lead somewhere else.
func OpenDirNoSymlinks(dir string) (int, error) {
	const flags = unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC
	if !noOpenat2.Load() {
		fd, err := unix.Openat2(unix.AT_FDCWD, dir, &unix.OpenHow{Flags: flags, Resolve: unix.RESOLVE_NO_SYMLINKS})
		if err != unix.ENOSYS && err != unix.EPERM {
			return fd, err
		}
	}
	start := "."
	if strings.HasPrefix(dir, "/") {
		start = "/"
	}
	fd, err := unix.Open(start, flags, 0)
	if err != nil {
		return -1, err
	}
	for c := range strings.SplitSeq(dir, "/") {
		if c == "" || c == "." {
			continue
		}
		next, err := unix.Openat(fd, c, flags|unix.O_NOFOLLOW, 0)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}
