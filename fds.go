package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"pbatch/tasks"
	"pbatch/walker"
)

// fdReserve is what the run needs besides what is open, its readers and its
// workers: a root being opened, and room for a /proc read or a descriptor
// being closed meanwhile. (The runtime's poller, an epoll descriptor and an
// eventfd, exists by then: openFDs's own open creates it, and counts it.)
const fdReserve = 3

// minFDs is the limit below which pbatch refuses to start: past it the Go
// runtime itself may fail to create its poller (a fatal error, not an EMFILE).
// fitFDs says what a given run needs.
const minFDs = 12

// fdLimit is the soft RLIMIT_NOFILE, which the Go runtime has already raised to
// the hard limit at start-up; 0 if unknown.
func fdLimit() int {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil || rl.Cur > 1<<30 {
		return 0
	}
	return int(rl.Cur)
}

// openFDs counts the descriptors open now below limit (only those take a slot:
// the limit bounds descriptor numbers): the standard streams, whatever the
// parent passed down (shells and cron sometimes leak some), the lock, the cache.
func openFDs(limit int) int {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 3
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 3
	}
	n := 0
	for _, name := range names {
		if fd, err := strconv.Atoi(name); err == nil && fd < limit && uintptr(fd) != f.Fd() {
			n++
		}
	}
	return n
}

// fitFDs fits the run into the open-file limit (ulimit -n), so that a low limit
// makes the run slower rather than fail files with EMFILE: readers and workers
// first, then the directory handles kept for entries in flight with what is
// left. With too few descriptors for -w N it uses fewer workers and says so;
// with too few for one worker it is an error. It returns the readers and the
// walker's DirHandles (0: the walker's default) and MaxRoots.
func fitFDs(cmd string, o *engineOpts, task tasks.Task, stderr io.Writer) (readers, dirHandles, roots int, err error) {
	readers = min(max(o.workers, 2), 8)
	limit := fdLimit()
	if limit == 0 {
		return readers, 0, 0, nil
	}
	per := 1
	if u, ok := task.(tasks.FDUser); ok {
		per = u.FDsPerWorker()
	}
	avail := limit - openFDs(limit) - fdReserve
	need := func(workers, readers int) int { return per*workers + 2*readers }
	if need(o.workers, readers) > avail {
		readers = 1
		w := (avail - need(0, readers)) / per
		if w < 1 {
			return 0, 0, 0, fmt.Errorf("open file limit (ulimit -n) is %d: too low for pbatch %s, which needs about %d; raise it",
				limit, cmd, limit-avail+need(1, 1))
		}
		if w < o.workers {
			if !o.quiet {
				fmt.Fprintf(stderr, "pbatch: open file limit (ulimit -n) is %d: using %s instead of %d\n", limit, plural(w, "worker", "workers"), o.workers)
			}
			o.workers = w
		}
	}
	// Of what is left, a quarter for directory handles and a quarter for
	// directory PATHs open at once (two descriptors each where os.Root stands
	// in for openat2; one is in the reserve), the rest for descriptors other
	// code opens (a command's pipes, a progress terminal).
	left := (avail - need(o.workers, readers)) / 4
	dirHandles = min(left, walker.MaxDirHandles)
	if dirHandles < 1 {
		dirHandles = -1
	}
	return readers, dirHandles, max(left/2, 1), nil
}
