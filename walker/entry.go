// Package walker turns root paths into a stream of entries: every file, symlink,
// special file (and optionally directory) below the roots, each tied to the root it
// was found under so that it can be opened beneath that root without following
// symlinks. Directories are read with getdents64 on descriptors opened beneath
// the root (see dirents.go).
package walker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Type is the kind of an entry as the directory listing (or lstat) reported it.
type Type uint8

const (
	File    Type = iota // regular file
	Dir                 // directory
	Symlink             // symbolic link (not followed)
	Other               // FIFO, socket or device
)

func (t Type) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "directory"
	case Symlink:
		return "symbolic link"
	default:
		return "special file"
	}
}

var (
	// ErrVanished marks an entry that was listed but was gone when it was opened.
	ErrVanished = errors.New("vanished")
	// ErrLoop marks a directory reached again through a symlink (-L) or a bind mount.
	ErrLoop = errors.New("directory loop: already visited")
	// ErrDangling marks a symlink without a target under -L.
	ErrDangling = errors.New("dangling symbolic link")
)

// Root is one PATH argument. A directory root keeps a descriptor that every entry
// below it is opened relative to; it is closed when the last entry is done.
type Root struct {
	abs  atomic.Pointer[string] // Path made absolute and clean, once
	Path string                 // as the user gave it
	fd   int                    // directory descriptor, or -1 when the root is not a directory
	os   *os.Root
	dev  uint64
	ino  uint64
	refs atomic.Int64
	sem  chan struct{} // a slot of the walk's root bound, freed with fd (nil: none)
	// shadow: the walk of a PATH above it emits its entries at depths below
	// shadow (a depth limit stops that walk sooner), so this one does not.
	shadow int
}

// Fd returns the directory descriptor entries are opened beneath, or -1.
func (r *Root) Fd() int { return r.fd }

func (r *Root) acquire() { r.refs.Add(1) }

func (r *Root) release() { r.releaseN(1) }

func (r *Root) releaseN(n int64) {
	if r.refs.Add(-n) == 0 && r.fd >= 0 {
		if r.os != nil {
			r.os.Close()
		}
		unix.Close(r.fd)
		r.fd = -1
		if r.sem != nil {
			<-r.sem
		}
	}
}

// dirHandle is an open directory, kept while entries listed from it are in flight
// so that they are opened relative to it: one path component to resolve instead
// of the whole path from the root. The walk bounds how many it keeps open.
type dirHandle struct {
	fd   int
	refs atomic.Int64
	sem  chan struct{} // one slot per open handle
}

func (d *dirHandle) release() {
	if d.refs.Add(-1) == 0 {
		unix.Close(d.fd)
		<-d.sem
	}
}

// Entry is one path found by the walk.
type Entry struct {
	dir   *dirHandle // the directory it was listed from, if still open
	node  *dirNode   // with PostOrder, that directory, emitted once every such entry is done
	Root  *Root
	Rel   string // path below Root.Path; "" for the root itself
	Type  Type
	Depth int
	Err   error // the walk failed at this path (unreadable directory, vanished, loop)
	Aux   any   // carried for the task by a source other than Walk (check: the expected digest)
}

// NamedEntry is an entry for a path named outright (a PATH argument, a manifest
// line) rather than found by a walk: it is opened as named, as PATH arguments are.
func NamedEntry(path string, aux any) Entry {
	return Entry{Root: &Root{Path: path, fd: -1}, Aux: aux}
}

// Path is the path as the user sees it: the root argument joined with Rel, without
// cleaning, so that `pbatch hash ./d` prints `./d/f` as find does.
func (e *Entry) Path() string {
	switch {
	case e.Rel == "":
		return e.Root.Path
	case strings.HasSuffix(e.Root.Path, "/"):
		return e.Root.Path + e.Rel
	default:
		return e.Root.Path + "/" + e.Rel
	}
}

// AppendAbsPath appends the entry's absolute, clean path to b; cwd is the
// working directory, for relative PATHs. The root's part is computed once.
func (e *Entry) AppendAbsPath(b []byte, cwd string) []byte {
	a := e.Root.abs.Load()
	if a == nil {
		p := e.Root.Path
		if filepath.IsAbs(p) {
			p = filepath.Clean(p)
		} else {
			p = filepath.Join(cwd, p)
		}
		a = &p
		e.Root.abs.Store(a)
	}
	b = append(b, *a...)
	if e.Rel == "" {
		return b
	}
	if *a != "/" {
		b = append(b, '/')
	}
	return append(b, e.Rel...)
}

// AppendPath appends Path() to b without allocating a string.
func (e *Entry) AppendPath(b []byte) []byte {
	b = append(b, e.Root.Path...)
	if e.Rel == "" {
		return b
	}
	if !strings.HasSuffix(e.Root.Path, "/") {
		b = append(b, '/')
	}
	return append(b, e.Rel...)
}

// Done tells the walker the consumer no longer needs the entry's root descriptor.
// Every entry received from Walk must be passed to Done exactly once.
func (e *Entry) Done() {
	if e.dir != nil {
		e.dir.release()
	}
	if e.node != nil {
		e.node.w.leave(e.node, 1)
	}
	if e.Root != nil {
		e.Root.release()
	}
}

// DoneAll is Done for every entry of a batch, with one atomic update per run of
// entries that share a root and a directory: workers on several cores would
// otherwise contend on the same counters for every file.
func DoneAll(es []Entry) {
	for i := 0; i < len(es); {
		j := i + 1
		for j < len(es) && es[j].Root == es[i].Root && es[j].dir == es[i].dir && es[j].node == es[i].node {
			j++
		}
		n := int64(j - i)
		if d := es[i].dir; d != nil {
			if d.refs.Add(-n) == 0 {
				unix.Close(d.fd)
				<-d.sem
			}
		}
		if d := es[i].node; d != nil {
			d.w.leave(d, n)
		}
		if r := es[i].Root; r != nil {
			r.releaseN(n)
		}
		i = j
	}
}

// base returns the descriptor and the name to open the entry beneath: its
// directory's when that is still open, else the root's with the whole path.
func (e *Entry) base() (int, string) {
	if e.dir != nil {
		return e.dir.fd, e.Rel[strings.LastIndexByte(e.Rel, '/')+1:]
	}
	return e.Root.fd, e.Rel
}

// noOpenat2 is set when the kernel lacks openat2 (before 5.6) or when
// PBATCH_NO_OPENAT2 is set (used by tests to exercise the os.Root fallback).
var noOpenat2 atomic.Bool

func init() {
	if os.Getenv("PBATCH_NO_OPENAT2") != "" {
		noOpenat2.Store(true)
		return
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC})
	if err == nil {
		unix.Close(fd)
	}
	noOpenat2.Store(err == unix.ENOSYS)
}

// Open opens the entry for reading without following a symlink in any component
// below the root (unless follow): openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or
// os.Root where openat2 is unavailable. The open never blocks on a FIFO and never
// acquires a controlling terminal; callers must fstat to learn what they got.
func (e *Entry) Open(follow bool) (int, error) {
	const flags = unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY
	if e.Root.fd < 0 {
		// A non-directory PATH argument is opened as named: the user chose it,
		// as with find -H.
		return RetryOpen(func() (int, error) { return unix.Open(e.Root.Path, flags, 0) })
	}
	fd, name := e.base()
	return openBeneath(e.Root, fd, name, flags, follow)
}

// OpenPath opens the entry itself with O_PATH, never following a symlink below the
// root (nor the entry itself, so a symlink yields a descriptor of the link). The
// descriptor pins the inode: metadata is read and changed through it, so a name
// swapped meanwhile changes nothing.
func (e *Entry) OpenPath(followRoot bool) (int, error) {
	const flags = unix.O_PATH | unix.O_CLOEXEC
	if e.Root.fd < 0 {
		f := flags
		if !followRoot {
			f |= unix.O_NOFOLLOW
		}
		return RetryOpen(func() (int, error) { return unix.Open(e.Root.Path, f, 0) })
	}
	fd, name := e.base()
	if name == "" {
		name = "."
	}
	return openBeneath(e.Root, fd, name, flags, false)
}

// Stat returns the entry's own metadata without opening it (lstat, unless follow),
// relative to its directory when that is still open.
func (e *Entry) Stat(follow bool) (unix.Stat_t, error) {
	var st unix.Stat_t
	if e.Root.fd < 0 {
		return st, unix.Stat(e.Root.Path, &st)
	}
	flags := unix.AT_SYMLINK_NOFOLLOW
	if follow {
		flags = 0
	}
	fd, name := e.base()
	if e.dir != nil || !strings.Contains(name, "/") {
		if name == "" {
			name = "."
		}
		return st, unix.Fstatat(fd, name, &st, flags)
	}
	// A deeper path from the root: resolve it beneath the root, no symlinks.
	pfd, err := openBeneath(e.Root, fd, name, unix.O_PATH|unix.O_CLOEXEC, follow)
	if err != nil {
		return st, err
	}
	defer unix.Close(pfd)
	return st, unix.Fstat(pfd, &st)
}

// OpenParent opens the directory that holds the entry (beneath its root, no
// symlink followed) and returns a new descriptor for it and the entry's name in
// it. Tasks that create and rename files next to an entry work relative to it.
func (e *Entry) OpenParent() (int, string, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if e.Root.fd < 0 {
		dir, name := filepath.Split(e.Root.Path)
		if dir == "" {
			dir = "."
		}
		fd, err := RetryOpen(func() (int, error) { return unix.Open(dir, flags, 0) })
		return fd, name, err
	}
	if e.Rel == "" {
		return -1, "", unix.EISDIR
	}
	name := e.Rel[strings.LastIndexByte(e.Rel, '/')+1:]
	if e.dir != nil {
		fd, err := RetryOpen(func() (int, error) { return unix.Openat(e.dir.fd, ".", flags, 0) })
		return fd, name, err
	}
	parent := "."
	if i := strings.LastIndexByte(e.Rel, '/'); i >= 0 {
		parent = e.Rel[:i]
	}
	fd, err := openBeneath(e.Root, e.Root.fd, parent, flags, false)
	return fd, name, err
}

// AtBase returns a directory descriptor and a single name in it that reach the
// entry, when the directory it was listed from is still open (or it lies
// directly in its root), for *at calls with AT_SYMLINK_NOFOLLOW. ok is false
// otherwise: use OpenPath.
func (e *Entry) AtBase() (fd int, name string, ok bool) {
	if e.Root.fd < 0 || e.Rel == "" {
		return -1, "", false
	}
	fd, name = e.base()
	return fd, name, !strings.Contains(name, "/")
}

// openBeneath opens rel below the directory dirfd, which belongs to root r.
func openBeneath(r *Root, dirfd int, rel string, flags int, follow bool) (int, error) {
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	if !noOpenat2.Load() {
		how := unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
		if follow {
			// -L asks for symlinks to be followed, even out of the tree.
			how.Resolve = 0
		}
		return RetryOpen(func() (int, error) { return unix.Openat2(dirfd, rel, &how) })
	}
	if follow {
		return RetryOpen(func() (int, error) { return unix.Openat(dirfd, rel, flags, 0) })
	}
	// Fallback: os.Root never resolves a path outside the root, even through
	// symlinks or "..", though it may follow a symlink that stays inside it.
	if r.os == nil {
		return -1, fmt.Errorf("no root handle")
	}
	var f *os.File
	_, err := RetryOpen(func() (int, error) {
		var err error
		f, err = r.os.OpenFile(rel, flags, 0)
		var en unix.Errno
		if errors.As(err, &en) {
			return -1, en
		}
		return 0, err
	})
	if err != nil {
		var en unix.Errno
		if errors.As(err, &en) {
			return -1, en
		}
		// os.Root's only non-errno failure is "path escapes from parent": the
		// same verdict as openat2's RESOLVE_BENEATH.
		return -1, unix.EXDEV
	}
	defer f.Close()
	return RetryOpen(func() (int, error) { return unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0) })
}

// RetryOpen runs an open call again on EINTR, and on EMFILE/ENFILE for up to a
// quarter of a second: pbatch fits its descriptors into the limit (see fitFDs
// in package main), so running out is a moment when others are in flight (a
// command's pipes, a descriptor being closed), not a reason to fail a file.
// Longer, it is a real shortage, and each file waiting for it would slow the
// run to a crawl: the open fails.
func RetryOpen(f func() (int, error)) (int, error) {
	wait, waited := 100*time.Microsecond, time.Duration(0)
	for {
		fd, err := f()
		switch {
		case err == unix.EINTR:
			continue
		case (err == unix.EMFILE || err == unix.ENFILE) && waited < 250*time.Millisecond:
			time.Sleep(wait)
			waited += wait
			wait = min(2*wait, 25*time.Millisecond)
			continue
		}
		return fd, err
	}
}
