package tasks

import (
	"context"
	"io"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// reader opens and reads files under the safety model shared by every task that
// reads content: opened beneath its root without following symlinks, never
// blocking, only regular files read, read to EOF, fstat compared before and after.
type reader struct {
	follow bool
	buf    []byte
}

const readBufSize = 256 << 10

func newReader(follow bool) reader { return reader{follow: follow, buf: make([]byte, readBufSize)} }

// read feeds the content of e to w and fills in the metadata and status of r.
// It returns false when r is final (skipped, failed, changed).
func (rd *reader) read(ctx context.Context, e *walker.Entry, w io.Writer, r *Result) bool {
	if fromWalk(e, r) {
		return false
	}
	fd, err := e.Open(rd.follow)
	if err != nil {
		err = walker.OpenErr(e, err, rd.follow)
		if err == walker.ErrVanished {
			r.Status, r.Err = Vanished, err
		} else {
			r.Status, r.Err = Failed, err
		}
		return false
	}
	defer unix.Close(fd)
	var before, after unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		r.Status, r.Err = Failed, err
		return false
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		// The entry was swapped for something else after it was listed, or a PATH
		// argument names a FIFO, socket or device: never read those.
		r.Status, r.Err = Skipped, skipReason(typeOf(before.Mode))
		return false
	}
	r.Mtime = before.Mtim.Nano()
	var n int64
	for {
		if ctx.Err() != nil {
			r.Status, r.Err = Failed, ctx.Err()
			return false
		}
		k, err := unix.Read(fd, rd.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			r.Status, r.Err = Failed, err
			return false
		}
		if k == 0 {
			break
		}
		w.Write(rd.buf[:k])
		n += int64(k)
	}
	r.Size = n
	if err := unix.Fstat(fd, &after); err != nil {
		r.Status, r.Err = Failed, err
		return false
	}
	if before.Size != after.Size || before.Mtim != after.Mtim || before.Ctim != after.Ctim {
		r.Status, r.Err = Changed, ErrChanged
		return false
	}
	return true
}

func typeOf(m uint32) walker.Type {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return walker.File
	case unix.S_IFDIR:
		return walker.Dir
	case unix.S_IFLNK:
		return walker.Symlink
	}
	return walker.Other
}
