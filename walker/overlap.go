package walker

import (
	"hash/maphash"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Each file is processed once per run even when the PATHs overlap (SAFETY 6):
// the same PATH twice, a directory or file PATH inside another PATH directory,
// the same directory under two names. The PATH arguments (Options.Named) are
// resolved before the walk, so the walk of one PATH leaves out what another
// names, whichever comes first; that costs memory per argument only, which
// the command line bounds. Paths read from stdin can be any number: a path
// there is left out when it repeats one seen before (the same directory, or a
// file by the same name), up to maxStdinSeen of them; they are not checked
// against what the walks below other PATHs find.
//
// A file is known by its directory and name, not its inode: hard links are
// distinct paths, each processed (hash prints a line for each).

// ErrSeen marks a PATH already walked in this run: named twice, or again under
// another name; it is left out, as a note.
var ErrSeen = errSeen("named more than once: processed once")

// ErrSeenLimit is the note that the paths read from stdin became too many to
// remember: later repeats are processed again.
var ErrSeenLimit = errSeen("more paths read than can be checked for repeats: later repeats are not left out")

type errSeen string

func (e errSeen) Error() string { return string(e) }

// maxStdinSeen bounds the identities remembered for paths not named as
// arguments: about 40 bytes each.
const maxStdinSeen = 1 << 18

type fileKey struct {
	dir  devIno
	name string
}

// seenKey is a path read from stdin: a directory by (dev, ino) alone, a file
// by (dev, ino) and a hash of its path as spelled, so that hard links stay
// apart (a false repeat needs two links of one inode whose names collide in
// 64 bits).
type seenKey struct {
	id   devIno
	path uint64
}

type overlap struct {
	// Read by every reader, written only before the walk.
	dirs  map[devIno]struct{} // the directories named
	files map[devIno][]string // the names of non-directory PATHs, by their directory

	// The feeder's alone.
	named     []namedRoot
	takenDirs map[devIno]bool
	takenFile map[fileKey]bool
	stdin     map[seenKey]struct{}
	full      bool // stdin reached maxStdinSeen
	seed      maphash.Seed
}

type namedRoot struct {
	ok   bool // resolved; else the feed reports what is wrong with it
	dir  bool
	id   devIno
	file fileKey
}

// resolve records the identities of the named PATHs. A PATH that cannot be
// resolved now is reported when it is fed.
func (o *overlap) resolve(named []string, noFollow bool) {
	o.seed = maphash.MakeSeed()
	o.named = make([]namedRoot, len(named))
	o.takenDirs = make(map[devIno]bool)
	o.takenFile = make(map[fileKey]bool)
	o.stdin = make(map[seenKey]struct{})
	stat := unix.Stat
	if noFollow {
		stat = unix.Lstat
	}
	for i, p := range named {
		var st unix.Stat_t
		if p == "" || stat(p, &st) != nil {
			continue
		}
		id := devIno{uint64(st.Dev), st.Ino}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if o.dirs == nil {
				o.dirs = make(map[devIno]struct{})
			}
			o.dirs[id] = struct{}{}
			o.named[i] = namedRoot{ok: true, dir: true, id: id}
			continue
		}
		var ds unix.Stat_t
		if unix.Stat(filepath.Dir(p), &ds) != nil {
			continue
		}
		k := fileKey{devIno{uint64(ds.Dev), ds.Ino}, filepath.Base(p)}
		if o.files == nil {
			o.files = make(map[devIno][]string)
		}
		o.files[k.dir] = append(o.files[k.dir], k.name)
		o.named[i] = namedRoot{ok: true, id: id, file: k}
		o.stdin[seenKey{id, maphash.String(o.seed, p)}] = struct{}{}
	}
}

// repeat reports whether a root is one already walked; ni is its index in
// Options.Named, or -1 for a path read from stdin. limit is set the first
// time stdin's paths are too many to remember.
func (o *overlap) repeat(path string, ni int, st *unix.Stat_t) (seen, limit bool) {
	id := devIno{uint64(st.Dev), st.Ino}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if ni >= 0 && o.named[ni].ok {
		id = o.named[ni].id // as resolved, should the path have changed since
	}
	switch _, named := o.dirs[id]; {
	case dir && named:
		seen = o.takenDirs[id]
		o.takenDirs[id] = true
		return seen, false
	case !dir && ni >= 0 && o.named[ni].ok:
		k := o.named[ni].file
		seen = o.takenFile[k]
		o.takenFile[k] = true
		return seen, false
	case ni >= 0:
		return false, false // could not be resolved: the feed reports why
	}
	k := seenKey{id: id}
	if !dir {
		k.path = maphash.String(o.seed, path)
	}
	if _, ok := o.stdin[k]; ok {
		return true, false
	}
	if len(o.stdin) >= maxStdinSeen {
		limit = !o.full
		o.full = true
		return false, limit
	}
	o.stdin[k] = struct{}{}
	return false, false
}

// claimed reports whether a directory met below root is itself a named PATH,
// walked under that PATH instead (unless it is root itself, met again through
// a loop, which the loop check reports).
func (o *overlap) claimed(root *Root, id devIno) bool {
	if o.dirs == nil || id == (devIno{root.dev, root.ino}) {
		return false
	}
	_, ok := o.dirs[id]
	return ok
}
