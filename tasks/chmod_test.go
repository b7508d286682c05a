package tasks

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

func walkDirs(t testing.TB, root string) []walker.Entry {
	t.Helper()
	out := make(chan []walker.Entry, 16)
	errc := make(chan error, 1)
	go func() {
		errc <- walker.Walk(context.Background(), func(yield func(string, error) bool) { yield(root, nil) },
			walker.Options{MaxDepth: -1, Sorted: true, Dirs: true}, out)
		close(out)
	}()
	var es []walker.Entry
	for b := range out {
		es = append(es, b...)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return es
}

// runMeta runs a metadata task over root and returns results by path below root.
func runMeta(t testing.TB, task Task, root string) map[string]Result {
	t.Helper()
	w := task.NewWorker()
	res := map[string]Result{}
	for _, e := range walkDirs(t, root) {
		r := Result{Entry: e}
		w.Run(context.Background(), &e, &r)
		e.Done()
		res[e.Rel] = r
	}
	if f, ok := task.(Finisher); ok {
		for _, r := range f.Finish(context.Background()) {
			res[r.Entry.Rel] = r
		}
	}
	return res
}

func mode(t testing.TB, p string) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mode & modeBits
}

func mustMode(t testing.TB, s string) *Mode {
	t.Helper()
	m, err := ParseMode(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestChmodChangesOnlyWhatDiffers(t *testing.T) {
	root := t.TempDir()
	os.Chmod(root, 0o755)
	os.WriteFile(filepath.Join(root, "right"), nil, 0o644)
	os.WriteFile(filepath.Join(root, "wrong"), nil, 0o666)
	os.Chmod(filepath.Join(root, "wrong"), 0o666)
	os.Mkdir(filepath.Join(root, "d"), 0o700)
	time.Sleep(20 * time.Millisecond) // make a ctime change visible
	var before unix.Stat_t
	unix.Stat(filepath.Join(root, "right"), &before)

	res := runMeta(t, &Chmod{files: mustMode(t, "0644"), dirs: mustMode(t, "0755"), umask: 0o022}, root)

	var after unix.Stat_t
	unix.Stat(filepath.Join(root, "right"), &after)
	if before.Ctim != after.Ctim {
		t.Errorf("ctime of an already-right file changed: a write syscall was made")
	}
	for rel, want := range map[string]struct {
		modified bool
		mode     uint32
	}{"": {false, 0o755}, "right": {false, 0o644}, "wrong": {true, 0o644}, "d": {true, 0o755}} {
		r := res[rel]
		if r.Status != OK || r.Modified != want.modified {
			t.Errorf("%q: status %v modified %v (%v), want ok modified %v", rel, r.Status, r.Modified, r.Err, want.modified)
		}
		if got := mode(t, filepath.Join(root, rel)); got != want.mode {
			t.Errorf("%q: mode %04o, want %04o", rel, got, want.mode)
		}
	}
}

func TestChmodDryRunChangesNothing(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "f")
	os.WriteFile(p, nil, 0o600)
	res := runMeta(t, &Chmod{files: mustMode(t, "0644"), umask: 0o022, opt: MetaOptions{DryRun: true}}, root)
	if r := res["f"]; !r.Modified || r.Old[0] != 0o600 || r.New[0] != 0o644 {
		t.Errorf("dry run result %+v, want modified 0600 -> 0644", r)
	}
	if got := mode(t, p); got != 0o600 {
		t.Errorf("dry run changed the mode to %04o", got)
	}
}

func TestChmodKeepsDirectorySetgid(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want uint32
	}{{"755", 0o2755}, {"0755", 0o2755}, {"00755", 0o755}, {"u=rwx,g=rx,o=rx", 0o2755}, {"g-s", 0o775}} {
		root := t.TempDir()
		d := filepath.Join(root, "d")
		os.Mkdir(d, 0o775)
		os.Chmod(d, 0o775|os.ModeSetgid)
		runMeta(t, &Chmod{dirs: mustMode(t, tc.mode), umask: 0o022}, d)
		if got := mode(t, d); got != tc.want {
			t.Errorf("chmod %s on a setgid directory: %04o, want %04o", tc.mode, got, tc.want)
		}
	}
}

func TestChmodSkipsHardlinksSymlinksAndSpecialFiles(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "f"), nil, 0o600)
	os.Link(filepath.Join(root, "f"), filepath.Join(root, "f2"))
	os.Symlink("f", filepath.Join(root, "link"))
	unix.Mkfifo(filepath.Join(root, "fifo"), 0o600)
	res := runMeta(t, &Chmod{files: mustMode(t, "0644"), umask: 0o022}, root)
	for _, rel := range []string{"f", "f2", "link", "fifo"} {
		if r := res[rel]; r.Status != Skipped {
			t.Errorf("%s: status %v (%v), want skipped", rel, r.Status, r.Err)
		}
	}
	if got := mode(t, filepath.Join(root, "fifo")); got != 0o600 {
		t.Errorf("FIFO mode changed to %04o", got)
	}
	runMeta(t, &Chmod{files: mustMode(t, "0644"), umask: 0o022, opt: MetaOptions{AllowHardlinks: true}}, root)
	if got := mode(t, filepath.Join(root, "f")); got != 0o644 {
		t.Errorf("--allow-hardlinks: mode %04o, want 0644", got)
	}
}

// A mode that can take the owner's read or search permission from a
// directory asks the walk for directories after what is below them.
func TestChmodPostOrder(t *testing.T) {
	tests := []struct {
		files, dirs string
		want        bool
	}{
		{"", "u-x", true},
		{"", "0600", true},
		{"", "a-r", true},
		{"", "u=g", true}, // from 0o750, say
		{"", "go-rwx", false},
		{"", "0755", false},
		{"", "u+rwx", false},
		{"", "a+X", false},
		{"0600", "", false}, // directories left alone
	}
	for _, tt := range tests {
		task := &Chmod{umask: 0o022}
		if tt.files != "" {
			task.files = mustMode(t, tt.files)
		}
		if tt.dirs != "" {
			task.dirs = mustMode(t, tt.dirs)
		}
		if got := task.PostOrder(); got != tt.want {
			t.Errorf("files %q dirs %q: PostOrder %v, want %v", tt.files, tt.dirs, got, tt.want)
		}
	}
}

func TestChmodImmutableFileFailsOthersProceed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chattr +i needs root")
	}
	root := t.TempDir()
	im := filepath.Join(root, "immutable")
	os.WriteFile(im, nil, 0o600)
	os.WriteFile(filepath.Join(root, "other"), nil, 0o600)
	if out, err := exec.Command("chattr", "+i", im).CombinedOutput(); err != nil {
		t.Skipf("chattr +i not supported here: %v %s", err, out)
	}
	defer exec.Command("chattr", "-i", im).Run()
	res := runMeta(t, &Chmod{files: mustMode(t, "0644"), umask: 0o022}, root)
	if r := res["immutable"]; r.Status != Failed || !errors.Is(r.Err, unix.EPERM) {
		t.Errorf("immutable: %v %v, want failed EPERM", r.Status, r.Err)
	}
	if got := mode(t, filepath.Join(root, "other")); got != 0o644 {
		t.Errorf("other file not processed: %04o", got)
	}
}

// TestChmodChownSymlinkSwapRace swaps entries for symlinks to victims outside the
// tree while chmod and chown run over and over: the victims never change.
func TestChmodChownSymlinkSwapRace(t *testing.T) {
	if testing.Short() {
		t.Skip("race test runs for seconds")
	}
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, []byte("secret"), 0o600)
	victimDir := filepath.Join(outside, "vdir")
	os.Mkdir(victimDir, 0o700)
	os.WriteFile(filepath.Join(victimDir, "inner"), nil, 0o600)

	root := t.TempDir()
	x := filepath.Join(root, "x")
	d := filepath.Join(root, "d")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var swaps atomic.Int64
	wg.Go(func() {
		tmpF := filepath.Join(root, ".f")
		tmpL := filepath.Join(root, ".l")
		tmpD := filepath.Join(root, ".d")
		tmpDL := filepath.Join(root, ".dl")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Atomic swaps with rename: a file or a symlink to the victim at x,
			// a directory or a symlink to the victim's directory at d.
			if i%2 == 0 {
				os.WriteFile(tmpF, nil, 0o600)
				os.Rename(tmpF, x)
				os.RemoveAll(tmpD)
				os.Mkdir(tmpD, 0o700)
				os.WriteFile(filepath.Join(tmpD, "inner"), nil, 0o600)
				os.RemoveAll(d)
				os.Rename(tmpD, d)
			} else {
				os.Symlink(victim, tmpL)
				os.Rename(tmpL, x)
				os.Symlink(victimDir, tmpDL)
				os.RemoveAll(d)
				os.Rename(tmpDL, d)
			}
			swaps.Add(1)
		}
	})
	deadline := time.Now().Add(3 * time.Second)
	runs := 0
	for time.Now().Before(deadline) {
		runMeta(t, &Chmod{files: mustMode(t, "0777"), dirs: mustMode(t, "0777"), umask: 0}, root)
		runMeta(t, &Chown{to: Owner{12345, 12345}, from: Owner{-1, -1}}, root)
		runs++
	}
	close(stop)
	wg.Wait()
	for _, p := range []string{victim, victimDir, filepath.Join(victimDir, "inner")} {
		var st unix.Stat_t
		unix.Lstat(p, &st)
		if st.Mode&0o777 != 0o600 && st.Mode&0o777 != 0o700 {
			t.Errorf("%s: mode changed to %04o through a swapped symlink", p, st.Mode&0o7777)
		}
		if st.Uid == 12345 || st.Gid == 12345 {
			t.Errorf("%s: owner changed to %d:%d through a swapped symlink", p, st.Uid, st.Gid)
		}
	}
	t.Logf("%d runs against %d swaps", runs, swaps.Load())
}

func TestParseOwner(t *testing.T) {
	for _, tc := range []struct {
		in       string
		uid, gid int
		ok       bool
	}{
		{"0", 0, -1, true},
		{"root", 0, -1, true},
		{"root:", 0, 0, true},
		{"root:root", 0, 0, true},
		{":0", -1, 0, true},
		{"1000:1000", 1000, 1000, true},
		{"+0:+0", 0, 0, true},
		{"nosuchuser-pbatch", 0, 0, false},
		{"0:nosuchgroup-pbatch", 0, 0, false},
		{"", 0, 0, false},
		{"4294967295", 0, 0, false},
	} {
		o, err := ParseOwner(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseOwner(%q): err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (o.UID != tc.uid || o.GID != tc.gid) {
			t.Errorf("ParseOwner(%q) = %d:%d, want %d:%d", tc.in, o.UID, o.GID, tc.uid, tc.gid)
		}
	}
}

func TestChownFromAndNoDereference(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	root := t.TempDir()
	a := filepath.Join(root, "a")
	b := filepath.Join(root, "b")
	l := filepath.Join(root, "l")
	os.WriteFile(a, nil, 0o644)
	os.WriteFile(b, nil, 0o644)
	os.Chown(b, 1001, 1001)
	os.Symlink("a", l)
	res := runMeta(t, &Chown{to: Owner{2000, -1}, from: Owner{1001, -1}}, root)
	var st unix.Stat_t
	unix.Lstat(a, &st)
	if st.Uid != 0 || res["a"].Modified {
		t.Errorf("--from 1001 changed a (owned by 0): uid %d", st.Uid)
	}
	unix.Lstat(b, &st)
	if st.Uid != 2000 || st.Gid != 1001 {
		t.Errorf("b: %d:%d, want 2000:1001", st.Uid, st.Gid)
	}
	if r := res["l"]; r.Status != Skipped {
		t.Errorf("symlink without -h: %v, want skipped", r.Status)
	}
	runMeta(t, &Chown{to: Owner{3000, 3000}, from: Owner{-1, -1}, noDeref: true}, root)
	unix.Lstat(l, &st)
	var sa unix.Stat_t
	unix.Lstat(a, &sa)
	if st.Uid != 3000 || sa.Uid != 3000 {
		t.Errorf("-h: link %d, target %d; want both 3000 (link itself changed, a changed as a file)", st.Uid, sa.Uid)
	}
}

// TestChmodFchmodat2Fallbacks plays a kernel without fchmodat2 (ENOSYS), a
// filesystem or seccomp filter refusing it (EOPNOTSUPP, EINVAL, EPERM) and a
// real refusal (EACCES): the first three still change every mode, through
// /proc/self/fd, and only ENOSYS stops asking fchmodat2 for the rest of the
// run; a real refusal fails the entries with its error.
func TestChmodFchmodat2Fallbacks(t *testing.T) {
	real := fchmodat2
	defer func() { fchmodat2 = real; noFchmodat2.Store(false) }()
	tests := []struct {
		err     unix.Errno
		changed bool
		latched bool
	}{
		{unix.ENOSYS, true, true},
		{unix.EOPNOTSUPP, true, false},
		{unix.EINVAL, true, false},
		{unix.EPERM, true, false},
		{unix.EACCES, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			noFchmodat2.Store(false)
			var calls atomic.Int64
			fchmodat2 = func(int, string, uint32, int) error { calls.Add(1); return tc.err }
			root := t.TempDir()
			os.Chmod(root, 0o700)
			for _, f := range []string{"a", "b", "c"} {
				os.WriteFile(filepath.Join(root, f), nil, 0o600)
			}
			task := &Chmod{files: mustMode(t, "0644"), dirs: mustMode(t, "0755"), umask: 0o022, opt: MetaOptions{AllowHardlinks: true}}
			res := runMeta(t, task, root)
			for _, rel := range []string{"", "a", "b", "c"} {
				want := map[bool]uint32{true: 0o644, false: 0o600}[tc.changed]
				if rel == "" {
					want = map[bool]uint32{true: 0o755, false: 0o700}[tc.changed]
				}
				if got := mode(t, filepath.Join(root, rel)); got != want {
					t.Errorf("%q: mode %04o, want %04o", rel, got, want)
				}
				r := res[rel]
				if tc.changed && r.Status != OK || !tc.changed && !errors.Is(r.Err, tc.err) {
					t.Errorf("%q: status %v, err %v", rel, r.Status, r.Err)
				}
			}
			if noFchmodat2.Load() != tc.latched {
				t.Errorf("latched %v, want %v", noFchmodat2.Load(), tc.latched)
			}
			// Latched, fchmodat2 is asked once (the first change); otherwise
			// once for each change, on its descriptor: three files and the
			// directory.
			if want := map[bool]int64{true: 1, false: 4}[tc.latched]; calls.Load() != want {
				t.Errorf("fchmodat2 asked %d times, want %d", calls.Load(), want)
			}
		})
	}
}

// TestChmodFastPathSwap: a file renamed over the name while a change is
// under way (played by a fchmodat2 that does the rename first) never gets
// bits computed from the file examined, nor any change at all (rule 19):
// every change goes through the descriptor of the inode examined, for an
// absolute mode too. Before, an absolute mode (0640) was set by name, and the
// file renamed over the name got it.
func TestChmodFastPathSwap(t *testing.T) {
	real := fchmodat2
	defer func() { fchmodat2 = real }()
	for _, tc := range []struct {
		mode         string
		wantA, wantB uint32 // a: examined; b: renamed over a's name during the change
	}{
		{"g+w", 0o664, 0o600},
		{"0640", 0o640, 0o600},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			root := t.TempDir()
			os.Chmod(root, 0o755)
			other := t.TempDir() // outside the tree, on the same filesystem
			a, b, aside := filepath.Join(root, "a"), filepath.Join(other, "b"), filepath.Join(other, "a-moved")
			os.WriteFile(a, []byte("a"), 0o644)
			os.WriteFile(b, []byte("b"), 0o600)
			os.Chmod(a, 0o644)
			os.Chmod(b, 0o600)
			var calls, byName atomic.Int64
			fchmodat2 = func(dirfd int, path string, mode uint32, flags int) error {
				if path != "" {
					byName.Add(1)
				}
				if calls.Add(1) == 1 {
					// The race: a moves away, b takes its name.
					if err := os.Rename(a, aside); err != nil {
						t.Fatal(err)
					}
					if err := os.Rename(b, a); err != nil {
						t.Fatal(err)
					}
				}
				return real(dirfd, path, mode, flags)
			}
			task := &Chmod{files: mustMode(t, tc.mode), umask: 0o022, opt: MetaOptions{AllowHardlinks: true}}
			runMeta(t, task, root)
			if calls.Load() != 1 || byName.Load() != 0 {
				t.Errorf("fchmodat2 asked %d times, %d by name; want once, on a descriptor", calls.Load(), byName.Load())
			}
			if got := mode(t, aside); got != tc.wantA {
				t.Errorf("examined file: mode %04o, want %04o", got, tc.wantA)
			}
			if got := mode(t, a); got != tc.wantB {
				t.Errorf("file renamed over its name: mode %04o, want %04o", got, tc.wantB)
			}
		})
	}
}

// TestChmodDirectorySwappedForFile: a directory swapped into a file's name
// between the look at the name and the change (renameat2 RENAME_EXCHANGE
// from outside the tree, played inside the first fchmodat2) keeps its mode
// and its setgid bit; the file examined gets the files' mode. Before, the
// fast path looked with fstatat and changed by name: the directory got 0777
// without setgid.
func TestChmodDirectorySwappedForFile(t *testing.T) {
	real := fchmodat2
	defer func() { fchmodat2 = real }()
	for _, tc := range []struct {
		name        string
		files, dirs string
	}{
		{"files only", "0777", ""},
		{"files and dirs", "0777", "0777"},
		{"relative", "a+rwx", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, other := t.TempDir(), t.TempDir()
			os.Chmod(root, 0o777) // as the dirs' mode wants: only f changes
			f, d := filepath.Join(root, "f"), filepath.Join(other, "d")
			os.WriteFile(f, []byte("f"), 0o600)
			os.Chmod(f, 0o600)
			os.Mkdir(d, 0o700)
			if err := unix.Chmod(d, 0o2750); err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int64
			fchmodat2 = func(dirfd int, path string, mode uint32, flags int) error {
				if calls.Add(1) == 1 {
					if err := unix.Renameat2(unix.AT_FDCWD, f, unix.AT_FDCWD, d, unix.RENAME_EXCHANGE); err != nil {
						t.Fatal(err)
					}
				}
				return real(dirfd, path, mode, flags)
			}
			task := &Chmod{files: mustMode(t, tc.files), umask: 0o022, opt: MetaOptions{AllowHardlinks: true}}
			if tc.dirs != "" {
				task.dirs = mustMode(t, tc.dirs)
			}
			res := runMeta(t, task, root)
			if calls.Load() == 0 {
				t.Fatal("no change was made")
			}
			if got := mode(t, f); got != 0o2750 {
				t.Errorf("directory swapped in: mode %04o, want 02750 (changed by name?)", got)
			}
			if got := mode(t, d); got != 0o777 {
				t.Errorf("file examined: mode %04o, want 0777", got)
			}
			if r := res["f"]; r.Status != OK || !r.Modified || r.Old[0] != 0o600 || r.New[0] != 0o777 {
				t.Errorf("result %v %v %04o -> %04o; want ok 0600 -> 0777", r.Status, r.Err, r.Old[0], r.New[0])
			}
		})
	}
}
