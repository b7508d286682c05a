package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

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

// openFile opens the cache at path for bbolt, never through a symlink
// (O_NOFOLLOW, and O_EXCL when it creates the file), checked by CheckOwned and
// locked: exclusively to write, or shared when the file or its file system
// cannot be written (readOnly; the reason is in why). With reset, an existing
// file is emptied through the locked descriptor (bbolt then starts a new
// database in it), never removed by name, and only if it is pbatch's (see
// resettable) and private.
func openFile(ctx context.Context, path string, reset bool) (f *os.File, readOnly bool, why error, err error) {
	clean := filepath.Clean(path) // "dir/" names dir, not a file in it
	dfd, err := OpenDir(filepath.Dir(clean), true)
	if err != nil {
		return nil, false, nil, err
	}
	defer unix.Close(dfd)
	base := filepath.Base(clean)
	const flags = unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	var fd int
	creating := false
	for range 3 {
		fd, err = unix.Openat(dfd, base, unix.O_RDWR|flags, 0)
		if creating = err == unix.ENOENT; !creating {
			break
		}
		fd, err = unix.Openat(dfd, base, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|flags, 0o600)
		if err != unix.EEXIST { // EEXIST: created meanwhile by another run (or a symlink): open again
			break
		}
	}
	switch {
	case err == nil:
	case creating && err != unix.ELOOP:
		// No space, no inodes, a read-only file system or directory.
		return nil, false, nil, unavailable("cannot be created: %w", err)
	case err == unix.EROFS, err == unix.EACCES, err == unix.EPERM, err == unix.ETXTBSY:
		// Cannot write it (read-only file system, immutable, not ours to write):
		// look digests up without saving new ones.
		why = err
		readOnly = true
		fd, err = unix.Openat(dfd, base, unix.O_RDONLY|flags, 0)
	}
	// Errors about the file itself carry no path: the caller names the cache.
	if err == unix.ELOOP {
		return nil, false, nil, fmt.Errorf("a symlink: %w", ErrNotSafe)
	}
	if err != nil {
		return nil, false, nil, fmt.Errorf("open: %w", err)
	}
	f = os.NewFile(uintptr(fd), path)
	fail := func(err error) (*os.File, bool, error, error) {
		f.Close()
		return nil, false, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(fmt.Errorf("fstat: %w", err))
	}
	if err := CheckOwned(&st); err != nil {
		return fail(err)
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
