package walker

import (
	"errors"
	"hash/maphash"
	"path/filepath"
	"strings"
	"time"

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
// The stat of each PATH made here is the one the feed uses (without age or
// size selections), and a file PATH's directory is looked up only once a
// directory is to be walked: `find | xargs pbatch hash` costs no extra
// system call per file.
//
// A file PATH is known in a walk by its directory and name, and among the
// PATHs by its inode and clean path, never by its inode alone: hard links are
// distinct paths, each processed (hash prints a line for each).

// ErrSeen marks a PATH already walked in this run: named twice, or again under
// another name; it is left out, as a note.
var ErrSeen = errSeen("named more than once: processed once")

// ErrSeenLimit is the note that the paths read from stdin became too many to
// remember: later repeats are processed again.
var ErrSeenLimit = errSeen("more paths read than can be checked for repeats: later repeats are not left out")

// ErrVisitLimit is the note that the directories remembered to read each once
// (paths from stdin, devices with bind mounts) became too many: later ones
// reachable twice are read twice.
var ErrVisitLimit = errSeen("more directories read than can be remembered: one reachable twice from here on is read twice")

type errSeen string

func (e errSeen) Error() string { return string(e) }

// maxStdinSeen bounds the identities remembered for paths not named as
// arguments: about 40 bytes each.
const maxStdinSeen = 1 << 18

// namedFile is a file PATH as named: a file by its inode and its path made
// clean, so that hard links stay apart.
type namedFile struct {
	id   devIno
	path string
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
	// Read by every reader, written only before the first directory is read.
	dirs  map[devIno]struct{} // the directories named
	files map[devIno][]string // the names of non-directory PATHs, by their directory

	// The feeder's alone.
	named     []namedRoot
	paths     []string // Named
	filesDone bool     // files is complete
	takenDirs map[devIno]bool
	takenFile map[namedFile]bool
	stdin     map[seenKey]struct{}
	full      bool // stdin reached maxStdinSeen
	seed      maphash.Seed
	// The directory PATHs so far, named or read from stdin, as made clean:
	// a file read from stdin below one of them (`find d | pbatch hash -`
	// lists d, then d/f) is the walk's to emit, when the walk is whole.
	dirPaths map[string]int64 // when its walk began (ns)
	whole    bool             // no filter or -x: a walk emits every file below it, within maxDepth
	root     bool             // run as root: no directory below a PATH is unreadable to the walk
	maxDepth int
}

type namedRoot struct {
	ok   bool // resolved; else the feed reports what is wrong with it
	mode uint32
	id   devIno
}

// resolve records the identities of the named PATHs. A PATH that cannot be
// resolved now is reported when it is fed.
func (o *overlap) resolve(named []string, noFollow bool) {
	o.seed = maphash.MakeSeed()
	o.paths = named
	o.named = make([]namedRoot, len(named))
	o.takenDirs = make(map[devIno]bool)
	o.takenFile = make(map[namedFile]bool)
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
		o.named[i] = namedRoot{ok: true, mode: st.Mode, id: id}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if o.dirs == nil {
				o.dirs = make(map[devIno]struct{})
			}
			o.dirs[id] = struct{}{}
			continue
		}
		o.stdin[seenKey{id, maphash.String(o.seed, p)}] = struct{}{}
	}
}

// ErrReplaced marks a directory PATH that holds another directory than when
// the run began: the one it held was left out of the other PATHs' walks and
// may not have been processed.
var ErrReplaced = errors.New("replaced by another directory since the run began: the one it named may not have been processed")

// replaced reports whether a named directory PATH, opened now as st, is no
// longer the directory resolve found (renamed away and another made there).
func (o *overlap) replaced(ni int, st *unix.Stat_t) bool {
	if ni < 0 || !o.named[ni].ok || o.named[ni].mode&unix.S_IFMT != unix.S_IFDIR {
		return false
	}
	return o.named[ni].id != devIno{uint64(st.Dev), st.Ino}
}

// stat gives the feed what resolve learnt of a named PATH, if anything.
func (o *overlap) stat(ni int, st *unix.Stat_t) bool {
	if ni < 0 || !o.named[ni].ok {
		return false
	}
	n := &o.named[ni]
	*st = unix.Stat_t{Dev: n.id.dev, Ino: n.id.ino, Mode: n.mode}
	return true
}

// claimFiles looks up the directory of each file PATH, so that walks leave
// those files out; once, before the first directory is walked.
func (o *overlap) claimFiles() {
	if o.filesDone {
		return
	}
	o.filesDone = true
	for i, p := range o.paths {
		if !o.named[i].ok || o.named[i].mode&unix.S_IFMT == unix.S_IFDIR {
			continue
		}
		var ds unix.Stat_t
		if unix.Stat(filepath.Dir(p), &ds) != nil {
			continue
		}
		k := devIno{uint64(ds.Dev), ds.Ino}
		if o.files == nil {
			o.files = make(map[devIno][]string)
		}
		o.files[k] = append(o.files[k], filepath.Base(p))
	}
}

// repeat reports whether a root is one already walked; ni is its index in
// Options.Named, or -1 for a path read from stdin. limit is set the first
// time stdin's paths are too many to remember.
func (o *overlap) repeat(path string, ni int, st *unix.Stat_t) (seen, limit bool) {
	id := devIno{uint64(st.Dev), st.Ino}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	switch _, named := o.dirs[id]; {
	case dir && named:
		seen = o.takenDirs[id]
		o.takenDirs[id] = true
		return seen, false
	case !dir && ni >= 0:
		k := namedFile{id, filepath.Clean(path)}
		seen = o.takenFile[k]
		o.takenFile[k] = true
		return seen, false
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

// addDirPath records a directory PATH for below, within maxStdinSeen.
func (o *overlap) addDirPath(path string) {
	if !o.whole || !o.root || len(o.dirPaths) >= maxStdinSeen {
		return
	}
	if o.dirPaths == nil {
		o.dirPaths = make(map[string]int64)
	}
	o.dirPaths[filepath.Clean(path)] = time.Now().UnixNano()
}

// below reports how a path read from stdin lies below a directory PATH
// whose walk has begun: covered, the walk emits it (a file within the depth
// limit that was there before the walk began, no component after the
// directory a symlink, which the walk would not follow); shadow, for a
// directory within the depth limit, whose own walk goes deeper: that walk
// must leave out the entries above depth shadow, which the walk above emits
// too (a relative chmod applied twice). A spelling with a ".." component is
// not judged: a symlink before it could lead anywhere.
func (o *overlap) below(path string, st *unix.Stat_t) (covered bool, shadow int) {
	if len(o.dirPaths) == 0 || hasDotDot(path) {
		return false, 0
	}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	p := filepath.Clean(path)
	for depth := 1; ; depth++ {
		d := filepath.Dir(p)
		if began, ok := o.dirPaths[d]; ok {
			if o.maxDepth >= 0 && depth > o.maxDepth || !noSymlinkBelow(d, filepath.Clean(path)) {
				return false, 0
			}
			if dir && o.maxDepth >= 0 {
				return false, o.maxDepth - depth + 1
			}
			// A path made (or a directory changed) after the walk began may
			// come after the walk read its directory: it is walked as its own
			// PATH (a directory already read is then a note, not read twice).
			return st.Ctim.Nano() < began, 0
		}
		if d == p || d == "." {
			return false, 0
		}
		p = d
	}
}

// hasDotDot reports whether path has a ".." component.
func hasDotDot(path string) bool {
	for _, c := range strings.Split(path, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}

// noSymlinkBelow reports whether every component of path after dir (its
// prefix) is there and not a symlink.
func noSymlinkBelow(dir, path string) bool {
	var st unix.Stat_t
	for p := path; p != dir && len(p) > len(dir); p = filepath.Dir(p) {
		if unix.Lstat(p, &st) != nil || st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return false
		}
	}
	return true
}
