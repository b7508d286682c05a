package tasks

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// TestSelectionCheckedOnWhatIsOpened: the walk selects "old" by its lstat
// (--older-than 1d; --type f), then another user swaps a file the selection
// excludes (fresh, someone else's 0600 file; a directory) into its name with
// renameat2(RENAME_EXCHANGE). Every task that acts through a descriptor
// judges the selection again by the fstat of what it opened and leaves the
// swapped-in inode alone, with a note: no chown to the attacker, no widened
// mode, no compressed and removed file, no digest of a file the selection
// excludes. Before, the tasks never asked again: chown gave the fresh file to
// 65534, chmod made it 0644, compress --rm replaced it by old.gz.
func TestSelectionCheckedOnWhatIsOpened(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the victim belongs to another user")
	}
	cutoff := time.Now().Add(-24 * time.Hour)
	older := func(st *unix.Stat_t) bool { return st.Mtim.Sec < cutoff.Unix() }
	isFile := func(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG }
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	secret := []byte("TOPSECRET\n")
	for _, tc := range []struct {
		name   string
		old    string // the name the walk selects
		dir    bool   // the victim is a directory (--type f)
		task   func(sel func(*unix.Stat_t) bool) Task
		walked walker.Options
	}{
		{"chown", "old", false, func(sel func(*unix.Stat_t) bool) Task {
			return NewChown(Owner{65534, 65534}, Owner{-1, -1}, false, MetaOptions{AllowHardlinks: true, Select: sel})
		}, walker.Options{Stat: older}},
		{"chmod relative", "old", false, func(sel func(*unix.Stat_t) bool) Task {
			return &Chmod{files: mustMode(t, "go+r"), umask: 0o022, opt: MetaOptions{AllowHardlinks: true, Select: sel}}
		}, walker.Options{Stat: older}},
		{"chmod absolute", "old", false, func(sel func(*unix.Stat_t) bool) Task {
			return &Chmod{files: mustMode(t, "0644"), dirs: mustMode(t, "0755"), umask: 0o022, opt: MetaOptions{AllowHardlinks: true, Select: sel}}
		}, walker.Options{Stat: older}},
		{"chmod --type f, a directory", "old", true, func(sel func(*unix.Stat_t) bool) Task {
			return &Chmod{files: mustMode(t, "0777"), dirs: mustMode(t, "0777"), umask: 0o022, opt: MetaOptions{AllowHardlinks: true, Select: sel}}
		}, walker.Options{Types: 1 << walker.File}},
		{"chown --type f, a directory", "old", true, func(sel func(*unix.Stat_t) bool) Task {
			return NewChown(Owner{65534, 65534}, Owner{-1, -1}, false, MetaOptions{AllowHardlinks: true, Select: sel})
		}, walker.Options{Types: 1 << walker.File}},
		{"compress --rm", "old", false, func(sel func(*unix.Stat_t) bool) Task {
			c, err := NewCompress(CompressOptions{Format: "gzip", Remove: true, Cores: 1, Read: ReadOptions{Select: sel}})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, walker.Options{Stat: older}},
		{"decompress --rm", "old.gz", false, func(sel func(*unix.Stat_t) bool) Task {
			return NewDecompress(CompressOptions{Remove: true, Cores: 1, Read: ReadOptions{Select: sel}})
		}, walker.Options{Stat: older}},
		{"hash", "old", false, func(sel func(*unix.Stat_t) bool) Task {
			return NewHash(Algorithms[0], ReadOptions{Select: sel})
		}, walker.Options{Stat: older}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel := older
			if tc.dir {
				sel = isFile
			}
			root := t.TempDir()
			os.Chmod(root, 0o777)
			old, victim := filepath.Join(root, tc.old), filepath.Join(root, "victim")
			content := []byte("old\n")
			if filepath.Ext(tc.old) == ".gz" {
				content = gz(content)
			}
			if err := os.WriteFile(old, content, 0o600); err != nil {
				t.Fatal(err)
			}
			past := time.Now().Add(-72 * time.Hour)
			os.Chtimes(old, past, past)
			if tc.dir {
				os.Mkdir(victim, 0o700)
				if err := unix.Chmod(victim, 0o2750); err != nil {
					t.Fatal(err)
				}
			} else {
				b := secret
				if filepath.Ext(tc.old) == ".gz" {
					b = gz(secret)
				}
				os.WriteFile(victim, b, 0o600)
				os.Chmod(victim, 0o600)
			}
			os.Chown(victim, 1000, 1000)
			var vst unix.Stat_t
			if err := unix.Lstat(victim, &vst); err != nil {
				t.Fatal(err)
			}

			opt := tc.walked
			opt.MaxDepth, opt.Sorted = -1, true
			out := make(chan []walker.Entry, 16)
			go func() {
				walker.Walk(context.Background(), func(yield func(string, error) bool) { yield(root, nil) }, opt, out)
				close(out)
			}()
			var es []walker.Entry
			for b := range out {
				es = append(es, b...)
			}
			if len(es) != 1 || es[0].Rel != tc.old {
				t.Fatalf("walk selected %d entries, want %s alone", len(es), tc.old)
			}
			// The swap, after the walk looked and before the task opens.
			if err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, victim, unix.RENAME_EXCHANGE); err != nil {
				t.Fatal(err)
			}
			task := tc.task(sel)
			w := task.NewWorker()
			r := Result{Entry: es[0]}
			w.Run(context.Background(), &es[0], &r)
			es[0].Done()
			if f, ok := task.(Finisher); ok {
				for _, fr := range f.Finish(context.Background()) {
					r = fr
				}
			}
			if r.Status != Skipped || !errors.Is(r.Err, errUnselected) {
				t.Errorf("result %v (%v), want skipped: %v", r.Status, r.Err, errUnselected)
			}
			if r.SumLen != 0 || r.Modified {
				t.Errorf("result describes the swapped-in inode: digest %x, modified %v", r.Digest(), r.Modified)
			}
			var st unix.Stat_t
			if err := unix.Lstat(old, &st); err != nil {
				t.Fatalf("the swapped-in inode is gone from %s: %v", tc.old, err)
			}
			if st.Ino != vst.Ino || st.Uid != 1000 || st.Gid != 1000 || st.Mode != vst.Mode {
				t.Errorf("swapped-in inode changed: ino %d (want %d), owner %d:%d (want 1000:1000), mode %o (want %o)",
					st.Ino, vst.Ino, st.Uid, st.Gid, st.Mode, vst.Mode)
			}
			ents, _ := os.ReadDir(root)
			if len(ents) != 2 {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Errorf("directory holds %q, want the two names swapped and nothing else", names)
			}
		})
	}
}
