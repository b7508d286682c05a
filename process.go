package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"pbatch/cache"
)

// exitLocked is the exit code when --lock finds the lock held (EX_TEMPFAIL).
const exitLocked = 75

// takeLock takes an exclusive flock on path before anything is touched. The lock
// belongs to the open descriptor, so it dies with the process: no stale PID
// files. Its directory is reached as the cache's is (cache.OpenDir: no
// directory or symlink another user controls); the file is opened by
// cache.OpenOwn (never through a symlink, a device or a pseudo file system's
// file; created 0600 if missing), never truncated, and must be readable by no
// one else: flock works on a descriptor open for reading, so any user who can
// read the file can hold the lock and stop every run.
// With wait > 0 it retries until the deadline, and stops at the first signal.
func takeLock(ctx context.Context, path string, wait time.Duration) (int, error) {
	dir, base, err := cache.SplitName(path)
	if err != nil {
		return -1, err
	}
	dfd, err := cache.OpenDir(dir, false)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dfd)
	fd, st, _, err := cache.OpenOwn(dfd, base, unix.O_RDONLY, true)
	if err != nil {
		return -1, err
	}
	if st.Mode&0o044 != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("readable by group or others (mode %04o), who could hold the lock: chmod 600 it", st.Mode&0o7777)
	}
	if err := cache.WaitLock(ctx, fd, unix.LOCK_EX, wait); err != nil {
		unix.Close(fd)
		if errors.Is(err, cache.ErrBusy) {
			return -1, errLockBusy
		}
		return -1, err
	}
	return fd, nil
}

var errLockBusy = errors.New("locked by another run")

// forEachThread applies f to every thread of the process. Nice values and I/O
// priorities are per thread on Linux; threads created later inherit them from
// the thread that creates them, and at this point every thread has been set.
func forEachThread(f func(tid int) error) error {
	des, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return f(0)
	}
	for _, de := range des {
		tid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		if err := f(tid); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}

func setNice(n int) error {
	return forEachThread(func(tid int) error { return unix.Setpriority(unix.PRIO_PROCESS, tid, n) })
}

const ioprioWhoProcess = 1

func setIonice(class, level int) error {
	prio := class<<13 | level
	return forEachThread(func(tid int) error {
		_, _, e := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), uintptr(prio))
		if e != 0 {
			return e
		}
		return nil
	})
}

// applyProcess sets --nice and --ionice, and takes --lock. It returns a usage
// error, an exitError, or nil.
func applyProcess(ctx context.Context, cmd string, o *engineOpts, stderr interface{ Write([]byte) (int, error) }) error {
	if o.nice != 0 {
		if o.nice < -20 || o.nice > 19 {
			return usagef(cmd, "invalid --nice %d: -20 to 19", o.nice)
		}
		if err := setNice(o.nice); err != nil {
			fmt.Fprintf(stderr, "pbatch: --nice %d: %s\n", o.nice, err)
			return exitError{exitFailed}
		}
	}
	if o.ionice != "" {
		class, level, err := parseIonice(o.ionice)
		if err != nil {
			return usagef(cmd, "%s", err)
		}
		if err := setIonice(class, level); err != nil {
			fmt.Fprintf(stderr, "pbatch: --ionice %s: %s\n", o.ionice, err)
			return exitError{exitFailed}
		}
	}
	if o.waitLock != 0 && o.lock == "" {
		return usagef(cmd, "--wait-lock needs --lock FILE")
	}
	if o.lock != "" {
		if _, err := takeLock(ctx, o.lock, o.waitLock); err != nil {
			if ctx.Err() != nil {
				return exitError{exitFailed} // a signal ended the wait: run dies by it
			}
			fmt.Fprintf(stderr, "pbatch: %s: %s\n", quoteName(o.lock), err)
			if err == errLockBusy {
				return exitError{exitLocked}
			}
			return exitError{exitFailed}
		}
		// The descriptor stays open (and locked) until the process exits.
	}
	return nil
}
