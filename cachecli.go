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

// openCache opens --cache for a run. A cache held by another run is not an
// error: this run goes on without it and says so.
func (o *engineOpts) openCache(ctx context.Context, cmd string, roots []string, ro tasks.ReadOptions, stderr io.Writer) (tasks.ReadOptions, func(), error) {
	noop := func() {}
	path := o.cache
	if path == cacheDefault {
		p, err := cache.DefaultPath()
		if err != nil {
			return ro, noop, usagef(cmd, "--cache: no cache directory (%s); give --cache=PATH", err)
		}
		path = p
	}
	db, err := cache.Open(path, o.cacheReset)
	switch {
	case errors.Is(err, cache.ErrBusy):
		fmt.Fprintf(stderr, "pbatch: cache %s: %s: running without it\n", quoteName(path), err)
		return ro, noop, nil
	case err != nil:
		fmt.Fprintf(stderr, "pbatch: cache %s: %s\n", quoteName(path), err)
		return ro, noop, exitError{exitFailed}
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
		if err := db.Close(); err != nil {
			fmt.Fprintf(stderr, "pbatch: cache %s: %s\n", quoteName(path), err)
		}
	}
	return ro, done, nil
}
