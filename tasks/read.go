package tasks

import (
	"context"
	"io"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"pbatch/walker"
)

// reader opens and reads files under the safety model shared by every task that
// reads content: opened beneath its root without following symlinks, never
// blocking, only regular files read, read to EOF, fstat compared before and after.
type reader struct {
	ReadOptions
	buf []byte
}

// ReadOptions are shared by the tasks that read content (hash, check, audit).
type ReadOptions struct {
	Follow bool          // -L: opens may follow symlinks
	Limit  *rate.Limiter // --bwlimit: bytes per second, all workers together
}

// ReadBufSize is the size of each worker's read buffer: the most one read returns.
const ReadBufSize = 256 << 10

func newReader(o ReadOptions) reader { return reader{ReadOptions: o, buf: make([]byte, ReadBufSize)} }

// read feeds the content of e to w and fills in the metadata and status of r.
// It returns false when r is final (skipped, failed, changed).
func (rd *reader) read(ctx context.Context, e *walker.Entry, w io.Writer, r *Result) bool {
	if fromWalk(e, r) {
		return false
	}
	fd, err := e.Open(rd.Follow)
	if err != nil {
		err = walker.OpenErr(e, err, rd.Follow)
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
		if rd.Limit != nil {
			// The bucket's burst is at least one buffer, so one wait per read.
			if err := rd.Limit.WaitN(ctx, k); err != nil {
				r.Status, r.Err = Failed, ctx.Err()
				return false
			}
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
