// Package cache remembers digests between runs in an embedded bbolt database,
// so that files whose metadata did not change are not read again. It is the
// only importer of bbolt.
package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

var (
	// ErrBusy means another run holds the cache: the caller runs without it.
	ErrBusy = errors.New("in use by another run")
	// ErrForeign means the file is not a pbatch cache (or is corrupt).
	ErrForeign = errors.New("not a pbatch cache, or corrupt (use --cache-reset to rebuild it)")
)

var (
	metaBucket    = []byte("pbatch")
	entriesBucket = []byte("entries")
	formatKey     = []byte("format")
	formatValue   = []byte("pbatch-cache-v1")
	prunedKey     = []byte("pruned")
)

// Meta is what must match for a cached digest to be trusted: any change to the
// file changes at least one of them (ctime changes on every write, rename or
// metadata change, and cannot be set by users).
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
	db     *bolt.DB
	writes chan put
	done   chan struct{}
	mu     sync.Mutex
	err    error // first write error
}

type put struct {
	key, value []byte
}

// DefaultPath is $XDG_CACHE_HOME/pbatch/cache.db, else ~/.cache/pbatch/cache.db.
func DefaultPath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "pbatch", "cache.db"), nil
}

// Open opens (or creates) the cache at path. A cache held by another run gives
// ErrBusy after a short wait; a file that is not a pbatch cache gives ErrForeign
// unless reset, which replaces it.
func Open(path string, reset bool) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if reset {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond, NoFreelistSync: true})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, ErrBusy
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrForeign, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(metaBucket)
		if m == nil {
			// A new file holds no bucket at all; any other bbolt file is foreign.
			if tx.Bucket(entriesBucket) != nil || hasBuckets(tx) {
				return ErrForeign
			}
			if m, err = tx.CreateBucket(metaBucket); err != nil {
				return err
			}
			if err := m.Put(formatKey, formatValue); err != nil {
				return err
			}
		} else if !bytes.Equal(m.Get(formatKey), formatValue) {
			return ErrForeign
		}
		_, err := tx.CreateBucketIfNotExists(entriesBucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	d := &DB{db: db, writes: make(chan put, 4096), done: make(chan struct{})}
	go d.writer()
	return d, nil
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
	db *DB
	tx *bolt.Tx
	b  *bolt.Bucket
}

// NewReader returns a Reader; it holds no transaction until the first Get.
func (d *DB) NewReader() *Reader { return &Reader{db: d} }

// Get is DB.Get for a key made by AppendKey. The caller must Release before
// anything that can wait on the cache's writer (Put).
func (r *Reader) Get(k []byte, m Meta, dst []byte) ([]byte, bool) {
	if r.tx == nil {
		tx, err := r.db.db.Begin(false)
		if err != nil {
			return dst, false
		}
		r.tx, r.b = tx, tx.Bucket(entriesBucket)
	}
	return match(r.b.Get(k), m, dst)
}

// Release ends the Reader's transaction, letting the writer grow the file.
func (r *Reader) Release() {
	if r.tx != nil {
		r.tx.Rollback()
		r.tx, r.b = nil, nil
	}
}

func match(v []byte, m Meta, dst []byte) ([]byte, bool) {
	if len(v) <= metaLen {
		return dst, false
	}
	if binary.LittleEndian.Uint64(v[0:]) != m.Dev || binary.LittleEndian.Uint64(v[8:]) != m.Ino ||
		int64(binary.LittleEndian.Uint64(v[16:])) != m.Size || int64(binary.LittleEndian.Uint64(v[24:])) != m.Mtime ||
		int64(binary.LittleEndian.Uint64(v[32:])) != m.Ctime {
		return dst, false
	}
	return append(dst, v[metaLen:]...), true
}

const metaLen = 40

// Get returns the digest cached for path under alg if m matches what was
// recorded, appended to dst.
func (d *DB) Get(path, alg string, m Meta, dst []byte) ([]byte, bool) {
	out, ok := dst, false
	d.db.View(func(tx *bolt.Tx) error {
		out, ok = match(tx.Bucket(entriesBucket).Get(key(path, alg)), m, dst)
		return nil
	})
	return out, ok
}

// Put records a digest; writes are batched by a background goroutine.
func (d *DB) Put(path, alg string, m Meta, digest []byte) { d.PutKey(key(path, alg), m, digest) }

// PutKey is Put for a key made by AppendKey (copied).
func (d *DB) PutKey(k []byte, m Meta, digest []byte) {
	v := make([]byte, metaLen, metaLen+len(digest))
	binary.LittleEndian.PutUint64(v[0:], m.Dev)
	binary.LittleEndian.PutUint64(v[8:], m.Ino)
	binary.LittleEndian.PutUint64(v[16:], uint64(m.Size))
	binary.LittleEndian.PutUint64(v[24:], uint64(m.Mtime))
	binary.LittleEndian.PutUint64(v[32:], uint64(m.Ctime))
	d.writes <- put{bytes.Clone(k), append(v, digest...)}
}

// writer commits puts in large transactions: one per 8192 entries or 500 ms.
func (d *DB) writer() {
	defer close(d.done)
	var batch []put
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		err := d.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(entriesBucket)
			for _, p := range batch {
				if err := b.Put(p.key, p.value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			d.mu.Lock()
			if d.err == nil {
				d.err = err
			}
			d.mu.Unlock()
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

// PruneDue reports whether Prune has not run for a day.
func (d *DB) PruneDue() bool {
	due := true
	d.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(metaBucket).Get(prunedKey)
		if len(v) == 8 {
			due = time.Since(time.Unix(0, int64(binary.LittleEndian.Uint64(v)))) > 24*time.Hour
		}
		return nil
	})
	return due
}

// Prune deletes the entries of files below the given absolute directories that
// no longer exist, and returns how many it deleted.
func (d *DB) Prune(dirs []string) (int, error) {
	n := 0
	err := d.db.Update(func(tx *bolt.Tx) error {
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
		binary.LittleEndian.PutUint64(now[:], uint64(time.Now().UnixNano()))
		return tx.Bucket(metaBucket).Put(prunedKey, now[:])
	})
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

// Close flushes pending writes and closes the database.
func (d *DB) Close() error {
	close(d.writes)
	<-d.done
	err := d.db.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	return err
}
