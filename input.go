package main

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Inputs pbatch reads for itself (manifests, stdin lists) may be FIFOs or
// pipes that nobody writes to yet: every wait for them must end on the first
// signal (SAFETY 26). A blocking open(2) of a FIFO and a blocking read(2)
// cannot be interrupted by a Go context, so neither is ever done on one.

// openInput opens a named input (a manifest) for reading without blocking, and
// waits for a FIFO's first writer in a way ctx ends. Reads from the file end
// too when ctx is done (with inputErr's ctx error). The caller calls close.
func openInput(ctx context.Context, name string) (f *os.File, closeFn func(), err error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	}
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	fifo := st.Mode&unix.S_IFMT == unix.S_IFIFO
	if !fifo && st.Mode&unix.S_IFMT != unix.S_IFCHR {
		// A regular file (or a directory, whose read fails as it should):
		// nothing to wait for, and blocking reads as usual.
		if err := setNonblock(fd, false); err != nil {
			unix.Close(fd)
			return nil, nil, &os.PathError{Op: "fcntl", Path: name, Err: err}
		}
	}
	// Non-blocking, a FIFO, pipe or terminal goes to the runtime's poller: a
	// read waits there, and a deadline ends the wait.
	f = os.NewFile(uintptr(fd), name)
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	closeFn = func() { stop(); f.Close() }
	if fifo {
		if err := waitWriter(f); err != nil {
			closeFn()
			return nil, nil, inputErr(ctx, err)
		}
	}
	return f, closeFn, nil
}

// waitWriter waits until a FIFO opened without blocking has data or has had a
// writer that left. Until a first writer comes, read(2) returns 0 (EOF) at
// once on such a descriptor, where a blocking open would have waited; poll
// reports nothing until then, so the runtime's poller can wait for it.
func waitWriter(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		if err == unix.EINTR {
			return false
		}
		if err != nil {
			perr = err
			return true
		}
		return n > 0
	})
	if err != nil {
		return err
	}
	return perr
}

func setNonblock(fd int, on bool) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		fl |= unix.O_NONBLOCK
	} else {
		fl &^= unix.O_NONBLOCK
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return err
}

// inputErr turns the deadline that ends a read when ctx is done into ctx's
// error, so that an interrupted read is not reported as a failed one.
func inputErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed)) {
		return ctx.Err()
	}
	return err
}

// ctxReader reads r in a goroutine of its own, so that a Read blocked in the
// kernel (stdin on a pipe or terminal nobody writes to) gives way to ctx. Once
// ctx is done every Read returns its error; a read still blocked then is
// abandoned, as the process is about to exit. The goroutine reads into its
// own buffer, never into a caller's slice after that caller has moved on.
type ctxReader struct {
	ctx  context.Context
	r    io.Reader
	req  chan int
	res  chan readResult
	buf  []byte
	busy bool  // a read was abandoned: the goroutine still owns buf
	err  error // what r returned last, once it failed or reached EOF
}

type readResult struct {
	n   int
	err error
}

// stdinReader wraps stdin in a ctxReader unless it is a regular file (whose
// reads do not wait for anyone) or not a file at all (tests).
func stdinReader(ctx context.Context, stdin io.Reader) io.Reader {
	f, ok := stdin.(*os.File)
	if !ok {
		return stdin
	}
	// Not f.Fd(): it would make a non-blocking stdin blocking.
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		return stdin
	}
	return &ctxReader{ctx: ctx, r: stdin}
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil || c.busy {
		return 0, c.ctx.Err()
	}
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if c.req == nil {
		c.req, c.res = make(chan int), make(chan readResult, 1)
		c.buf = make([]byte, 64<<10)
		go c.loop()
	}
	n := min(len(p), len(c.buf))
	c.req <- n
	select {
	case r := <-c.res:
		copy(p, c.buf[:r.n])
		c.err = r.err
		return r.n, r.err
	case <-c.ctx.Done():
		c.busy = true
		return 0, c.ctx.Err()
	}
}

// loop serves one read per request until r fails or reaches EOF.
func (c *ctxReader) loop() {
	for n := range c.req {
		k, err := c.r.Read(c.buf[:n])
		c.res <- readResult{k, err}
		if err != nil {
			return
		}
	}
}
