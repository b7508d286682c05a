package walker

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sortedNames holds one directory's names for a sorted walk compactly: the
// names in fixed-size chunks (growing never copies them), and per name a word
// packing where it is, its length and what the walk learnt of it. A string
// and an Entry per name cost twenty times the names themselves. Past
// spillNames names, each sorted run goes to an unnamed temporary file and
// the runs are merged, so that memory stays flat however large the directory.
type sortedNames struct {
	chunks [][]byte      // chunks[:used] hold names; the rest are kept for reuse
	used   int           // chunks in use
	idx    []uint64      // chunk<<40 | off<<24 | len<<8 | flags
	errs   map[int]error // by position in idx, after sorting: rare

	spill  *os.File // runs written so far, nil if none
	bw     *bufio.Writer
	runs   []int64 // where each run written ends in spill
	broken bool    // spilling failed: the rest stays in memory
}

// spillNames is how many names of one directory a sorted walk holds in
// memory at once (a variable, for tests).
var spillNames = 1 << 17

// A name is never split across chunks: one is at most 64 KiB (d_reclen is 16
// bits), so a chunk always has room for the first name put in it.
const snChunk = 1 << 16

// Flags of a sorted name: its d_type until it is classified, then what to do.
const (
	snEmit = 1 << 4 // emit an entry
	snDir  = 1 << 5 // a directory to descend into
	snErr  = 1 << 6 // errs holds the entry's error
	snType = 0x0f   // the Type, once classified
)

func (s *sortedNames) add(name []byte, dt uint8) {
	if len(s.idx) >= spillNames && !s.broken {
		s.spillRun()
	}
	if s.used == 0 || cap(s.chunks[s.used-1])-len(s.chunks[s.used-1]) < len(name) {
		if s.used == len(s.chunks) {
			s.chunks = append(s.chunks, (*snChunks.Get().(*[]byte))[:0])
		}
		s.chunks[s.used] = s.chunks[s.used][:0]
		s.used++
	}
	c := &s.chunks[s.used-1]
	s.idx = append(s.idx, uint64(s.used-1)<<40|uint64(len(*c))<<24|uint64(len(name))<<8|uint64(dt))
	*c = append(*c, name...)
}

func (s *sortedNames) name(k uint64) []byte {
	c, off, n := k>>40, k>>24&0xffff, k>>8&0xffff
	return s.chunks[c][off : off+n]
}

func (s *sortedNames) sort() {
	slices.SortFunc(s.idx, func(a, b uint64) int { return bytes.Compare(s.name(a), s.name(b)) })
}

// spillRun writes the names held, sorted, as one run: a 16-bit length, the
// d_type and the name for each. The file has no name (O_TMPFILE), so nothing
// else can open or replace it. If it cannot be written, the names stay in
// memory: the walk goes on as it would without a bound.
func (s *sortedNames) spillRun() {
	if s.spill == nil {
		// $TMPDIR is opened without following a symlink in any component.
		dfd, err := OpenDirNoSymlinks(os.TempDir())
		fd := -1
		if err == nil {
			fd, err = unix.Openat(dfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
			unix.Close(dfd)
		}
		if err != nil {
			s.broken = true
			return
		}
		s.spill = os.NewFile(uintptr(fd), "sorted names")
		s.bw = bufio.NewWriterSize(s.spill, 64<<10)
	}
	s.sort()
	var end int64
	if len(s.runs) > 0 {
		end = s.runs[len(s.runs)-1]
	}
	var hdr [3]byte
	for _, k := range s.idx {
		name := s.name(k)
		binary.NativeEndian.PutUint16(hdr[:], uint16(len(name)))
		hdr[2] = uint8(k)
		s.bw.Write(hdr[:])
		s.bw.Write(name)
		end += int64(len(hdr) + len(name))
	}
	if s.bw.Flush() != nil {
		s.broken = true // the run is still in memory; what was written of it is ignored
		return
	}
	s.runs = append(s.runs, end)
	s.idx = s.idx[:0]
	s.used = 0
}

func (s *sortedNames) close() {
	if s.spill != nil {
		s.spill.Close()
	}
	for i := range s.chunks {
		c := s.chunks[i][:0]
		snChunks.Put(&c)
	}
	s.chunks, s.used = nil, 0
}

// snChunks keeps name chunks between directories: zeroing a fresh 64 KiB
// chunk for each directory costs more than listing a small one.
var snChunks = sync.Pool{New: func() any { b := make([]byte, 0, snChunk); return &b }}

// run is one sorted run being merged: read back from the file, or the names
// still in memory.
type run struct {
	r    *bufio.Reader // nil: the names in memory
	s    *sortedNames
	i    int
	name []byte
	dt   uint8
	buf  []byte
}

func (r *run) next() (bool, error) {
	if r.r == nil {
		if r.i >= len(r.s.idx) {
			return false, nil
		}
		k := r.s.idx[r.i]
		r.i++
		r.name, r.dt = r.s.name(k), uint8(k)
		return true, nil
	}
	var hdr [3]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		if err == io.EOF {
			return false, nil
		}
		return false, err
	}
	n := int(binary.NativeEndian.Uint16(hdr[:]))
	r.buf = slices.Grow(r.buf[:0], n)[:n]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		return false, err
	}
	r.name, r.dt = r.buf, hdr[2]
	return true, nil
}

type runHeap []*run

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return bytes.Compare(h[i].name, h[j].name) < 0 }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*run)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// readMerged is readSorted for a directory whose names were spilled: the runs
// are merged and each child is classified, emitted and descended into in
// turn, the directory staying open meanwhile (its names are not all at hand
// to be classified first, as readSorted does before it closes it).
func (w *walk) readMerged(job *listing, fd int, dh *dirHandle, s *sortedNames, em *emitter, scratch []byte) {
	s.sort()
	var h runHeap
	var start int64
	for _, end := range s.runs {
		r := &run{r: bufio.NewReaderSize(io.NewSectionReader(s.spill, start, end-start), 16<<10)}
		start = end
		h = append(h, r)
	}
	h = append(h, &run{s: s})
	fail := func(err error) {
		em.add(Entry{Root: job.root, Rel: job.rel, Type: Dir, Depth: job.depth, Err: err})
	}
	live := h[:0]
	for _, r := range h {
		ok, err := r.next()
		if err != nil {
			fail(err)
			return
		}
		if ok {
			live = append(live, r)
		}
	}
	h = live
	heap.Init(&h)
	var nb []byte
	for len(h) > 0 {
		if w.ctx.Err() != nil {
			return
		}
		r := h[0]
		nb = nb[:0]
		if job.rel != "" {
			nb = append(append(nb, job.rel...), '/')
		}
		nb = append(nb, r.name...)
		rel := unsafe.String(unsafe.SliceData(nb), len(nb)) // for the checks; copied to be kept
		c := child{rel: rel, name: rel[len(rel)-len(r.name):]}
		c.typ, c.err = direntType(fd, c.name, r.dt)
		e, emit, _, dir := w.classify(job, fd, dh, c, em)
		if emit || dir {
			kept := strings.Clone(rel)
			if emit {
				e.Rel = kept
				em.add(e)
			}
			if dir {
				job.root.acquire()
				w.readDir(dirJob{root: job.root, rel: kept, depth: job.depth + 1, parent: dh, up: job.self}, em, scratch)
				job.root.release()
			}
		}
		ok, err := r.next()
		if err != nil {
			fail(err)
			return
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
}
