// Package cache remembers digests between runs in an embedded bbolt database,
// so that files whose metadata did not change are not read again. It is the
// only importer of bbolt.
package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

var (
	// ErrBusy means another run holds the cache: the caller runs without it.
	ErrBusy = errors.New("in use by another run")
	// ErrForeign means the file is not a pbatch cache (or is corrupt beyond
	// recognition). It does not suggest --cache-reset: the file may well be
	// someone's data, named by mistake.
	ErrForeign = errors.New("not a pbatch cache, or corrupt: remove it or give another --cache")
	// ErrOldReadOnly means the cache was written by an older pbatch, whose
	// entries cannot be trusted, and cannot be rebuilt: the caller runs without it.
	ErrOldReadOnly = errors.New("written by an older pbatch and cannot be written now")
)

var (
	metaBucket    = []byte("pbatch")
	entriesBucket = []byte("entries")
	formatKey     = []byte("format")
	formatValue   = []byte("pbatch-cache-v2")
	formatV1      = []byte("pbatch-cache-v1") // entries without the time they were recorded
	prunedKey     = []byte("pruned")
)

// Meta is what must match for a cached digest to be trusted: any change to the
// file changes at least one of them (ctime changes on every write, rename or
// metadata change, and cannot be set by users) unless it happens within one
// tick of the file system's clock after the digest was recorded (see match).
type Meta struct {
	Dev, Ino           uint64
	Size, Mtime, Ctime int64
}

// MetaOf extracts Meta from a stat.
func MetaOf(st *unix.Stat_t) Meta {
	return Meta{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}

// DB is an open cache.
type DB struct {
	db       *bolt.DB
	file     *os.File // bbolt's, kept to let go of the lock if bbolt cannot close
	readOnly error    // why the cache is used read-only, or nil
	stamp    int64    // when this run opened the cache, recorded with every entry
	writes   chan put // nil when read-only
	done     chan struct{}
	broken   atomic.Bool   // a fault or panic in bbolt: the cache is no longer used
	brokenCh chan struct{} // closed when broken is set
	once     sync.Once
	mu       sync.Mutex
	err      error // first damage or write error

	// The Readers of the run, whose released transactions are kept for
	// their next Get unless a commit is under way (committing), so that a
	// lookup, a miss and its Put do not cost a transaction each.
	readersMu  sync.Mutex
	readers    []*Reader
	committing atomic.Int32 // commits under way (the writer's and Prune's may overlap), plus 1<<30 once closing
}

type put struct {
	key, value []byte
}

// timeNow is the clock of the entries' recording time; tests replace it.
var timeNow = time.Now

// DefaultPath is $XDG_CACHE_HOME/pbatch/cache.db, else ~/.cache/pbatch/cache.db.
// The parts are joined as text, not cleaned: a ".." in the variable is
// resolved by OpenDir on the file system.
func DefaultPath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return strings.TrimRight(dir, "/") + "/pbatch/cache.db", nil
}

// Open opens (or creates) the cache at path; see openFile for how the file is
// opened and locked, and checkFile for what it must look like. A cache held by
// another run gives ErrBusy after a short wait (the cancellation cause at once
// if ctx ends); a file or file system that cannot be written gives a cache
// used read-only (ReadOnly says why); a file that is not a pbatch cache gives
// ErrForeign, and a damaged one ErrDamaged, unless reset, which empties it.
func Open(ctx context.Context, path string, reset bool) (*DB, error) {
	f, ro, why, err := openFile(ctx, path, reset)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Size() == 0 && ro {
		f.Close()
		return nil, unavailable("empty, and cannot be written: %w", why)
	}
	fresh := st.Size() == 0
	if !fresh {
		if err := checkFile(f, st.Size(), !ro); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := private(uint32(st.Sys().(*syscall.Stat_t).Mode)); err != nil {
		f.Close()
		return nil, err
	}
	handed := false
	opts := &bolt.Options{
		ReadOnly: ro,
		// With the freelist in the file, bbolt reads it where it is asked
		// to, under guard; without, it rebuilds it at each open by walking
		// the tree in a goroutine of its own, where a fault cannot be
		// recovered.
		NoFreelistSync: false,
		// The descriptor is locked already, so bbolt's flock succeeds at once;
		// a timeout all the same, so that nothing here can wait forever.
		Timeout: busyWait,
		// bbolt gets the descriptor checked and locked above, never the name.
		OpenFile: func(name string, _ int, _ os.FileMode) (*os.File, error) {
			if handed || name != path {
				return nil, &os.PathError{Op: "open", Path: name, Err: errors.ErrUnsupported}
			}
			handed = true
			return f, nil
		},
	}
	d := &DB{file: f, readOnly: why, stamp: timeNow().UnixNano(), brokenCh: make(chan struct{})}
	// A new cache that cannot be written out (no space, no quota) is left
	// empty, as it was found, and the run goes on without it.
	// bbolt closes the descriptor when its Open fails: keep one to do that.
	keep := -1
	if fresh && !ro {
		if keep, err = unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("dup: %w", err)
		}
		defer unix.Close(keep)
	}
	unfinished := func(err error) error {
		if keep < 0 || errors.Is(err, ErrDamaged) || errors.Is(err, ErrForeign) {
			return err
		}
		unix.Ftruncate(keep, 0)
		return unavailable("cannot be created: %w", err)
	}
	err = d.guard(func() (err error) {
		d.db, err = bolt.Open(path, 0o600, opts)
		return err
	})
	if err != nil {
		if err = unfinished(err); !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrCannotCreate) {
			err = fmt.Errorf("%w: %v", ErrForeign, err)
		}
		f.Close() // bbolt closed it already unless it panicked
		return nil, err
	}
	if ro {
		err = d.guard(func() error { return d.db.View(checkFormatRO) })
	} else {
		err = d.guard(func() error { return d.db.Update(func(tx *bolt.Tx) error { return checkFormat(tx, fresh) }) })
	}
	if err != nil {
		err = unfinished(err)
		d.closeDB()
		return nil, err
	}
	if !ro {
		d.writes, d.done = make(chan put, 4096), make(chan struct{})
		go d.writer()
	}
	return d, nil
}

// checkFormat makes sure the file is a pbatch cache of this format, starting
// one in a new file and dropping the entries of an older format.
func checkFormat(tx *bolt.Tx, fresh bool) error {
	return lostBucket(checkFormatRW(tx, fresh))
}

// lostBucket names bbolt's error for a bucket that is a plain value now (its
// flag lost) as the damage it is.
func lostBucket(err error) error {
	if errors.Is(err, berrors.ErrIncompatibleValue) {
		return damagedf("a bucket is stored as a value")
	}
	return err
}

func checkFormatRW(tx *bolt.Tx, fresh bool) error {
	m := tx.Bucket(metaBucket)
	if m == nil {
		// Only a file that was empty is new. One that holds no bucket may be
		// another program's database read through an older meta page, its
		// newest one torn: never made a cache.
		if hasBuckets(tx) || !fresh {
			return ErrForeign
		}
		var err error
		if m, err = tx.CreateBucket(metaBucket); err != nil {
			return err
		}
		if err := m.Put(formatKey, formatValue); err != nil {
			return err
		}
	} else if f := m.Get(formatKey); bytes.Equal(f, formatV1) {
		// Entries without the time they were recorded: none can be trusted.
		if tx.Bucket(entriesBucket) != nil {
			if err := tx.DeleteBucket(entriesBucket); err != nil {
				return err
			}
		}
		if err := m.Put(formatKey, formatValue); err != nil {
			return err
		}
	} else if !bytes.Equal(f, formatValue) {
		return ErrForeign
	}
	_, err := tx.CreateBucketIfNotExists(entriesBucket)
	return err
}

// checkFormatRO is checkFormat for a cache that cannot be written.
func checkFormatRO(tx *bolt.Tx) error {
	m := tx.Bucket(metaBucket)
	switch {
	case m == nil && hasBuckets(tx):
		return ErrForeign
	case m == nil: // a new file: no entries
		return nil
	case bytes.Equal(m.Get(formatKey), formatV1):
		return ErrOldReadOnly
	case !bytes.Equal(m.Get(formatKey), formatValue):
		return ErrForeign
	}
	return nil
}

// ReadOnly returns why the cache is used read-only (new digests are not
// saved), or nil.
func (d *DB) ReadOnly() error { return d.readOnly }

// guard runs f, which reads bbolt's map, with faults turned into panics
// (debug.SetPanicOnFault is per goroutine), and turns a panic (a fault, or
// bbolt's own on a page it finds wrong) into an error that marks the cache
// damaged for the rest of the run.
func (d *DB) guard(f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			err = panicDamage(p)
			d.fail(err)
		}
	}()
	return f()
}

// panicDamage describes a panic in bbolt: a fault on its map means the file
// lost pages while open (something truncated it), other panics are bbolt's
// own on a page it found wrong.
func panicDamage(p any) error {
	if e, ok := p.(runtime.Error); ok && strings.Contains(e.Error(), "invalid memory address") {
		return damagedf("a page of it could not be read: it shrank while in use")
	}
	return damagedf("%v", p)
}

func (d *DB) fail(err error) {
	d.mu.Lock()
	if d.err == nil || !errors.Is(d.err, ErrDamaged) && errors.Is(err, ErrDamaged) {
		d.err = err
	}
	d.mu.Unlock()
	if errors.Is(err, ErrDamaged) {
		d.broken.Store(true)
		d.once.Do(func() { close(d.brokenCh) })
	}
}

// call runs f, which takes bbolt's locks, under guard in a goroutine of its
// own, and stops waiting for it once the cache is found damaged: a fault or
// panic inside bbolt can leave its locks held, and f would then wait forever.
// Such a goroutine is left behind; the process ends soon.
func (d *DB) call(f func() error) error {
	if d.broken.Load() {
		return d.damage()
	}
	ch := make(chan error, 1)
	go func() { ch <- d.guard(f) }()
	select {
	case err := <-ch:
		return err
	case <-d.brokenCh:
		return d.damage()
	}
}

// damage returns the error that marked the cache damaged.
func (d *DB) damage() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func hasBuckets(tx *bolt.Tx) bool {
	found := false
	tx.ForEach(func([]byte, *bolt.Bucket) error { found = true; return nil })
	return found
}

func key(path, alg string) []byte { return AppendKey(nil, alg, path) }

// AppendKey appends the key of path under alg to b.
func AppendKey(b []byte, alg, path string) []byte {
	b = append(b, alg...)
	b = append(b, 0)
	return append(b, path...)
}

// Reader looks digests up for one goroutine, in one read transaction kept
// until Release, so that a batch of lookups pays for one transaction.
type Reader struct {
	db   *DB
	tx   *bolt.Tx
	b    *bolt.Bucket
	idle atomic.Pointer[bolt.Tx] // released, kept for the next Get; see reclaim
	keep bool                    // registered with db: may keep an idle transaction
}

// NewReader returns a Reader; it holds no transaction until the first Get.
// Readers last as long as the DB (one per worker).
func (d *DB) NewReader() *Reader {
	r := &Reader{db: d, keep: true}
	d.readersMu.Lock()
	d.readers = append(d.readers, r)
	d.readersMu.Unlock()
	return r
}

// reclaim ends the transactions Readers released and kept, before a commit
// (which may have to wait for every open transaction to remap the file) and
// before Close. A Reader that releases one meanwhile sees committing and ends
// it itself.
func (d *DB) reclaim() {
	d.readersMu.Lock()
	defer d.readersMu.Unlock()
	for _, r := range d.readers {
		if tx := r.idle.Swap(nil); tx != nil && !d.broken.Load() {
			go tx.Rollback()
		}
	}
}

// Get is DB.Get for a key made by AppendKey. The caller must Release before
// anything that can wait on the cache's writer (Put).
func (r *Reader) Get(k []byte, m Meta, dst []byte) (out []byte, ok bool) {
	d := r.db
	if d.broken.Load() {
		return dst, false
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			d.fail(panicDamage(p))
			r.Release()
			out, ok = dst, false
		}
	}()
	if r.tx == nil && d.committing.Load() == 0 {
		if tx := r.idle.Swap(nil); tx != nil {
			r.tx, r.b = tx, tx.Bucket(entriesBucket)
		}
	}
	if r.tx == nil {
		var tx *bolt.Tx
		err := d.call(func() (err error) {
			tx, err = d.db.Begin(false)
			return err
		})
		if err != nil {
			return dst, false
		}
		r.tx, r.b = tx, tx.Bucket(entriesBucket)
	}
	if r.b == nil { // a new cache used read-only
		return dst, false
	}
	out, ok, bad := match(k, r.b.Get(k), m, dst)
	if bad {
		d.fail(damagedf("an entry fails its checksum"))
	}
	return out, ok
}

// Release ends the Reader's transaction, letting the writer grow the file.
// Once the cache is damaged the transaction is dropped: bbolt's locks may be
// held for good, and nothing waits for them any more (see call).
func (r *Reader) Release() {
	if r.tx == nil {
		return
	}
	d, tx := r.db, r.tx
	r.tx, r.b = nil, nil
	if r.keep {
		if old := r.idle.Swap(tx); old != nil && !d.broken.Load() {
			go old.Rollback() // kept while a commit was under way
		}
		if d.committing.Load() == 0 {
			return
		}
		if tx = r.idle.Swap(nil); tx == nil {
			return // reclaimed
		}
	}
	if !d.broken.Load() {
		// Ending a read transaction does not read the map: it cannot fault,
		// but it takes a lock a fault elsewhere can leave held. It lets go
		// of the map first, and nothing needs to wait for the rest.
		go tx.Rollback()
	}
}

// An entry's value: device, inode, size, mtime, ctime and the time it was
// recorded (ns), 8 bytes each, little endian; the CRC-32C of the key and of
// those 48 bytes; the digest.
const (
	stampOff = 40
	crcOff   = 48
	metaLen  = 52
)

// racyMargin is how much older than its recording an entry's mtime and ctime
// must be for it to be trusted. The file system's timestamp granularity is not
// known (1 s on ext4 with 128-byte inodes and ext3, 2 s for FAT's mtime) and
// the kernel stamps files from a clock that lags time.Now by up to a tick: a
// file rewritten with the same size within that window after its digest was
// recorded keeps the recorded mtime and ctime. Such an entry is read again,
// as git does with its "racily clean" index entries.
const racyMargin = 3 * time.Second

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func entryCRC(k, v []byte) uint32 {
	return crc32.Update(crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, v[:crcOff]), castagnoli, v[metaLen:])
}

// match appends the digest in v to dst if v records m, was recorded safely
// after m's timestamps, and is intact (bad reports one that is not).
func match(k, v []byte, m Meta, dst []byte) (out []byte, ok, bad bool) {
	if v == nil {
		return dst, false, false
	}
	if len(v) <= metaLen {
		return dst, false, true
	}
	le := binary.LittleEndian
	if le.Uint64(v[0:]) != m.Dev || le.Uint64(v[8:]) != m.Ino ||
		int64(le.Uint64(v[16:])) != m.Size || int64(le.Uint64(v[24:])) != m.Mtime ||
		int64(le.Uint64(v[32:])) != m.Ctime {
		return dst, false, false
	}
	if max(m.Mtime, m.Ctime) >= int64(le.Uint64(v[stampOff:]))-int64(racyMargin) {
		return dst, false, false
	}
	if le.Uint32(v[crcOff:]) != entryCRC(k, v) {
		return dst, false, true
	}
	return append(dst, v[metaLen:]...), true, false
}

// Get returns the digest cached for path under alg if m matches what was
// recorded, appended to dst.
func (d *DB) Get(path, alg string, m Meta, dst []byte) ([]byte, bool) {
	r := &Reader{db: d}
	defer r.Release()
	return r.Get(key(path, alg), m, dst)
}

// Put records a digest; writes are batched by a background goroutine.
func (d *DB) Put(path, alg string, m Meta, digest []byte) { d.PutKey(key(path, alg), m, digest) }

// PutKey is Put for a key made by AppendKey (copied). It does nothing on a
// cache used read-only or found damaged.
func (d *DB) PutKey(k []byte, m Meta, digest []byte) {
	if d.writes == nil || d.broken.Load() {
		return
	}
	v := make([]byte, metaLen, metaLen+len(digest))
	le := binary.LittleEndian
	le.PutUint64(v[0:], m.Dev)
	le.PutUint64(v[8:], m.Ino)
	le.PutUint64(v[16:], uint64(m.Size))
	le.PutUint64(v[24:], uint64(m.Mtime))
	le.PutUint64(v[32:], uint64(m.Ctime))
	le.PutUint64(v[stampOff:], uint64(d.stamp))
	v = append(v, digest...)
	k = bytes.Clone(k)
	le.PutUint32(v[crcOff:], entryCRC(k, v))
	select {
	case d.writes <- put{k, v}:
	case <-d.brokenCh: // the writer may be stuck in bbolt
	}
}

// writer commits puts in large transactions: one per 8192 entries or 500 ms.
func (d *DB) writer() {
	defer close(d.done)
	var batch []put
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	flush := func() {
		if len(batch) == 0 || d.broken.Load() {
			batch = batch[:0]
			return
		}
		d.committing.Add(1)
		defer d.committing.Add(-1)
		d.reclaim()
		err := d.guard(func() error {
			return d.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket(entriesBucket)
				for _, p := range batch {
					if err := b.Put(p.key, p.value); err != nil {
						return err
					}
				}
				return nil
			})
		})
		if err != nil {
			d.fail(err)
		}
		batch = batch[:0]
	}
	for {
		select {
		case p, ok := <-d.writes:
			if !ok {
				flush()
				return
			}
			batch = append(batch, p)
			if len(batch) >= 8192 {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// PruneDue reports whether Prune has not run for a day (never on a cache that
// cannot be written).
func (d *DB) PruneDue() bool {
	if d.writes == nil || d.broken.Load() {
		return false
	}
	due := true
	d.call(func() error {
		return d.db.View(func(tx *bolt.Tx) error {
			v := tx.Bucket(metaBucket).Get(prunedKey)
			if len(v) == 8 {
				due = timeNow().Sub(time.Unix(0, int64(binary.LittleEndian.Uint64(v)))) > 24*time.Hour
			}
			return nil
		})
	})
	return due
}

// Prune deletes the entries of files below the given absolute directories that
// no longer exist, and returns how many it deleted.
func (d *DB) Prune(dirs []string) (int, error) {
	if d.writes == nil || d.broken.Load() {
		return 0, nil
	}
	n := 0
	d.committing.Add(1)
	defer d.committing.Add(-1)
	d.reclaim()
	err := d.call(func() error {
		return d.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(entriesBucket)
			var gone [][]byte // deleting while iterating can make a cursor skip keys
			c := b.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				i := bytes.IndexByte(k, 0)
				if i < 0 {
					continue
				}
				p := string(k[i+1:])
				if !under(p, dirs) {
					continue
				}
				var st unix.Stat_t
				if unix.Lstat(p, &st) == unix.ENOENT {
					gone = append(gone, bytes.Clone(k))
				}
			}
			for _, k := range gone {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			n = len(gone)
			var now [8]byte
			binary.LittleEndian.PutUint64(now[:], uint64(timeNow().UnixNano()))
			return tx.Bucket(metaBucket).Put(prunedKey, now[:])
		})
	})
	if errors.Is(err, ErrDamaged) {
		return 0, nil // reported by Close
	}
	return n, err
}

func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || len(p) > len(d) && p[:len(d)] == d && (p[len(d)] == '/' || d == "/") {
			return true
		}
	}
	return false
}

// closeDB closes bbolt, or, once it faulted, only the file: its state is not
// to be trusted to unmap and unlock cleanly, and the process ends soon.
func (d *DB) closeDB() error {
	if !d.broken.Load() {
		if err := d.call(d.db.Close); !errors.Is(err, ErrDamaged) {
			return err
		}
	}
	d.file.Close()
	return nil
}

// Close flushes pending writes and closes the database. Its error says the
// cache was found damaged during the run (ErrDamaged: the run went on without
// it from then on) or that digests could not be saved.
func (d *DB) Close() error {
	if d.writes != nil {
		close(d.writes)
		select {
		case <-d.done:
		case <-d.brokenCh: // the writer may be stuck in bbolt
		}
	}
	d.committing.Add(1 << 30) // from now on, no Reader keeps a transaction
	d.reclaim()
	err := d.closeDB()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	return err
}
