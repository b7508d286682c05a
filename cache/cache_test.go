package cache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestPutGetAndInvalidation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.db")
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	m := Meta{Dev: 1, Ino: 2, Size: 3, Mtime: 4, Ctime: 5}
	db.Put("/a", "sha256", m, []byte{0xaa, 0xbb})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := db.NewReader()
	defer r.Release()
	for _, tc := range []struct {
		name string
		alg  string
		m    Meta
		ok   bool
	}{
		{"same", "sha256", m, true},
		{"other algorithm", "md5", m, false},
		{"other inode", "sha256", Meta{1, 9, 3, 4, 5}, false},
		{"other device", "sha256", Meta{9, 2, 3, 4, 5}, false},
		{"other size", "sha256", Meta{1, 2, 9, 4, 5}, false},
		{"other mtime", "sha256", Meta{1, 2, 3, 9, 5}, false},
		{"other ctime", "sha256", Meta{1, 2, 3, 4, 9}, false},
	} {
		got, ok := r.Get(AppendKey(nil, tc.alg, "/a"), tc.m, nil)
		if ok != tc.ok || (ok && !bytes.Equal(got, []byte{0xaa, 0xbb})) {
			t.Errorf("%s: Get = %x, %v; want ok=%v", tc.name, got, ok, tc.ok)
		}
		if got, ok := db.Get("/a", tc.alg, tc.m, nil); ok != tc.ok {
			t.Errorf("%s: DB.Get = %x, %v; want ok=%v", tc.name, got, ok, tc.ok)
		}
	}
}

func TestForeignAndCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 1000), 0o600)
	if _, err := Open(t.Context(), garbage, false); !errors.Is(err, ErrForeign) {
		t.Errorf("garbage file: %v, want ErrForeign", err)
	}
	other := filepath.Join(dir, "other.db")
	b, _ := bolt.Open(other, 0o600, nil)
	b.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("someone-else")); return err })
	b.Close()
	if _, err := Open(t.Context(), other, false); !errors.Is(err, ErrForeign) {
		t.Errorf("another program's bbolt file: %v, want ErrForeign", err)
	}
	// Reset empties only a bbolt file of pbatch's (see TestForeignUntouched),
	// never another file.
	if _, err := Open(t.Context(), garbage, true); err == nil || !strings.Contains(err.Error(), "not a bbolt file") {
		t.Errorf("reset of a file that is not bbolt's: %v, want refused", err)
	}
	if st, err := os.Stat(garbage); err != nil || st.Size() != 15000 {
		t.Errorf("garbage file after a refused reset: %v, %v", st, err)
	}
	if _, err := Open(t.Context(), other, true); err == nil || !strings.Contains(err.Error(), "another program") {
		t.Errorf("reset of another program's bbolt file: %v, want refused", err)
	}
}

func TestBusy(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.db")
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Open(t.Context(), p, false); !errors.Is(err, ErrBusy) {
		t.Errorf("second open: %v, want ErrBusy", err)
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "keep")
	os.WriteFile(keep, nil, 0o644)
	p := filepath.Join(t.TempDir(), "c.db")
	db, _ := Open(t.Context(), p, false)
	db.Put(keep, "sha256", Meta{}, []byte{1})
	db.Put(filepath.Join(dir, "gone"), "sha256", Meta{}, []byte{2})
	db.Put("/elsewhere/gone", "sha256", Meta{}, []byte{3})
	db.Close()
	db, _ = Open(t.Context(), p, false)
	defer db.Close()
	if !db.PruneDue() {
		t.Error("a new cache should be due for pruning")
	}
	n, err := db.Prune([]string{dir})
	if err != nil || n != 1 {
		t.Errorf("Prune = %d, %v; want 1 (only the missing file under dir)", n, err)
	}
	if db.PruneDue() {
		t.Error("just pruned: not due")
	}
	count := 0
	db.db.View(func(tx *bolt.Tx) error { count = tx.Bucket(entriesBucket).Stats().KeyN; return nil })
	if count != 2 {
		t.Errorf("%d entries left, want 2", count)
	}
}
