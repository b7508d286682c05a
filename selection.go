package main

import (
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// selection is what --older-than, --newer-than, --min-size, --max-size, --type
// and --shard turn into for the walker.
type selection struct {
	types uint8
	stat  func(st *unix.Stat_t) bool
	keep  func(e *walker.Entry) bool
}

// allowedTypes is what --type may name for each command; "" allows none.
var allowedTypes = map[string]string{
	"hash": "f", "audit": "f", "exec": "f", "list": "fdl", "chmod": "fd", "chown": "fdl",
}

// selection returns the selection of o, made on the first call: the tasks'
// options and the walk get the same one.
func (o *engineOpts) selection(cmd string) (selection, error) {
	if o.sel != nil {
		return *o.sel, nil
	}
	sel, err := o.makeSelection(cmd)
	if err == nil {
		o.sel = &sel
	}
	return sel, err
}

// match is the selection by metadata (--type and the stat tests) as one
// predicate on a stat, nil when there is none. The walk judges each entry by
// what it listed; a task judges again by the fstat of what it opened, which
// is what it acts on: a name may hold another inode by then (rule 19).
func (s selection) match() func(st *unix.Stat_t) bool {
	types, stat := s.types, s.stat
	if types == 0 {
		return stat
	}
	return func(st *unix.Stat_t) bool {
		if types&(1<<walker.TypeOfMode(st.Mode)) == 0 {
			return false
		}
		return stat == nil || stat(st)
	}
}

func (o *engineOpts) makeSelection(cmd string) (selection, error) {
	var sel selection
	if o.types != "" {
		for _, t := range strings.Split(o.types, ",") {
			if len(t) != 1 || !strings.Contains(allowedTypes[cmd], t) {
				return sel, usagef(cmd, "invalid --type %q: %s takes %s", o.types, cmd, strings.Join(strings.Split(allowedTypes[cmd], ""), ", "))
			}
			switch t {
			case "f":
				sel.types |= 1 << walker.File
			case "d":
				sel.types |= 1 << walker.Dir
			case "l":
				sel.types |= 1 << walker.Symlink
			}
		}
	}
	now := time.Now()
	var older, newer time.Time
	var err error
	if o.olderThan != "" {
		if older, err = parseAge(o.olderThan, now); err != nil {
			return sel, usagef(cmd, "--older-than: %s", err)
		}
	}
	if o.newerThan != "" {
		if newer, err = parseAge(o.newerThan, now); err != nil {
			return sel, usagef(cmd, "--newer-than: %s", err)
		}
	}
	var field func(st *unix.Stat_t) unix.Timespec
	switch o.timeField {
	case "", "mtime":
		field = func(st *unix.Stat_t) unix.Timespec { return st.Mtim }
	case "ctime":
		field = func(st *unix.Stat_t) unix.Timespec { return st.Ctim }
	case "atime":
		field = func(st *unix.Stat_t) unix.Timespec { return st.Atim }
	default:
		return sel, usagef(cmd, "invalid --time %q (choose mtime, ctime or atime)", o.timeField)
	}
	minSize, maxSize := int64(-1), int64(-1)
	if o.minSize != "" {
		if minSize, err = parseSize(o.minSize); err != nil {
			return sel, usagef(cmd, "--min-size: %s", err)
		}
	}
	if o.maxSize != "" {
		if maxSize, err = parseSize(o.maxSize); err != nil {
			return sel, usagef(cmd, "--max-size: %s", err)
		}
	}
	// Set or not by the flag, not by IsZero: 0001-01-01T00:00:00Z is a date.
	byOlder, byNewer := o.olderThan != "", o.newerThan != ""
	if byOlder || byNewer || minSize >= 0 || maxSize >= 0 {
		// Compared as (seconds, nanoseconds): an int64 of nanoseconds holds
		// only 1677 to 2262, and a file time or a date outside that wrapped.
		olderTs := unix.Timespec{Sec: older.Unix(), Nsec: int64(older.Nanosecond())}
		newerTs := unix.Timespec{Sec: newer.Unix(), Nsec: int64(newer.Nanosecond())}
		sel.stat = func(st *unix.Stat_t) bool {
			t := field(st)
			if byOlder && !timespecLess(t, olderTs) {
				return false
			}
			if byNewer && !timespecLess(newerTs, t) {
				return false
			}
			// Sizes apply to everything but directories (a symlink's is its own,
			// as with find -size).
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				if minSize >= 0 && st.Size < minSize {
					return false
				}
				if maxSize >= 0 && st.Size > maxSize {
					return false
				}
			}
			return true
		}
	}
	if o.shard != "" {
		k, n, err := parseShard(o.shard)
		if err != nil {
			return sel, usagef(cmd, "--shard: %s", err)
		}
		sel.keep = func(e *walker.Entry) bool { return shardOf(e, n) == k }
	}
	return sel, nil
}

func timespecLess(a, b unix.Timespec) bool {
	return a.Sec < b.Sec || a.Sec == b.Sec && a.Nsec < b.Nsec
}

// shardOf maps an entry to a shard by a stable hash (xxh64) of its path below
// its PATH argument, so every machine and every run agrees, whatever the
// mount point: N machines running shards 0..N-1 cover the tree exactly once.
func shardOf(e *walker.Entry, n uint64) uint64 {
	key := e.Rel
	if key == "" {
		key = e.Root.Path
	}
	return xxhash.Sum64String(key) % n
}
