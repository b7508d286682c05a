package tasks

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// spoolMem is how much of one stream of one job is kept in memory; the rest
// goes to a spool file. Small outputs (nearly all) never touch the disk, and
// memory stays bounded by the jobs in flight and queued, not by what they write.
const spoolMem = 256 << 10

// Output is a job's captured stdout or stderr: the first spoolMem bytes in
// memory, the rest in an unlinked temporary file in $TMPDIR (as GNU parallel
// spools its jobs' output). Its owner must Close it. A nil *Output is empty.
type Output struct {
	mem  []byte
	file *os.File
	size int64 // bytes in file
	err  error // the first spool error; nothing more is kept after it
}

// Write keeps p, spilling to the spool file past spoolMem.
func (o *Output) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	n := 0
	if o.file == nil {
		n = min(len(p), spoolMem-len(o.mem))
		if len(o.mem)+n > cap(o.mem) {
			// Grow by doubling, but never past the bound.
			o.mem = append(make([]byte, 0, min(max(2*cap(o.mem), len(o.mem)+n, 4096), spoolMem)), o.mem...)
		}
		o.mem = append(o.mem, p[:n]...)
		if n == len(p) {
			return n, nil
		}
		f, err := openSpool()
		if err != nil {
			o.err = err
			return n, err
		}
		o.file = f
	}
	m, err := o.file.Write(p[n:])
	o.size += int64(m)
	if err != nil {
		o.err = fmt.Errorf("spooling output to %s: %w", spoolDir(), unwrapPathError(err))
	}
	return n + m, o.err
}

// Len is the number of bytes kept.
func (o *Output) Len() int64 {
	if o == nil {
		return 0
	}
	return int64(len(o.mem)) + o.size
}

// Err is the spool error that cut the output short, if any.
func (o *Output) Err() error {
	if o == nil {
		return nil
	}
	return o.err
}

// Chunks calls fn with the output in order, in pieces of at most len(buf)
// bytes read from the spool file into buf (the memory part in one piece).
func (o *Output) Chunks(buf []byte, fn func([]byte) error) error {
	if o == nil {
		return nil
	}
	if len(o.mem) > 0 {
		if err := fn(o.mem); err != nil {
			return err
		}
	}
	for off := int64(0); off < o.size; {
		n, err := o.file.ReadAt(buf[:min(int64(len(buf)), o.size-off)], off)
		if n > 0 {
			if err := fn(buf[:n]); err != nil {
				return err
			}
			off += int64(n)
		}
		if err != nil && n == 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return &readSpoolError{err}
		}
	}
	return nil
}

// readSpoolError is a failure to read a spool file back.
type readSpoolError struct{ err error }

func (e *readSpoolError) Error() string {
	return "reading the spooled output back: " + unwrapPathError(e.err).Error()
}

func (e *readSpoolError) Unwrap() error { return e.err }

// IsSpoolReadError reports whether err came from reading a spool file back
// (rather than from the writer Chunks fed).
func IsSpoolReadError(err error) bool {
	var e *readSpoolError
	return errors.As(err, &e)
}

// Close releases the spool file; o is empty afterwards.
func (o *Output) Close() {
	if o == nil {
		return
	}
	if o.file != nil {
		o.file.Close()
	}
	*o = Output{}
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func spoolDir() string { return os.TempDir() }

// openSpool creates an unlinked 0600 file in $TMPDIR (/tmp without it): the
// directory itself is opened without following a symlink in any component of
// its name (walker.OpenDirNoSymlinks), and the file is created with O_TMPFILE, so it
// never has a name anyone could open, swap or follow; where the file system
// lacks O_TMPFILE, it is created under a random name (.pbatch-spool-*) with
// O_EXCL|O_NOFOLLOW and unlinked before anything else is done with it.
// Either way fstat must show a regular file of ours with no link left.
func openSpool() (*os.File, error) {
	dir := spoolDir()
	fail := func(err error) (*os.File, error) {
		return nil, fmt.Errorf("spooling output to %s: %w", dir, err)
	}
	dfd, err := walker.OpenDirNoSymlinks(dir)
	if err != nil {
		if err == unix.ENOTDIR || err == unix.ELOOP {
			// O_NOFOLLOW on a symlink gives ENOTDIR with O_DIRECTORY,
			// RESOLVE_NO_SYMLINKS gives ELOOP wherever it is.
			var st unix.Stat_t
			if unix.Lstat(dir, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return fail(errors.New("is a symlink; refused"))
			}
			if err == unix.ELOOP || hasSymlink(dir) {
				return fail(errors.New("has a symlink in its path; refused"))
			}
		}
		return fail(err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err == unix.EOPNOTSUPP || err == unix.EISDIR || err == unix.EINVAL {
		var b [8]byte
		rand.Read(b[:])
		name := ".pbatch-spool-" + hex.EncodeToString(b[:])
		fd, err = unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err == nil {
			if uerr := unix.Unlinkat(dfd, name, 0); uerr != nil {
				unix.Close(fd)
				return fail(uerr)
			}
		}
	}
	if err != nil {
		return fail(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fail(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 0 || st.Uid != uint32(os.Geteuid()) || st.Mode&0o077 != 0 {
		unix.Close(fd)
		return fail(errors.New("the spool file is not a private unlinked file of ours; refused"))
	}
	return os.NewFile(uintptr(fd), dir+"/(spool)"), nil
}

// hasSymlink reports whether some component of dir is a symlink (for the
// message only: the open is what refuses it).
func hasSymlink(dir string) bool {
	for p := filepath.Clean(dir); p != "/" && p != "."; p = filepath.Dir(p) {
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return true
		}
	}
	return false
}

// lineMax bounds a partial line kept by lineWriter: a longer line goes out in
// pieces of about this size, as GNU parallel --line-buffer does.
const lineMax = 64 << 10

// lineWriter passes on whole lines only, so that lines from concurrent jobs
// never mix (--line-buffer): each Write to w is one or more whole lines of
// one job, or a piece of at least lineMax bytes of one long line.
type lineWriter struct {
	w   io.Writer
	buf []byte // the start of a line, without its newline
	mid bool   // a piece of the current line went out already
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	if j := bytes.LastIndexByte(p, '\n'); j >= 0 {
		var err error
		if len(l.buf) > 0 {
			l.buf = append(l.buf, p[:j+1]...)
			_, err = l.w.Write(l.buf)
			l.buf = l.buf[:0]
		} else {
			_, err = l.w.Write(p[:j+1])
		}
		l.mid = false
		if err != nil {
			return 0, err
		}
		p = p[j+1:]
	}
	l.buf = append(l.buf, p...)
	if len(l.buf) >= lineMax {
		_, err := l.w.Write(l.buf)
		l.buf, l.mid = l.buf[:0], true
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}

// flush ends a last line that has no newline with one.
func (l *lineWriter) flush() error {
	if len(l.buf) == 0 && !l.mid {
		return nil
	}
	l.buf = append(l.buf, '\n')
	_, err := l.w.Write(l.buf)
	l.buf, l.mid = nil, false
	return err
}

// LockedWriter makes a writer safe for writes from many goroutines (each
// Write goes out whole). After the first error it writes nothing more: Write
// returns that error, and OnError, if set, is called with it once.
type LockedWriter struct {
	mu      sync.Mutex
	W       io.Writer
	OnError func(error)
	err     error
}

func (l *LockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.W.Write(p)
	if err != nil {
		l.err = err
		if l.OnError != nil {
			l.OnError(err)
		}
	}
	return n, err
}

// Err returns the first write error.
func (l *LockedWriter) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
