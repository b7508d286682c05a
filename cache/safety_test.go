package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// setClock makes timeNow return t for the rest of the test.
func setClock(tb testing.TB, t time.Time) {
	old := timeNow
	timeNow = func() time.Time { return t }
	tb.Cleanup(func() { timeNow = old })
}

func TestRacyEntries(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	p := filepath.Join(t.TempDir(), "c.db")
	setClock(t, t0)
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	cases := []struct {
		name         string
		mtime, ctime int64
		trusted      bool
	}{
		{"old", at(-time.Hour), at(-time.Hour), true},
		{"changed in the second before", at(-time.Second), at(-time.Second), false},
		{"ctime in the window", at(-time.Hour), at(-2 * time.Second), false},
		{"mtime in the window", at(-2 * time.Second), at(-time.Hour), false},
		{"just outside the margin", at(-racyMargin - 1), at(-racyMargin - 1), true},
		{"mtime in the future", at(time.Hour), at(-time.Hour), false},
	}
	for i, tc := range cases {
		db.Put(fmt.Sprint("/f", i), "sha256", Meta{Dev: 1, Ino: uint64(i), Size: 1, Mtime: tc.mtime, Ctime: tc.ctime}, []byte{byte(i)})
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Later runs: what was recorded as racy stays untrusted whatever the time
	// now, until it is recorded again.
	setClock(t, t0.Add(time.Hour))
	db, err = Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		m := Meta{Dev: 1, Ino: uint64(i), Size: 1, Mtime: tc.mtime, Ctime: tc.ctime}
		if _, ok := db.Get(fmt.Sprint("/f", i), "sha256", m, nil); ok != tc.trusted {
			t.Errorf("%s: trusted = %v, want %v", tc.name, ok, tc.trusted)
		}
		if !tc.trusted {
			db.Put(fmt.Sprint("/f", i), "sha256", m, []byte{byte(i)}) // read again, recorded again
		}
	}
	db.Close()
	db, err = Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i, tc := range cases {
		m := Meta{Dev: 1, Ino: uint64(i), Size: 1, Mtime: tc.mtime, Ctime: tc.ctime}
		want := tc.mtime < at(time.Hour-racyMargin)
		if _, ok := db.Get(fmt.Sprint("/f", i), "sha256", m, nil); ok != want {
			t.Errorf("%s, recorded again an hour later: trusted = %v, want %v", tc.name, ok, want)
		}
	}
}

// writeV1 writes a cache as pbatch wrote it before entries carried the time
// they were recorded.
func writeV1(t *testing.T, p string, m Meta, digest []byte) {
	b, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Update(func(tx *bolt.Tx) error {
		mb, _ := tx.CreateBucket(metaBucket)
		mb.Put(formatKey, formatV1)
		eb, _ := tx.CreateBucket(entriesBucket)
		v := make([]byte, 40)
		binary.LittleEndian.PutUint64(v[0:], m.Dev)
		binary.LittleEndian.PutUint64(v[8:], m.Ino)
		binary.LittleEndian.PutUint64(v[16:], uint64(m.Size))
		binary.LittleEndian.PutUint64(v[24:], uint64(m.Mtime))
		binary.LittleEndian.PutUint64(v[32:], uint64(m.Ctime))
		return eb.Put(key("/a", "sha256"), append(v, digest...))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOldFormatNotTrusted(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.db")
	m := Meta{Dev: 1, Ino: 2, Size: 3, Mtime: 4, Ctime: 5}
	writeV1(t, p, m, []byte{0xaa})
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatalf("a cache of the previous format: %v, want it opened", err)
	}
	if d, ok := db.Get("/a", "sha256", m, nil); ok {
		t.Errorf("an entry of the previous format is trusted (%x)", d)
	}
	db.Put("/a", "sha256", m, []byte{0xbb})
	db.Close()
	db, err = Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if d, ok := db.Get("/a", "sha256", m, nil); !ok || d[0] != 0xbb {
		t.Errorf("after migration: Get = %x, %v; want bb, true", d, ok)
	}
}

// chattrImmutable makes p immutable for the test (EPERM on opening to write,
// even for root), or skips.
func chattrImmutable(t *testing.T, p string) {
	if os.Geteuid() != 0 {
		t.Skip("chattr +i needs root")
	}
	if out, err := exec.Command("chattr", "+i", p).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", p).Run() })
}

func TestReadOnlyCache(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.db")
	m := Meta{Dev: 1, Ino: 2, Size: 3, Mtime: 4, Ctime: 5}
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	db.Put("/a", "sha256", m, []byte{0xaa})
	db.Close()
	chattrImmutable(t, p)
	db, err = Open(t.Context(), p, false)
	if err != nil {
		t.Fatalf("immutable cache: %v, want it used read-only", err)
	}
	if !errors.Is(db.ReadOnly(), unix.EPERM) {
		t.Errorf("ReadOnly() = %v, want EPERM", db.ReadOnly())
	}
	if d, ok := db.Get("/a", "sha256", m, nil); !ok || d[0] != 0xaa {
		t.Errorf("read-only Get = %x, %v; want aa, true", d, ok)
	}
	db.Put("/b", "sha256", m, []byte{1}) // dropped, not a crash or a hang
	if db.PruneDue() {
		t.Error("a read-only cache is never due for pruning")
	}
	if err := db.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := Open(t.Context(), p, true); err == nil {
		t.Error("--cache-reset of an immutable cache succeeded")
	}

	old := filepath.Join(dir, "old.db")
	writeV1(t, old, m, []byte{0xaa})
	chattrImmutable(t, old)
	if _, err := Open(t.Context(), old, false); !errors.Is(err, ErrOldReadOnly) {
		t.Errorf("read-only cache of the previous format: %v, want ErrOldReadOnly", err)
	}
}

func TestUnsafeFiles(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600)
	os.Symlink(target, filepath.Join(dir, "dangling"))
	os.Symlink("empty", filepath.Join(dir, "toempty"))
	os.WriteFile(filepath.Join(dir, "linked"), nil, 0o600)
	os.Link(filepath.Join(dir, "linked"), filepath.Join(dir, "linked2"))
	os.WriteFile(filepath.Join(dir, "shared"), nil, 0o600)
	os.Chmod(filepath.Join(dir, "shared"), 0o666)
	os.WriteFile(filepath.Join(dir, "others"), nil, 0o600)
	os.Chown(filepath.Join(dir, "others"), 65534, 65534)
	os.Mkdir(filepath.Join(dir, "adir"), 0o700)
	unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600)
	os.Symlink(filepath.Join(dir, "elsewhere"), filepath.Join(dir, "linkdir"))

	for _, tc := range []struct{ name, path string }{
		{"dangling symlink", "dangling"},
		{"symlink to an empty file", "toempty"},
		{"hard link", "linked"},
		{"writable by others", "shared"},
		{"owned by another user", "others"},
		{"directory", "adir"},
		{"directory with a trailing slash", "adir/"},
		{"FIFO", "fifo"},
	} {
		if tc.path == "others" && os.Geteuid() != 0 {
			continue
		}
		for _, reset := range []bool{false, true} {
			db, err := Open(t.Context(), filepath.Join(dir, tc.path), reset)
			if err == nil {
				db.Close()
				t.Errorf("%s (reset %v): opened, want refused", tc.name, reset)
			}
		}
	}
	if _, err := os.Lstat(target); err == nil {
		t.Error("the target of a dangling symlink was created")
	}
	if st, _ := os.Stat(filepath.Join(dir, "empty")); st.Size() != 0 {
		t.Error("an empty file reached through a symlink was written")
	}

	// Directories pbatch creates are 0700; a symlink it meets among existing
	// directories is the user's own.
	p := filepath.Join(dir, "new", "sub", "c.db")
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, d := range []string{"new", "new/sub"} {
		if st, err := os.Stat(filepath.Join(dir, d)); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, want a 0700 directory", d, st.Mode())
		}
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new cache: %v, want mode 0600", err)
	}
}

func TestBusyWaitEndsOnCancel(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.db")
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithCancelCause(t.Context())
	stop := errors.New("signal")
	cancel(stop)
	start := time.Now()
	if _, err := Open(ctx, p, false); !errors.Is(err, stop) {
		t.Errorf("open while busy and cancelled: %v, want the cancellation cause", err)
	}
	if d := time.Since(start); d > busyWait/2 {
		t.Errorf("cancelled open took %v", d)
	}
}

// goodCache writes a cache big enough to have branch pages, overflow-free
// leaves and a freelist, and returns its bytes.
func goodCache(t testing.TB) []byte {
	p := filepath.Join(t.TempDir(), "c.db")
	db, err := Open(context.Background(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		db.Put(fmt.Sprintf("/tree/d%02d/f%05d", i%17, i), "sha256", Meta{Dev: 1, Ino: uint64(i), Size: int64(i)}, make([]byte, 32))
	}
	db.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// useDamaged opens a cache made of content and uses it as a run would: it
// must fail with an error or work, never crash.
func useDamaged(t testing.TB, dir string, content []byte) error {
	p := filepath.Join(dir, "c.db")
	os.Remove(p)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(context.Background(), p, false)
	if err != nil {
		return err
	}
	r := db.NewReader()
	for i := range 3000 {
		r.Get(key(fmt.Sprintf("/tree/d%02d/f%05d", i%17, i), "sha256"), Meta{Dev: 1, Ino: uint64(i), Size: int64(i)}, nil)
	}
	r.Release()
	for i := range 3000 {
		db.Put(fmt.Sprintf("/new/f%05d", i), "sha256", Meta{}, make([]byte, 32))
	}
	db.PruneDue()
	db.Prune([]string{"/nonexistent-pbatch-test"})
	return db.Close()
}

func TestDamagedCaches(t *testing.T) {
	good := goodCache(t)
	ps := os.Getpagesize()
	dir := t.TempDir()
	if err := useDamaged(t, dir, good); err != nil {
		t.Fatalf("the undamaged cache: %v", err)
	}
	useDamaged(t, dir, good[:len(good)-ps]) // bbolt grows files ahead: may still be whole
	for _, n := range []int{8192, 12288, 2 * ps, 3 * ps, len(good) / 2, 100, 4095} {
		if n >= len(good) {
			continue
		}
		err := useDamaged(t, dir, good[:n])
		if !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrForeign) {
			t.Errorf("truncated to %d bytes: %v, want ErrDamaged or ErrForeign", n, err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		b := append([]byte(nil), good...)
		for range 1 + i%4 {
			off := rng.IntN(len(b))
			if i%3 == 0 { // in page headers and element headers, where offsets live
				off = rng.IntN(len(b)/ps)*ps + rng.IntN(64)
			}
			b[off] ^= 1 << rng.IntN(8)
		}
		useDamaged(t, dir, b) // any outcome but a crash
	}
	zeroed := append([]byte(nil), good...)
	clear(zeroed[len(zeroed)/2 : len(zeroed)/2+ps])
	useDamaged(t, dir, zeroed)
}

func FuzzDamagedCache(f *testing.F) {
	good := goodCache(f)
	f.Add(uint32(8192), uint32(0), byte(0))
	f.Add(uint32(len(good)), uint32(4096+16), byte(1))
	f.Fuzz(func(t *testing.T, size, off uint32, flip byte) {
		b := append([]byte(nil), good[:min(int(size), len(good))]...)
		if len(b) > 0 {
			b[int(off)%len(b)] ^= flip
		}
		useDamaged(t, t.TempDir(), b)
	})
}

// A cache truncated behind bbolt's back during a run (by something that
// ignores its lock) faults on the pages it lost: the run goes on without it.
func TestTruncatedWhileOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.db")
	if err := os.WriteFile(p, goodCache(t), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, int64(2*os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	r := db.NewReader()
	hits := 0
	for i := range 3000 {
		if _, ok := r.Get(key(fmt.Sprintf("/tree/d%02d/f%05d", i%17, i), "sha256"), Meta{Dev: 1, Ino: uint64(i), Size: int64(i)}, nil); ok {
			hits++
		}
	}
	r.Release()
	for i := range 100 {
		db.Put(fmt.Sprintf("/new/f%05d", i), "sha256", Meta{}, make([]byte, 32))
	}
	if hits != 0 {
		t.Errorf("%d hits from a truncated cache, want 0", hits)
	}
	if err := db.Close(); !errors.Is(err, ErrDamaged) {
		t.Errorf("Close = %v, want ErrDamaged", err)
	}
}

// A cache truncated while several workers look digests up and record new
// ones: a fault can leave bbolt's locks held (beginTx faults holding its
// metalock), and a worker that then waits for them in Begin, Rollback or the
// writer's queue would never finish. Each round must end, cache damaged.
func TestTruncatedWhileOpenWorkers(t *testing.T) {
	good := goodCache(t)
	dir := t.TempDir()
	for round := range 20 {
		p := filepath.Join(dir, fmt.Sprint(round, ".db"))
		if err := os.WriteFile(p, good, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := Open(t.Context(), p, false)
		if err != nil {
			t.Fatal(err)
		}
		finished := make(chan error)
		go func() {
			var wg sync.WaitGroup
			for w := range 6 {
				wg.Go(func() {
					r := db.NewReader()
					for i := range 3000 {
						k := key(fmt.Sprintf("/tree/d%02d/f%05d", i%17, i), "sha256")
						if _, ok := r.Get(k, Meta{Dev: 1, Ino: uint64(i), Size: int64(i)}, nil); !ok || i%7 == w {
							r.Release()
							db.Put(fmt.Sprintf("/new/%d/f%05d", w, i), "sha256", Meta{}, make([]byte, 32))
						}
						if i%50 == 0 {
							r.Release()
						}
					}
					r.Release()
				})
			}
			time.Sleep(time.Duration(round%5) * time.Millisecond)
			os.Truncate(p, int64(round%3)*int64(os.Getpagesize()))
			wg.Wait()
			db.PruneDue()
			finished <- db.Close()
		}()
		select {
		case err := <-finished:
			if err != nil && !errors.Is(err, ErrDamaged) {
				t.Errorf("round %d: Close = %v, want nil or ErrDamaged", round, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: the workers did not finish", round)
		}
	}
}

// A bucket whose flag was lost is a plain value to bbolt, which then answers
// "incompatible value": damaged, with the same advice as other damage.
func TestLostBucketFlag(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.db")
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	db.Put("/f", "sha256", Meta{}, make([]byte, 32))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	ps, le, cleared := os.Getpagesize(), binary.LittleEndian, 0
	for off := 2 * ps; off+ps <= len(b); off += ps {
		pg := b[off : off+ps]
		if le.Uint16(pg[8:]) != leafPage {
			continue
		}
		for i := range int(le.Uint16(pg[10:])) {
			e := pg[pageHeaderSize+i*elemSize:]
			pos, ksize := int(le.Uint32(e[4:])), int(le.Uint32(e[8:]))
			k := pageHeaderSize + i*elemSize + pos
			if le.Uint32(e) == bucketLeaf && k+ksize <= ps && string(pg[k:k+ksize]) == string(entriesBucket) {
				le.PutUint32(e, 0)
				cleared++
			}
		}
	}
	if cleared == 0 {
		t.Fatal("no entries bucket found in the file")
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), p, false)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "use --cache-reset to rebuild it") {
		t.Errorf("Open = %v, want damaged: use --cache-reset to rebuild it", err)
	}
}

// A cache written without a freelist (pbatch before it kept one) gets one
// from checkFile before bbolt opens it to write, so that bbolt does not walk
// the tree in a goroutine of its own where a fault kills the process; the
// list must be exactly the pages no bucket uses, as bbolt's Check sees it.
func TestOldFreelistSynced(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.db")
	b, err := bolt.Open(p, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	keyOf := func(i int) []byte { return key(fmt.Sprintf("/tree/f%05d", i), "sha256") }
	err = b.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucket(metaBucket)
		m.Put(formatKey, formatValue)
		e, _ := tx.CreateBucket(entriesBucket)
		for i := range 5000 {
			e.Put(keyOf(i), make([]byte, metaLen+32))
		}
		return nil
	})
	if err == nil {
		err = b.Update(func(tx *bolt.Tx) error {
			e := tx.Bucket(entriesBucket)
			for i := 0; i < 5000; i += 2 {
				e.Delete(keyOf(i))
			}
			return nil
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	freelistOf := func() uint64 {
		f, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ps := os.Getpagesize()
		m0, m1 := parseMeta(f[:ps]), parseMeta(f[ps:2*ps])
		if m1.txid > m0.txid {
			return m1.freelist
		}
		return m0.freelist
	}
	if freelistOf() != noFreelist {
		t.Fatal("the test cache has a freelist")
	}
	// checkFile itself writes it, before bbolt sees the file.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	err = checkFile(f, st.Size(), true)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if freelistOf() == noFreelist {
		t.Fatal("no freelist in the file after checkFile")
	}
	boltCheck := func(when string) {
		b, err := bolt.Open(p, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		b.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				t.Errorf("%s: bbolt's check: %v", when, err)
			}
			if n := tx.Bucket(entriesBucket).Stats().KeyN; n != 2500 {
				t.Errorf("%s: %d entries, want 2500", when, n)
			}
			return nil
		})
	}
	boltCheck("after checkFile")
	db, err := Open(t.Context(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	boltCheck("after a run")
}
