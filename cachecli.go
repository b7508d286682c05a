package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"pbatch/cache"
	"pbatch/tasks"
)

// openCache opens --cache for a run. A cache held by another run, or one an
// older pbatch wrote that cannot be rebuilt now, is not an error: this run goes
// on without it and says so, as when it cannot be created (a read-only file
// system, no space); one that cannot be written is used read-only, and
// one found damaged during the run is dropped from then on, each with a line.
func (o *engineOpts) openCache(ctx context.Context, cmd string, roots []string, ro tasks.ReadOptions, stderr io.Writer) (tasks.ReadOptions, func(), error) {
	noop := func() {}
	path := o.cache
	if path == cacheDefault {
		p, err := cache.DefaultPath()
		if err != nil {
			// A service may run with no HOME: the files decide the exit,
			// not the missing place for a cache.
			fmt.Fprintf(stderr, "pbatch: --cache: no cache directory (%s): running without it; give --cache=PATH\n", err)
			return ro, noop, nil
		}
		path = p
	}
	db, err := cache.Open(ctx, path, o.cacheReset)
	switch {
	case err != nil && ctx.Err() != nil:
		return ro, noop, exitError{exitFailed} // a signal ended the wait: run dies by it
	case errors.Is(err, cache.ErrBusy), errors.Is(err, cache.ErrOldReadOnly), errors.Is(err, cache.ErrCannotCreate):
		fmt.Fprintf(stderr, "pbatch: cache %s: %s: running without it\n", quoteName(path), err)
		return ro, noop, nil
	case err != nil:
		fmt.Fprintf(stderr, "pbatch: cache %s: %s\n", quoteName(path), err)
		return ro, noop, exitError{exitFailed}
	}
	if why := db.ReadOnly(); why != nil {
		fmt.Fprintf(stderr, "pbatch: cache %s: %s: using it read-only, new digests are not saved\n", quoteName(path), why)
	}
	cwd, err := os.Getwd()
	if err != nil {
		db.Close()
		fmt.Fprintf(stderr, "pbatch: cannot resolve relative paths for the cache: %s\n", err)
		return ro, noop, exitError{exitFailed}
	}
	ro.Cache, ro.Cwd = db, cwd
	done := func() {
		// Prune only after a complete run over directories: an interrupted or
		// partial one has not seen everything.
		if ctx.Err() == nil && (o.cachePrune || db.PruneDue()) {
			var dirs []string
			for _, r := range roots {
				if r == "-" {
					continue
				}
				if st, err := os.Stat(r); err == nil && st.IsDir() {
					dirs = append(dirs, filepath.Join(cwd, r))
					if filepath.IsAbs(r) {
						dirs[len(dirs)-1] = filepath.Clean(r)
					}
				}
			}
			if len(dirs) > 0 {
				if _, err := db.Prune(dirs); err != nil {
					fmt.Fprintf(stderr, "pbatch: cache %s: prune: %s\n", quoteName(path), err)
				}
			}
		}
		if err := db.Close(); errors.Is(err, cache.ErrDamaged) {
			fmt.Fprintf(stderr, "pbatch: cache %s: %s; the run went on without it from there\n", quoteName(path), err)
		} else if err != nil {
			fmt.Fprintf(stderr, "pbatch: cache %s: %s\n", quoteName(path), err)
		}
	}
	return ro, done, nil
}
