package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ErrDamaged means the file is a bbolt database whose structure is broken
// (truncated, overwritten in part): it is refused.
var ErrDamaged = errors.New("damaged")

type damaged struct{ why string }

func (d damaged) Error() string {
	return "damaged (" + d.why + "): use --cache-reset to rebuild it"
}

func (d damaged) Is(target error) bool { return target == ErrDamaged }

func damagedf(format string, a ...any) error { return damaged{fmt.Sprintf(format, a...)} }

// The parts of bbolt's on-disk format (go.etcd.io/bbolt/internal/common) that
// checkFile reads.
const (
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elemSize       = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	bucketHdrSize  = 16 // root pgid u64, sequence u64
	branchPage     = 0x01
	leafPage       = 0x02
	metaPage       = 0x04
	freelistPage   = 0x10
	bucketLeaf     = 0x01
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = ^uint64(0)
	maxDepth       = 64      // buckets within buckets and tree levels together
	maxSpan        = 1 << 26 // one page with its overflow; pbatch's values are small
)

type boltMeta struct {
	pageSize                   uint32
	root, freelist, pgid, txid uint64
	valid                      bool
}

func parseMeta(page []byte) boltMeta {
	if len(page) < pageHeaderSize+64 {
		return boltMeta{}
	}
	b := page[pageHeaderSize:]
	le := binary.LittleEndian
	m := boltMeta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]),
		pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}
	h := fnv.New64a()
	h.Write(b[:56])
	m.valid = le.Uint32(b[0:]) == boltMagic && le.Uint32(b[4:]) == boltVersion && le.Uint64(b[56:]) == h.Sum64()
	return m
}

// checkFile checks the structure of the bbolt file f (size bytes long) before
// bbolt maps it. bbolt trusts the page numbers, counts and offsets it finds
// in the map: a page past the end of a truncated file faults (SIGBUS), a
// damaged offset reads outside the map, and opening to write walks the whole
// tree in a goroutine of bbolt's own, where neither can be recovered. So
// every page reachable from the meta page bbolt will choose is read here with
// pread first: inside the file, of a known type, its elements inside it,
// referenced once (no cycles). That is one more read of the file, as bbolt's
// own walk is.
//
// With writable, a file whose freelist was not written (by pbatch before it
// kept one) gets one, made from the pages the walk did not reach: otherwise
// bbolt, opening it to write, makes that list by walking the tree in its own
// goroutine.
func checkFile(f *os.File, size int64, writable bool) error {
	ps, err := pageSize(f, size)
	if err != nil {
		return err
	}
	if size < 2*int64(ps) {
		return damagedf("%d bytes, shorter than its two meta pages", size)
	}
	// bbolt uses the meta page with the higher transaction id if it is valid,
	// else the other one.
	p0, p1 := make([]byte, ps), make([]byte, ps)
	if _, err := f.ReadAt(p0, 0); err != nil {
		return err
	}
	if _, err := f.ReadAt(p1, int64(ps)); err != nil {
		return err
	}
	m0, m1 := parseMeta(p0), parseMeta(p1)
	m, mp := m0, p0
	if m1.txid > m0.txid {
		m, m1 = m1, m0
		mp, p1 = p1, p0
	}
	if !m.valid {
		m, mp = m1, p1
	}
	if !m.valid {
		return ErrForeign
	}
	if m.pgid < 2 || m.pgid > uint64(size)/uint64(ps) {
		return damagedf("truncated: %d bytes, its pages need %d", size, m.pgid*uint64(ps))
	}
	// Another program's database is refused before anything is written to
	// it (writeFreelist below, bbolt's own meta page).
	if foreign, err := foreignBuckets(f, uint64(ps), m); err == nil && foreign {
		return ErrForeign
	}
	c := &checker{f: f, ps: uint64(ps), hwm: m.pgid, seen: make([]byte, (m.pgid+7)/8)}
	c.seen[0] |= 3 // the meta pages
	if _, err = c.page(m.root, 0, nil, nil); err != nil {
		return err
	}
	if m.freelist != noFreelist {
		return c.freelist(m.freelist)
	}
	if writable {
		return c.writeFreelist(m, mp)
	}
	return nil
}

// writeFreelist writes the pages below the high water mark that the walk did
// not reach as a freelist page after them, then a meta page naming it with
// the next transaction id, as bbolt does when it first syncs a freelist.
func (c *checker) writeFreelist(m boltMeta, mp []byte) error {
	le := binary.LittleEndian
	var ids []byte
	n := uint64(0)
	for p := uint64(2); p < c.hwm; p++ {
		if c.seen[p/8]&(1<<(p%8)) == 0 {
			ids = le.AppendUint64(ids, p)
			n++
		}
	}
	count := n
	if n >= 0xFFFF {
		ids = append(le.AppendUint64(nil, n), ids...)
		count = 0xFFFF
	}
	pages := (pageHeaderSize + uint64(len(ids)) + c.ps - 1) / c.ps
	fl := make([]byte, pages*c.ps)
	le.PutUint64(fl[0:], c.hwm)
	le.PutUint16(fl[8:], freelistPage)
	le.PutUint16(fl[10:], uint16(count))
	le.PutUint32(fl[12:], uint32(pages-1))
	copy(fl[pageHeaderSize:], ids)
	if _, err := c.f.WriteAt(fl, int64(c.hwm*c.ps)); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(c.f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: c.f.Name(), Err: err}
	}
	meta := bytes.Clone(mp)
	slot := (m.txid + 1) % 2
	le.PutUint64(meta[0:], slot)
	b := meta[pageHeaderSize:]
	le.PutUint64(b[32:], c.hwm)
	le.PutUint64(b[40:], c.hwm+pages)
	le.PutUint64(b[48:], m.txid+1)
	h := fnv.New64a()
	h.Write(b[:56])
	le.PutUint64(b[56:], h.Sum64())
	if _, err := c.f.WriteAt(meta, int64(slot*c.ps)); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(c.f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: c.f.Name(), Err: err}
	}
	return nil
}

// pageSize finds the page size as bbolt does: from the first meta page, else
// from the second one at each possible offset, else the system's.
func pageSize(f *os.File, size int64) (int, error) {
	var buf [0x1000]byte
	readable := false
	if n, err := f.ReadAt(buf[:], 0); err == nil && n == len(buf) {
		readable = true
		if m := parseMeta(buf[:]); m.valid {
			return checkPageSize(m.pageSize)
		}
	}
	for i := range 15 {
		pos := int64(1024) << i
		if pos >= size-1024 {
			break
		}
		n, err := f.ReadAt(buf[:], pos)
		if (err == nil && n == len(buf)) || (err == io.EOF && int64(n) == size-pos) {
			readable = true
			if m := parseMeta(buf[:n]); m.valid {
				return checkPageSize(m.pageSize)
			}
		}
	}
	if readable {
		return os.Getpagesize(), nil
	}
	return 0, ErrForeign
}

func checkPageSize(ps uint32) (int, error) {
	if ps < 512 || ps > 1<<24 || ps&(ps-1) != 0 {
		return 0, damagedf("page size %d", ps)
	}
	return int(ps), nil
}

type checker struct {
	f       *os.File
	ps, hwm uint64   // page size, high water mark (pages in use)
	seen    []byte   // a bit per page: already reached
	bufs    [][]byte // one per depth
}

// mark records pages id..id+n-1 as reached, failing if one already was.
func (c *checker) mark(id, n uint64) error {
	for p := id; p < id+n; p++ {
		if c.seen[p/8]&(1<<(p%8)) != 0 {
			return damagedf("page %d is referenced twice", p)
		}
		c.seen[p/8] |= 1 << (p % 8)
	}
	return nil
}

// read reads page id with its overflow pages, after checking that they lie
// below the high water mark and were not reached before.
func (c *checker) read(id uint64, depth int) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, damagedf("page %d is outside its %d pages", id, c.hwm)
	}
	for len(c.bufs) <= depth {
		c.bufs = append(c.bufs, make([]byte, c.ps))
	}
	b := c.bufs[depth][:c.ps]
	if _, err := c.f.ReadAt(b, int64(id*c.ps)); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if got := le.Uint64(b); got != id {
		return nil, damagedf("page %d says it is page %d", id, got)
	}
	overflow := uint64(le.Uint32(b[12:]))
	if overflow >= c.hwm-id || (overflow+1)*c.ps > maxSpan {
		return nil, damagedf("page %d runs past the end (%d overflow pages)", id, overflow)
	}
	if err := c.mark(id, overflow+1); err != nil {
		return nil, err
	}
	if overflow == 0 {
		return b, nil
	}
	span := int((overflow + 1) * c.ps)
	if cap(c.bufs[depth]) < span {
		c.bufs[depth] = append(c.bufs[depth][:c.ps], make([]byte, span-int(c.ps))...)
	}
	b = c.bufs[depth][:span]
	if _, err := c.f.ReadAt(b[c.ps:], int64((id+1)*c.ps)); err != nil {
		return nil, err
	}
	return b, nil
}

func (c *checker) freelist(id uint64) error {
	b, err := c.read(id, 0)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	if le.Uint16(b[8:]) != freelistPage {
		return damagedf("page %d is not the freelist", id)
	}
	data := b[pageHeaderSize:]
	n := uint64(le.Uint16(b[10:]))
	if n == 0xFFFF {
		if len(data) < 8 {
			return damagedf("freelist page %d is too short", id)
		}
		n, data = le.Uint64(data), data[8:]
	}
	if n > uint64(len(data))/8 {
		return damagedf("freelist page %d lists %d pages, more than it holds", id, n)
	}
	// bbolt hands out the pages listed as free: each must be inside the file,
	// and neither in use nor listed twice.
	for i := range n {
		p := le.Uint64(data[i*8:])
		if p < 2 || p >= c.hwm {
			return damagedf("freelist page %d lists page %d, outside its %d pages", id, p, c.hwm)
		}
		if err := c.mark(p, 1); err != nil {
			return damagedf("freelist page %d lists page %d, which is in use", id, p)
		}
	}
	return nil
}

// page checks the tree rooted at page id. Its keys must lie in [lo, hi) (nil:
// unbounded) and ascend, as bbolt's own walk requires: any complaint there
// crashes bbolt. It returns a copy of the tree's largest key.
func (c *checker) page(id uint64, depth int, lo, hi []byte) ([]byte, error) {
	if depth > maxDepth {
		return nil, damagedf("nested more than %d levels deep", maxDepth)
	}
	b, err := c.read(id, depth)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	switch le.Uint16(b[8:]) {
	case branchPage:
		n := int(le.Uint16(b[10:]))
		if n == 0 || pageHeaderSize+n*elemSize > len(b) {
			return nil, damagedf("branch page %d has %d elements", id, n)
		}
		keys := make([][]byte, n)
		for i := range n {
			off := pageHeaderSize + i*elemSize
			start := uint64(off) + uint64(le.Uint32(b[off:]))
			end := start + uint64(le.Uint32(b[off+4:]))
			if end > uint64(len(b)) {
				return nil, damagedf("branch page %d: key %d lies outside the page", id, i)
			}
			keys[i] = b[start:end]
		}
		running := lo
		var top []byte
		for i, k := range keys {
			if err := keyOrder(id, i, k, running, hi); err != nil {
				return nil, err
			}
			next := hi
			if i < n-1 {
				next = keys[i+1]
			}
			child := le.Uint64(b[pageHeaderSize+i*elemSize+8:])
			if top, err = c.page(child, depth+1, k, next); err != nil {
				return nil, err
			}
			running = top
		}
		return top, nil
	case leafPage:
		return c.leaf(id, b, depth, lo, hi)
	}
	return nil, damagedf("page %d has type %#x, not a branch or leaf", id, le.Uint16(b[8:]))
}

// keyOrder is bbolt's verifyKeyOrder.
func keyOrder(id uint64, i int, key, prev, hi []byte) error {
	if i == 0 && prev != nil && bytes.Compare(prev, key) > 0 || i > 0 && bytes.Compare(prev, key) >= 0 ||
		hi != nil && bytes.Compare(key, hi) >= 0 {
		return damagedf("page %d: key %d is out of order", id, i)
	}
	return nil
}

// leaf checks the leaf page p (a page read from the file, or a bucket's inline
// page) like page, and the buckets it holds.
func (c *checker) leaf(id uint64, p []byte, depth int, lo, hi []byte) ([]byte, error) {
	le := binary.LittleEndian
	if len(p) < pageHeaderSize {
		return nil, damagedf("page %d: an inline bucket is too short", id)
	}
	n := int(le.Uint16(p[10:]))
	if pageHeaderSize+n*elemSize > len(p) {
		return nil, damagedf("leaf page %d has %d elements, more than it holds", id, n)
	}
	running := lo
	for i := range n {
		off := pageHeaderSize + i*elemSize
		e := p[off:]
		start := uint64(off) + uint64(le.Uint32(e[4:]))
		mid := start + uint64(le.Uint32(e[8:]))
		end := mid + uint64(le.Uint32(e[12:]))
		if end > uint64(len(p)) {
			return nil, damagedf("leaf page %d: entry %d lies outside the page", id, i)
		}
		k := p[start:mid]
		if err := keyOrder(id, i, k, running, hi); err != nil {
			return nil, err
		}
		running = k
		if le.Uint32(e[0:])&bucketLeaf == 0 {
			continue
		}
		v := p[mid:end]
		if len(v) < bucketHdrSize {
			return nil, damagedf("leaf page %d: bucket %d is too short", id, i)
		}
		if root := le.Uint64(v); root != 0 {
			if _, err := c.page(root, depth+1, nil, nil); err != nil {
				return nil, err
			}
			continue
		}
		inline := v[bucketHdrSize:]
		if len(inline) < pageHeaderSize || le.Uint16(inline[8:]) != leafPage {
			return nil, damagedf("leaf page %d: inline bucket %d is not a leaf", id, i)
		}
		if depth+1 > maxDepth {
			return nil, damagedf("nested more than %d levels deep", maxDepth)
		}
		if _, err := c.leaf(id, inline, depth+1, nil, nil); err != nil {
			return nil, err
		}
	}
	if n > 0 {
		return bytes.Clone(running), nil
	}
	return nil, nil
}

// foreignBuckets reports whether the root of meta page m holds buckets no
// pbatch cache has: one not named as pbatch's, or its entries without its
// meta bucket (both are made in one transaction). It reads only the root's
// own tree.
func foreignBuckets(f *os.File, ps uint64, m boltMeta) (bool, error) {
	c := &checker{f: f, ps: ps, hwm: m.pgid, seen: make([]byte, (m.pgid+7)/8)}
	c.seen[0] |= 3
	mine, entries, other := false, false, false
	err := c.top(m.root, 0, func(name []byte) {
		switch {
		case bytes.Equal(name, metaBucket):
			mine = true
		case bytes.Equal(name, entriesBucket):
			entries = true
		default:
			other = true
		}
	})
	return other || entries && !mine, err
}

// top calls fn with the name of each bucket in the tree at page id, without
// going into the buckets.
func (c *checker) top(id uint64, depth int, fn func([]byte)) error {
	if depth > maxDepth {
		return damagedf("nested more than %d levels deep", maxDepth)
	}
	b, err := c.read(id, depth)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	n := int(le.Uint16(b[10:]))
	if pageHeaderSize+n*elemSize > len(b) {
		return damagedf("page %d has %d elements, more than it holds", id, n)
	}
	switch le.Uint16(b[8:]) {
	case branchPage:
		for i := range n {
			if err := c.top(le.Uint64(b[pageHeaderSize+i*elemSize+8:]), depth+1, fn); err != nil {
				return err
			}
		}
		return nil
	case leafPage:
		for i := range n {
			off := pageHeaderSize + i*elemSize
			e := b[off:]
			start := uint64(off) + uint64(le.Uint32(e[4:]))
			end := start + uint64(le.Uint32(e[8:]))
			if end > uint64(len(b)) {
				return damagedf("leaf page %d: entry %d lies outside the page", id, i)
			}
			if le.Uint32(e[0:])&bucketLeaf != 0 {
				fn(b[start:end])
			}
		}
		return nil
	}
	return damagedf("page %d has type %#x, not a branch or leaf", id, le.Uint16(b[8:]))
}

// resettable says whether --cache-reset may empty the file f of size bytes:
// an empty file, a pbatch cache, or a bbolt file too damaged to tell whose it
// is. One whose meta pages (either of them, as long as it can be read) lead
// to buckets no pbatch cache has is another program's database.
func resettable(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	if !looksBolt(f, size) {
		return errors.New("not a bbolt file: not reset")
	}
	ps, err := pageSize(f, size)
	if err != nil {
		return nil // damaged: nothing tells whose it is
	}
	for i := range int64(2) {
		p := make([]byte, ps)
		if _, err := f.ReadAt(p, i*int64(ps)); err != nil {
			continue
		}
		m := parseMeta(p)
		if !m.valid || m.pgid < 2 || m.pgid > uint64(size)/uint64(ps) {
			continue
		}
		if foreign, err := foreignBuckets(f, uint64(ps), m); err == nil && foreign {
			return errors.New("a bbolt database of another program (buckets not pbatch's): not reset")
		}
	}
	return nil
}
