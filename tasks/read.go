package tasks

import (
	"context"
	"hash"
	"io"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"pbatch/cache"
	"pbatch/walker"
)

// reader opens and reads files under the safety model shared by every task that
// reads content: opened beneath its root without following symlinks, never
// blocking, only regular files read, read to EOF, fstat compared before and after.
type reader struct {
	ReadOptions
	buf    []byte
	before unix.Stat_t   // of the last file read
	cr     *cache.Reader // this worker's cache lookups
	key    []byte        // cache key being looked up
}

// ReadOptions are shared by the tasks that read content (hash, check, audit).
type ReadOptions struct {
	Follow bool          // -L: opens may follow symlinks
	Limit  *rate.Limiter // --bwlimit: bytes per second, all workers together
	Cache  *cache.DB     // --cache: digests of files whose metadata did not change
	Cwd    string        // to make cache keys absolute
	// Select, when set, is the run's selection (--type, --older-than,
	// --min-size...) asked again with the fstat of what was opened: the walk
	// judged what the name held when listed.
	Select func(st *unix.Stat_t) bool
}

// ReadBufSize is the size of each worker's read buffer: the most one read returns.
const ReadBufSize = 256 << 10

func newReader(o ReadOptions) reader {
	rd := reader{ReadOptions: o, buf: make([]byte, ReadBufSize)}
	if o.Cache != nil {
		rd.cr = o.Cache.NewReader()
	}
	return rd
}

// Flush ends the worker's cache transaction; the engine calls it after each
// batch, so that the cache's writer is never kept waiting for long.
func (rd *reader) Flush() {
	if rd.cr != nil {
		rd.cr.Release()
	}
}

// read feeds the content of e to w and fills in the metadata and status of r.
// It returns false when r is final (skipped, failed, changed).
func (rd *reader) read(ctx context.Context, e *walker.Entry, w io.Writer, r *Result) bool {
	if fromWalk(e, r) {
		return false
	}
	fd, err := e.Open(rd.Follow)
	if err == unix.ENAMETOOLONG && e.Root.Fd() < 0 {
		// A path named outright (a PATH argument, a manifest line) beyond
		// PATH_MAX: opened in pieces, as the walk reaches such files.
		fd, err = openLong(e.Root.Path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY)
	}
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
	var after unix.Stat_t
	before := &rd.before
	if err := unix.Fstat(fd, before); err != nil {
		r.Status, r.Err = Failed, err
		return false
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		// The entry was swapped for something else after it was listed, or a PATH
		// argument names a FIFO, socket or device: never read those.
		r.Status, r.Err = Skipped, skipReason(typeOf(before.Mode))
		return false
	}
	if unselected(rd.Select, before, r) {
		return false
	}
	r.Mtime = before.Mtim
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

// digest fills r.Sum with the digest of e under alg: from the cache when the
// file's device, inode, size, mtime and ctime match what was recorded, else by
// reading it with h (and then recording it).
func (rd *reader) digest(ctx context.Context, e *walker.Entry, alg string, h hash.Hash, r *Result) bool {
	cached := false
	if rd.cr != nil && e.Err == nil && e.Type == walker.File {
		rd.key = e.AppendAbsPath(cache.AppendKey(rd.key[:0], alg, ""), rd.Cwd)
		cached = true
		if st, err := e.Stat(rd.Follow || e.Rel == ""); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG &&
			(rd.Select == nil || rd.Select(&st)) {
			if d, ok := rd.cr.Get(rd.key, cache.MetaOf(&st), r.Sum[:0]); ok {
				r.SumLen = uint8(len(d))
				r.Size, r.Mtime = st.Size, st.Mtim
				return true
			}
		}
	}
	h.Reset()
	if !rd.read(ctx, e, h, r) {
		return false
	}
	sum := h.Sum(r.Sum[:0])
	r.SumLen = uint8(len(sum))
	if cached {
		rd.cr.Release() // Put may wait for the writer, which may wait for readers
		rd.Cache.PutKey(rd.key, cache.MetaOf(&rd.before), sum)
	}
	return true
}
