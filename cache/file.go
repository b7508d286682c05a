package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// ErrNotSafe wraps the reasons a cache or lock file is refused before it is
// read: following them could make pbatch write where it should not, or trust
// digests another user wrote.
var ErrNotSafe = errors.New("refusing it")

// CheckOwned refuses a file pbatch opened for itself (a cache, a lock) unless
// it is a regular file with one link, owned by this user or root, and not
// writable by group or others. A hard link could make pbatch write to another
// file; a file another user owns or can write could hold forged digests.
func CheckOwned(st *unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("not a regular file: %w", ErrNotSafe)
	case st.Nlink != 1:
		return fmt.Errorf("has %d hard links: %w", st.Nlink, ErrNotSafe)
	case st.Uid != uint32(os.Geteuid()) && st.Uid != 0:
		return fmt.Errorf("owned by uid %d, not by this user: %w", st.Uid, ErrNotSafe)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("writable by group or others (mode %04o): %w", st.Mode&0o7777, ErrNotSafe)
	}
	return nil
}

// QuoteName makes a name safe for a diagnostic line as package main's
// quoteName does: names with control characters, invalid UTF-8 or invisible
// format characters are Go-quoted, so a name cannot forge or hide a line.
func QuoteName(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) || r == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}

// SplitName splits the path of a file pbatch opens for itself into its
// directory, for OpenDir, and its last component, without filepath.Clean:
// ".." is left for OpenDir to resolve on the file system (after a symlink it
// is the target's parent), and a path ending in "/" or naming "." or ".."
// names a directory, never a file to create.
func SplitName(path string) (dir, base string, err error) {
	i := strings.LastIndexByte(path, '/')
	switch {
	case path == "":
		return "", "", errors.New("empty path")
	case i < 0:
		dir, base = ".", path
	case i == 0:
		dir, base = "/", path[1:]
	default:
		dir, base = path[:i], path[i+1:]
	}
	if base == "" || base == "." || base == ".." {
		return "", "", fmt.Errorf("names a directory, not a file: %w", ErrNotSafe)
	}
	return dir, base, nil
}

// Pseudo file systems whose files are the kernel's interfaces (a sysctl, a
// cgroup's limits) and report size 0: one would be taken for a new cache and
// bbolt's pages written into it.
var pseudoFS = map[int64]string{
	unix.PROC_SUPER_MAGIC: "proc", unix.SYSFS_MAGIC: "sysfs", unix.DEVPTS_SUPER_MAGIC: "devpts",
	unix.CGROUP_SUPER_MAGIC: "cgroup", unix.CGROUP2_SUPER_MAGIC: "cgroup2", unix.DEBUGFS_MAGIC: "debugfs",
	unix.TRACEFS_MAGIC: "tracefs", unix.SECURITYFS_MAGIC: "securityfs", unix.BPF_FS_MAGIC: "bpf",
	unix.EFIVARFS_MAGIC: "efivarfs", unix.PSTOREFS_MAGIC: "pstore", unix.SELINUX_MAGIC: "selinuxfs",
	unix.SMACK_MAGIC: "smackfs", unix.BINFMTFS_MAGIC: "binfmt_misc", unix.NSFS_MAGIC: "nsfs",
	unix.RDTGROUP_SUPER_MAGIC: "resctrl", 0x62656570: "configfs", 0x65735543: "fusectl",
	unix.HUGETLBFS_MAGIC: "hugetlbfs", unix.OPENPROM_SUPER_MAGIC: "openpromfs", unix.XENFS_SUPER_MAGIC: "xenfs",
	0x19800202: "mqueue",
}

// checkFS refuses fd if it lies on one of pseudoFS.
func checkFS(fd int) error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return fmt.Errorf("fstatfs: %w", err)
	}
	if name, ok := pseudoFS[int64(fs.Type)]; ok {
		return fmt.Errorf("on a %s file system, not a file of its own: %w", name, ErrNotSafe)
	}
	return nil
}

// OpenOwn opens base in the directory dfd (from OpenDir) for a file pbatch
// keeps for itself (a cache, a lock), with access acc (O_RDONLY, O_RDWR),
// creating it 0600 (O_EXCL) when missing if create. An existing name is
// looked at first through an O_PATH descriptor, which opens nothing: it must
// pass CheckOwned and not lie on a pseudo file system (checkFS) before it is
// opened for real, so that a device (/dev/null, a tape, a watchdog) or a sysctl
// is never opened for reading or writing; the file then opened must be the
// same inode. Errors from the final open are the bare errno (EROFS, EACCES...),
// with created telling whether it was the creation that failed; refusals are
// ErrNotSafe. st is the opened file's fstat.
func OpenOwn(dfd int, base string, acc int, create bool) (fd int, st unix.Stat_t, created bool, err error) {
	if err := checkFS(dfd); err != nil {
		return -1, st, false, err
	}
	const flags = unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	for range 3 {
		pfd, err := unix.Openat(dfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT && create {
			fd, err = unix.Openat(dfd, base, acc|unix.O_CREAT|unix.O_EXCL|flags, 0o600)
			if err == unix.EEXIST { // created meanwhile by another run (or a symlink): look again
				continue
			}
			if err != nil {
				return -1, st, true, err
			}
			if err := unix.Fstat(fd, &st); err != nil {
				unix.Close(fd)
				return -1, st, true, fmt.Errorf("fstat: %w", err)
			}
			return fd, st, true, nil
		}
		if err != nil {
			return -1, st, false, err
		}
		var pst unix.Stat_t
		err = unix.Fstat(pfd, &pst)
		switch {
		case err != nil:
			err = fmt.Errorf("fstat: %w", err)
		case pst.Mode&unix.S_IFMT == unix.S_IFLNK:
			err = fmt.Errorf("a symlink: %w", ErrNotSafe)
		default:
			if err = CheckOwned(&pst); err == nil {
				err = checkFS(pfd)
			}
		}
		unix.Close(pfd)
		if err != nil {
			return -1, st, false, err
		}
		fd, err = unix.Openat(dfd, base, acc|flags, 0)
		if err == unix.ENOENT && create { // removed meanwhile: look again
			continue
		}
		if err == unix.ELOOP {
			return -1, st, false, fmt.Errorf("a symlink: %w", ErrNotSafe)
		}
		if err != nil {
			return -1, st, false, err
		}
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, st, false, fmt.Errorf("fstat: %w", err)
		}
		if st.Dev != pst.Dev || st.Ino != pst.Ino {
			unix.Close(fd)
			return -1, st, false, fmt.Errorf("replaced while it was opened: %w", ErrNotSafe)
		}
		return fd, st, false, nil
	}
	return -1, st, false, fmt.Errorf("created and removed again while it was opened: %w", ErrNotSafe)
}

// openFile opens the cache at path for bbolt with OpenOwn (creating it if
// missing), checked by CheckOwned, and locked:
// exclusively to write, or shared when the file or its file system cannot be
// written (readOnly; the reason is in why). With reset, an existing file is
// emptied through the locked descriptor (bbolt then starts a new database in
// it), never removed by name, and only if it is pbatch's (see resettable) and
// private.
func openFile(ctx context.Context, path string, reset bool) (f *os.File, readOnly bool, why error, err error) {
	dir, base, err := SplitName(path)
	if err != nil {
		return nil, false, nil, err
	}
	dfd, err := OpenDir(dir, true)
	if err != nil {
		return nil, false, nil, err
	}
	defer unix.Close(dfd)
	fd, st, created, err := OpenOwn(dfd, base, unix.O_RDWR, true)
	switch {
	case err == nil, errors.Is(err, ErrNotSafe):
	case created:
		// No space, no inodes, a read-only file system or directory.
		return nil, false, nil, unavailable("cannot be created: %w", err)
	case err == unix.EROFS, err == unix.EACCES, err == unix.EPERM, err == unix.ETXTBSY:
		// Cannot write it (read-only file system, immutable, not ours to write):
		// look digests up without saving new ones.
		why = err
		readOnly = true
		fd, st, _, err = OpenOwn(dfd, base, unix.O_RDONLY, false)
	}
	// Errors about the file itself carry no path: the caller names the cache.
	if errors.Is(err, ErrNotSafe) {
		return nil, false, nil, err
	}
	if err != nil {
		return nil, false, nil, fmt.Errorf("open: %w", err)
	}
	// Its name is in the errors of every read and write: quoted, as the
	// caller's line is.
	f = os.NewFile(uintptr(fd), QuoteName(path))
	fail := func(err error) (*os.File, bool, error, error) {
		f.Close()
		return nil, false, nil, err
	}
	how := unix.LOCK_EX
	if readOnly {
		how = unix.LOCK_SH
	}
	if err := WaitLock(ctx, fd, how, busyWait); err != nil {
		return fail(err)
	}
	if reset {
		if readOnly {
			return fail(fmt.Errorf("cannot reset it: %w", why))
		}
		// --cache=SHA256SUMS --cache-reset must not empty the manifest, nor
		// --cache=other.db another program's database.
		if err := resettable(f, st.Size); err != nil {
			return fail(err)
		}
		if err := private(st.Mode); err != nil {
			return fail(err)
		}
		if err := unix.Ftruncate(fd, 0); err != nil {
			return fail(fmt.Errorf("truncate: %w", err))
		}
	}
	return f, readOnly, why, nil
}

// private refuses a cache (mode is its st_mode) that group or others can
// read: its entries name files, with their digests and stat data, of trees
// they may not list. pbatch has always created it 0600. Checked once the file
// is known to be a cache, so that a manifest named by mistake is called what
// it is.
func private(mode uint32) error {
	if mode&0o044 != 0 {
		return fmt.Errorf("readable by group or others (mode %04o): chmod 600 it: %w", mode&0o7777, ErrNotSafe)
	}
	return nil
}

// busyWait is how long Open waits for another run to let go of the cache.
const busyWait = 500 * time.Millisecond

// WaitLock takes flock how (LOCK_EX or LOCK_SH) on fd, retrying for up to
// wait; it gives ErrBusy after that, and the cancellation cause as soon as ctx
// ends (a signal), whatever wait is.
func WaitLock(ctx context.Context, fd, how int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			return fmt.Errorf("flock: %w", err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return ErrBusy
		}
		t := time.NewTimer(min(50*time.Millisecond, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

// looksBolt reports whether f starts as a bbolt file does: a meta page (its
// magic and version) first, or second at one of the page sizes bbolt allows,
// whatever the rest (a damaged cache is to be reset too).
func looksBolt(f *os.File, size int64) bool {
	var b [pageHeaderSize + 8]byte
	at := func(off int64) bool {
		if off+int64(len(b)) > size {
			return false
		}
		if _, err := f.ReadAt(b[:], off); err != nil {
			return false
		}
		le := binary.LittleEndian
		return le.Uint16(b[8:]) == metaPage && le.Uint32(b[pageHeaderSize:]) == boltMagic &&
			le.Uint32(b[pageHeaderSize+4:]) == boltVersion
	}
	if at(0) {
		return true
	}
	for i := range 15 {
		if at(int64(1024) << i) {
			return true
		}
	}
	return false
}
