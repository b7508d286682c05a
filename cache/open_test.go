package cache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// foreignDB writes another program's bbolt database: a bucket "v1" holding a
// bucket "meta" with precious=data.
// With pbatchToo, a bucket named as pbatch's meta bucket is there too.
func foreignDB(t *testing.T, p string, noFreelistSync, pbatchToo bool) []byte {
	b, err := bolt.Open(p, 0o600, &bolt.Options{NoFreelistSync: noFreelistSync})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		v1, err := tx.CreateBucket([]byte("v1"))
		if err != nil {
			return err
		}
		m, err := v1.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		if err := m.Put([]byte("precious"), []byte("data")); err != nil {
			return err
		}
		if pbatchToo {
			pm, err := tx.CreateBucket(metaBucket)
			if err != nil {
				return err
			}
			return pm.Put(formatKey, formatValue)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	content, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return content
}

// Another program's database is neither written (a freelist, a meta page)
// before it is found foreign, nor emptied by --cache-reset.
func TestForeignUntouched(t *testing.T) {
	for _, tc := range []struct {
		name           string
		noFreelistSync bool
		pbatchToo      bool
	}{
		{"no freelist in the file", true, false},
		{"freelist in the file", false, false},
		{"a bucket named as pbatch's among others", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "other.db")
			before := foreignDB(t, p, tc.noFreelistSync, tc.pbatchToo)
			db, err := Open(t.Context(), p, false)
			if err == nil {
				db.Close()
			}
			if !errors.Is(err, ErrForeign) {
				t.Errorf("open: %v, want ErrForeign", err)
			}
			if _, err := Open(t.Context(), p, true); err == nil || !strings.Contains(err.Error(), "another program") {
				t.Errorf("reset: %v, want refused as another program's", err)
			}
			after, _ := os.ReadFile(p)
			if !bytes.Equal(before, after) {
				t.Errorf("the foreign database was modified (%d bytes before, %d after)", len(before), len(after))
			}
		})
	}
}

// --cache-reset empties pbatch's own cache, and a bbolt file too damaged to
// tell whose it is.
func TestResetOwnOrDamaged(t *testing.T) {
	good := goodCache(t)
	ps := os.Getpagesize()
	root := parseMeta(good[:ps]).root
	if m1 := parseMeta(good[ps : 2*ps]); m1.txid > parseMeta(good[:ps]).txid {
		root = m1.root
	}
	noRoot := bytes.Clone(good)
	clear(noRoot[root*uint64(ps) : (root+1)*uint64(ps)])
	badMeta := bytes.Clone(good)
	badMeta[pageHeaderSize+60] ^= 1 // both checksums wrong, magic kept
	badMeta[ps+pageHeaderSize+60] ^= 1
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		content []byte
	}{{"a pbatch cache", good}, {"its root page lost", noRoot}, {"both meta pages damaged", badMeta}, {"empty", nil}} {
		p := filepath.Join(dir, "c.db")
		os.Remove(p)
		os.WriteFile(p, tc.content, 0o600)
		db, err := Open(t.Context(), p, true)
		if err != nil {
			t.Errorf("%s: reset: %v", tc.name, err)
			continue
		}
		db.Close()
	}
}

// A cache others can read lists names, digests and stat data: refused (pbatch
// has always created it 0600).
func TestCacheReadableByOthers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.db")
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, mode := range []os.FileMode{0o640, 0o604} {
		os.Chmod(p, mode)
		db, err := Open(t.Context(), p, false)
		if err == nil {
			db.Close()
		}
		want := fmt.Sprintf("readable by group or others (mode %04o): chmod 600 it", mode)
		if !errors.Is(err, ErrNotSafe) || !strings.Contains(err.Error(), want) {
			t.Errorf("mode %o: %v, want refused (%s)", mode, err, want)
		}
	}
}

// Names that are not files of their own are refused before they are opened to
// read or write: a device, a procfs file of size 0 (the old code wrote a new
// bbolt database into /proc/self/comm, renaming the test's thread).
func TestPseudoFiles(t *testing.T) {
	comm, _ := os.ReadFile("/proc/self/comm")
	for _, tc := range []struct{ path, want string }{
		{"/proc/self/comm", "on a proc file system"},
		{"/proc/sys/kernel/domainname", "on a proc file system"},
		{"/dev/null", "not a regular file"},
	} {
		for _, reset := range []bool{false, true} {
			db, err := Open(t.Context(), tc.path, reset)
			if err == nil {
				db.Close()
			}
			if !errors.Is(err, ErrNotSafe) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s (reset %v): %v, want refused: %s", tc.path, reset, err, tc.want)
			}
		}
	}
	if now, _ := os.ReadFile("/proc/self/comm"); !bytes.Equal(now, comm) {
		t.Errorf("/proc/self/comm was written: %q", now)
	}
}

// ".." is resolved on the file system, after symlinks, as the kernel does; a
// name ending in "/" names a directory.
func TestPathsResolvedByTheFileSystem(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "real", "deep"), 0o700)
	os.Symlink("real/deep", filepath.Join(dir, "rl"))
	db, err := Open(t.Context(), dir+"/rl/../lex.db", false)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(filepath.Join(dir, "real", "lex.db")); err != nil {
		t.Errorf("rl/../lex.db: %v, want it in real/ (rl's target's parent)", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "lex.db")); err == nil {
		t.Error("rl/../lex.db was created next to rl")
	}

	// A missing directory followed by "..": ENOENT, nothing made.
	_, err = Open(t.Context(), dir+"/x/../y/c.db", false)
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("x/../y/c.db with x missing: %v, want ENOENT", err)
	}
	for _, n := range []string{"x", "y"} {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			t.Errorf("%s was created", n)
		}
	}

	for _, p := range []string{dir + "/newc/", dir + "/real/..", dir + "/real/."} {
		db, err := Open(t.Context(), p, false)
		if err == nil {
			db.Close()
		}
		if !errors.Is(err, ErrNotSafe) || !strings.Contains(err.Error(), "names a directory") {
			t.Errorf("%s: %v, want refused as a directory name", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "newc")); err == nil {
		t.Error("newc/ was created")
	}
}

// Names in OpenDir's messages are quoted: a newline in one cannot start a
// line of its own.
func TestOpenDirQuotesNames(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "a\npbatch: forged")
	os.Mkdir(bad, 0o700)
	os.Chmod(bad, 0o777)
	os.Symlink("nowhere", filepath.Join(dir, "l\nx"))
	for _, p := range []string{bad + "/c.db", dir + "/l\nx/c.db", dir + "/m\nissing\x1b/c.db"} {
		_, err := OpenDir(filepath.Dir(p), false)
		if err == nil || strings.ContainsAny(err.Error(), "\n\x1b") {
			t.Errorf("%q: %q, want an error without raw control characters", p, err)
		}
	}
}

// A database of one transaction whose newest meta page is torn reads, through
// the older meta page, as a file without buckets: that is no new cache, and
// an ordinary run must leave it as it is (it made it a cache, the data gone).
func TestTornForeignUntouched(t *testing.T) {
	p := filepath.Join(t.TempDir(), "other.db")
	foreignDB(t, p, false, false)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, 72); err != nil { // meta page 0, the newest: its checksum
		t.Fatal(err)
	}
	f.Close()
	before, _ := os.ReadFile(p)
	db, err := Open(t.Context(), p, false)
	if err == nil {
		db.Close()
	}
	if !errors.Is(err, ErrForeign) && !errors.Is(err, ErrDamaged) {
		t.Errorf("open: %v, want it refused", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Errorf("the database was modified (%d bytes before, %d after)", len(before), len(after))
	}
}
