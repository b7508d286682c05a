package walker

import (
	"bytes"
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Directories are read with getdents64 on the descriptor the walk opened
// beneath its root. godirwalk, which this replaced, reads only by path: every
// directory had to be opened a second time through /proc/self/fd (no walk at
// all where /proc is not mounted: chroots, minimal containers) and each name
// cost two allocations. Reading the descriptor directly made `pbatch list`
// about 20% faster.

// direntHeader is the fixed part of struct linux_dirent64: d_ino (8 bytes),
// d_off (8), d_reclen (2), d_type (1); d_name follows, NUL-terminated.
const direntHeader = 19

// readDirents lists the directory open as fd into buf, calling yield with each
// name (never "." or "..") and its d_type, until the end or yield returns
// false. name is only valid during the call.
func readDirents(fd int, buf []byte, yield func(name []byte, dt uint8) bool) error {
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		more, err := parseDirents(buf[:n], yield)
		if err != nil || !more {
			return err
		}
	}
}

// parseDirents calls yield for each record of a getdents64 buffer; more is
// false when yield asked to stop. A record that does not fit is EIO: the kernel
// never writes one, so the buffer is not what it should be.
func parseDirents(b []byte, yield func(name []byte, dt uint8) bool) (more bool, err error) {
	for len(b) > 0 {
		if len(b) < direntHeader {
			return false, unix.EIO
		}
		reclen := int(binary.NativeEndian.Uint16(b[16:]))
		if reclen < direntHeader || reclen > len(b) {
			return false, unix.EIO
		}
		ino := binary.NativeEndian.Uint64(b)
		dt := b[18]
		name := b[direntHeader:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		b = b[reclen:]
		// An inode of 0 is a deleted entry on some filesystems.
		if ino == 0 || len(name) == 0 || name[0] == '.' && (len(name) == 1 || len(name) == 2 && name[1] == '.') {
			continue
		}
		if !yield(name, dt) {
			return false, nil
		}
	}
	return true, nil
}

// direntType turns a d_type into the entry's type: a d_type is the file type
// bits of st_mode shifted down by 12 (glibc's DTTOIF). Filesystems that do not
// fill it (DT_UNKNOWN: some FUSE and network filesystems, old XFS) are asked
// with an lstat.
func direntType(dirfd int, name string, dt uint8) (Type, error) {
	if dt != unix.DT_UNKNOWN {
		return typeOfMode(uint32(dt) << 12), nil
	}
	var st unix.Stat_t
	for {
		err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		return typeOfMode(st.Mode), nil
	}
}
