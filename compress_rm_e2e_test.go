package main

// End-to-end tests of what compress and decompress may take as input and
// replace: never an output of the same run, never (decompress) a compressed
// file, never in a sticky directory a file the input's owner could not
// replace; and of --rm's last checks: an original that changed in mode,
// owner, links or xattrs just before its removal is kept, and a file that
// cannot be put back under its name gets a visible one.

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// TestDecompressOwnOutputs: a run never takes an output it published as an
// input, and decompress --force never replaces a file decompress takes as
// input. Before, `decompress --force --rm -w 1 a.gz.gz a.gz` replaced a.gz
// (an input, PRECIOUS) with a.gz.gz's output and then decompressed and
// removed that: only OTHER was left. And a walk listing a directory in
// pieces met outputs (x.gz from x.gz.gz) published after the walk began and
// decompressed them again (about 600 of 2000 on ext4).
func TestDecompressOwnOutputs(t *testing.T) {
	czNeed(t, "gzip")
	precious, other := []byte("PRECIOUS\n"), []byte("OTHER\n")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"force-rm", []string{"--force", "--rm", "-w", "1", "a.gz.gz", "a.gz"}},
		{"force", []string{"--force", "-w", "1", "a.gz.gz", "a.gz"}},
		{"no-force", []string{"--rm", "-w", "1", "a.gz.gz", "a.gz"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := fastTempDir(t)
			czWrite(t, filepath.Join(dir, "a.gz"), czGzipBytes(t, precious), 0o644)
			twice := czGzipBytes(t, czGzipBytes(t, other))
			czWrite(t, filepath.Join(dir, "a.gz.gz"), twice, 0o644)
			_, stderr := czMust(t, 1, dir, append([]string{"decompress", "-q"}, c.args...)...)
			if got := czRead(t, filepath.Join(dir, "a")); !bytes.Equal(got, precious) {
				t.Errorf("a = %q, want %q", got, precious)
			}
			if got := czRead(t, filepath.Join(dir, "a.gz.gz")); !bytes.Equal(got, twice) {
				t.Errorf("a.gz.gz, not published, was changed")
			}
			if want := "pbatch: a.gz.gz: output a.gz exists and has a suffix decompress takes (.gz, .tgz or .zst): kept, --force never replaces such a file\n"; !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
			czNoTemps(t, dir)
		})
	}

	t.Run("walk", func(t *testing.T) {
		// ext4, not tmpfs: its hashed order puts some new entries after the
		// walk's place in a directory it reads in several pieces (long names
		// make many pieces of few files).
		dir := t.TempDir()
		long := strings.Repeat("n", 100)
		// input name → its output's name and content (decoded once)
		type want struct{ out, content string }
		files := map[string]want{}
		zenc, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer zenc.Close()
		czZstdBytes := func(_ *testing.T, b []byte) []byte { return zenc.EncodeAll(b, nil) }
		czGzipBytes := func(_ *testing.T, b []byte) []byte { // gzip(1) 3000 times takes seconds
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			w.Write(b)
			w.Close()
			return buf.Bytes()
		}
		for i := range 600 {
			inner := fmt.Sprintf("content %d\n", i)
			gz := czGzipBytes(t, []byte(inner))
			in, out, mid, raw := fmt.Sprintf("%sx%d.gz.gz", long, i), fmt.Sprintf("%sx%d.gz", long, i), gz, czGzipBytes(t, gz)
			switch i % 4 {
			case 1:
				in, out, raw = fmt.Sprintf("%sx%d.GZ.gz", long, i), fmt.Sprintf("%sx%d.GZ", long, i), czGzipBytes(t, gz)
			case 2:
				mid = czZstdBytes(t, []byte(inner))
				in, out, raw = fmt.Sprintf("%sx%d.zst.gz", long, i), fmt.Sprintf("%sx%d.zst", long, i), czGzipBytes(t, mid)
			case 3:
				in, out, raw = fmt.Sprintf("%sx%d.tgz.zst", long, i), fmt.Sprintf("%sx%d.tgz", long, i), czZstdBytes(t, gz)
			}
			czWrite(t, filepath.Join(dir, in), raw, 0o644)
			files[in] = want{out, string(mid)}
		}
		czMust(t, 0, dir, "decompress", "-q", "--rm", "-w", "2", ".")
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != len(files) {
			t.Errorf("%d entries after the run, want %d (one output per input)", len(ents), len(files))
		}
		twice := 0
		for in, w := range files {
			czMissing(t, filepath.Join(dir, in))
			if got, err := os.ReadFile(filepath.Join(dir, w.out)); err != nil || string(got) != w.content {
				twice++
				if twice <= 5 {
					t.Errorf("%s, the output of %s, is missing or not decompressed once (%v)", w.out, in, err)
				}
			}
		}
		if twice > 0 {
			t.Errorf("%d outputs of this run were taken as inputs", twice)
		}
	})
}

// TestCompressOwnOutputsSkipped: compress never takes its own outputs as
// inputs, without a record: they all carry a suffix it skips. The walk meets
// many of them (ext4, long names, as TestDecompressOwnOutputs/walk), and none
// is compressed again.
func TestCompressOwnOutputsSkipped(t *testing.T) {
	czNeed(t, "gzip", "zstd")
	for _, format := range []string{"gzip", "zstd"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			long := strings.Repeat("n", 100)
			for i := range 600 {
				czWrite(t, filepath.Join(dir, fmt.Sprintf("%sx%d", long, i)), []byte(fmt.Sprintf("content %d\n", i)), 0o644)
			}
			_, stderr := czMust(t, 0, dir, "compress", "--rm", "-w", "2", "--format", format, ".")
			suffix := map[string]string{"gzip": ".gz", "zstd": ".zst"}[format]
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if !strings.HasSuffix(e.Name(), suffix) || strings.HasSuffix(strings.TrimSuffix(e.Name(), suffix), suffix) {
					t.Errorf("%s: not one output per input", e.Name())
				}
			}
			if len(ents) != 600 {
				t.Errorf("%d entries, want 600", len(ents))
			}
			if n := strings.Count(stderr, "skipped: already compressed"); n > 0 {
				t.Logf("the walk met %d outputs of this run (skipped)", n)
			}
		})
	}
}

// TestCompressForceSticky: in a sticky directory, --force replaces an
// existing output only as the kernel would let the input's owner: if that
// owner owns the output or the directory (or is root). Before, pbatch (root)
// replaced anything: nobody's thesis.txt.gz, decompressed with --force --rm,
// replaced uid 1000's thesis.txt with nobody's content.
func TestCompressForceSticky(t *testing.T) {
	czNeedRoot(t, "chown")
	czNeed(t, "gzip")
	const nobody, user = 65534, 1000
	for _, c := range []struct {
		name                  string
		decompress            bool
		dirMode               os.FileMode
		dirUID, inUID, outUID int
		replaced              bool
	}{
		{"decompress-other-user", true, 0o777 | os.ModeSticky, 0, nobody, user, false},
		{"compress-other-user", false, 0o777 | os.ModeSticky, 0, nobody, user, false},
		{"root-output", true, 0o777 | os.ModeSticky, 0, nobody, 0, false},
		{"same-owner", true, 0o777 | os.ModeSticky, 0, nobody, nobody, true},
		{"directory-owner", false, 0o777 | os.ModeSticky, nobody, nobody, user, true},
		{"root-input", true, 0o777 | os.ModeSticky, 0, 0, user, true},
		{"not-sticky", true, 0o777, 0, nobody, user, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := fastTempDir(t)
			dir := filepath.Join(root, "x")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			os.Chmod(dir, c.dirMode)
			os.Chown(dir, c.dirUID, c.dirUID)
			content := []byte("the input's content\n")
			in, out, raw := "thesis.txt", "thesis.txt.gz", content
			if c.decompress {
				in, out, raw = "thesis.txt.gz", "thesis.txt", czGzipBytes(t, content)
			}
			czWrite(t, filepath.Join(dir, in), raw, 0o644)
			os.Chown(filepath.Join(dir, in), c.inUID, c.inUID)
			old := []byte("someone else's file\n")
			czWrite(t, filepath.Join(dir, out), old, 0o644)
			os.Chown(filepath.Join(dir, out), c.outUID, c.outUID)
			args := []string{"decompress", "-q", "--force", "--rm", "x"}
			if !c.decompress {
				args[0] = "compress"
			}
			if !c.replaced {
				_, stderr := czMust(t, 1, root, args...)
				want := fmt.Sprintf("pbatch: x/%s: output %s belongs to uid %d in the sticky directory x, where the input's owner (uid %d) may not replace it: kept\n",
					in, out, c.outUID, c.inUID)
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
				if got := czRead(t, filepath.Join(dir, out)); !bytes.Equal(got, old) {
					t.Errorf("%s was replaced: %q", out, got)
				}
				if st := czLstat(t, filepath.Join(dir, out)); int(st.Uid) != c.outUID {
					t.Errorf("%s now owned by %d", out, st.Uid)
				}
				if got := czRead(t, filepath.Join(dir, in)); !bytes.Equal(got, raw) {
					t.Errorf("%s was changed or removed", in)
				}
			} else {
				czMust(t, 0, root, args...)
				czMissing(t, filepath.Join(dir, in))
				got := czRead(t, filepath.Join(dir, out))
				if !c.decompress {
					got = czDecode(t, "gzip", filepath.Join(dir, out))
				}
				if !bytes.Equal(got, content) {
					t.Errorf("%s not replaced by the output: %q", out, got)
				}
			}
			czNoTemps(t, root)
		})
	}
}

// TestCompressForceAppeared: --force replaces only an output it found and
// checked; one that appears while the input is being processed (here in a
// delay of the publishing rename) is kept, and the input too. Before, the
// rename replaced it.
func TestCompressForceAppeared(t *testing.T) {
	czNeed(t, "gzip")
	dir := fastTempDir(t)
	data, theirs := czText(91, 64<<10), []byte("created while pbatch was compressing f\n")
	czWrite(t, filepath.Join(dir, "f"), data, 0o644)
	cmd, _, stderr := czStraceStart(t, dir, []string{"trace=renameat2,renameat", "inject=renameat2,renameat:delay_enter=1000000"},
		"compress", "-w", "1", "--force", "--rm", "f")
	czWaitTemp(t, dir, cmd)
	time.Sleep(300 * time.Millisecond) // into the delay of the publishing rename
	czWrite(t, filepath.Join(dir, "f.gz"), theirs, 0o644)
	if code := czExit(t, cmd.Wait(), stderr.String()); code != 1 {
		t.Errorf("exit %d, want 1\n%s", code, stderr)
	}
	if want := "pbatch: f: output f.gz appeared while the input was being processed: kept, --force replaces only an output it found before\n"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
	if got := czRead(t, filepath.Join(dir, "f.gz")); !bytes.Equal(got, theirs) {
		t.Errorf("f.gz, created during the run, was replaced")
	}
	if got := czRead(t, filepath.Join(dir, "f")); !bytes.Equal(got, data) {
		t.Errorf("f was changed or removed")
	}
	czNoTemps(t, dir)
}

// TestCompressRmKeptName: a file renamed over the original during --rm's
// removal is put back; if its name was taken again meanwhile, it goes to
// NAME.pbatch-kept-XXXXXX, a visible name later runs take, and the line says
// which. strace holds every renameat2 for a second: the test swaps f while
// pbatch takes it to its private name, and creates f again while pbatch puts
// the swapped file back. Before, it stayed under .pbatch-tmp-*, a name later
// runs skip.
func TestCompressRmKeptName(t *testing.T) {
	czNeed(t, "zstd")
	dir := fastTempDir(t)
	old, repl, again := czText(87, 64<<10), []byte("renamed over the original\n"), []byte("created again under its name\n")
	czWrite(t, filepath.Join(dir, "f"), old, 0o644)
	cmd, _, stderr := czStraceStart(t, dir, []string{"trace=renameat2", "inject=renameat2:delay_enter=1000000"},
		"compress", "-w", "1", "--rm", "--format", "zstd", "f")
	czWaitFile(t, filepath.Join(dir, "f.zst"), cmd) // the publishing rename is done
	time.Sleep(300 * time.Millisecond)              // into the delay of the rename to the private name
	czSwap(t, filepath.Join(dir, "f"), repl)
	time.Sleep(1000 * time.Millisecond) // into the delay of the rename back
	czWrite(t, filepath.Join(dir, "f"), again, 0o644)
	if code := czExit(t, cmd.Wait(), stderr.String()); code != 1 {
		t.Errorf("exit %d, want 1\n%s", code, stderr)
	}
	if got := czRead(t, filepath.Join(dir, "f")); !bytes.Equal(got, again) {
		t.Errorf("f = %.30q, want the file created again", got)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "f.pbatch-kept-*"))
	if len(kept) != 1 {
		t.Fatalf("kept files %q, want one; temporary files %q\n%s", kept, czTemps(t, dir), stderr)
	}
	if got := czRead(t, kept[0]); !bytes.Equal(got, repl) {
		t.Errorf("%s = %.30q, want the file renamed over the original", kept[0], got)
	}
	if want := "pbatch: f: file replaced after it was read: the new file is kept, and the output of the old one; its name was taken again meanwhile: it is now ./" +
		filepath.Base(kept[0]) + "\n"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
	if got := czDecode(t, "zstd", filepath.Join(dir, "f.zst")); !bytes.Equal(got, old) {
		t.Errorf("f.zst does not hold the original's content")
	}
	czNoTemps(t, dir)
}

// TestCompressRmMetaRace: an original whose mode, owner, links or xattrs
// change after the descriptor's last check and before the rename to its
// private name (our own rename changes the ctime, so the ctime cannot tell)
// is put back and kept: setuid, hard-linked and capability-carrying files
// are never removed by --rm. strace holds every renameat2 for a second; the
// change lands in the delay of the rename to the private name. Before, only
// size and mtime were compared, and the file was removed.
func TestCompressRmMetaRace(t *testing.T) {
	czNeedRoot(t, "security.capability, chown")
	czNeed(t, "gzip")
	for _, c := range []struct {
		name       string
		decompress bool
		change     func(p string) error
		want       string
	}{
		{"setuid", false, func(p string) error { return os.Chmod(p, 0o755|os.ModeSetuid) }, "file became setuid or setgid"},
		{"setgid-decompress", true, func(p string) error { return os.Chmod(p, 0o755|os.ModeSetgid) }, "file became setuid or setgid"},
		{"link", false, func(p string) error { return os.Link(p, p+".link") }, "file was given another hard link"},
		{"setcap", false, func(p string) error { return unix.Setxattr(p, "security.capability", czCapV2(), 0) },
			"file was given file capabilities (security.capability)"},
		{"chown", true, func(p string) error { return os.Chown(p, 1234, 1234) }, "file's mode or owner changed"},
		{"chmod", false, func(p string) error { return os.Chmod(p, 0o600) }, "file's mode or owner changed"},
		{"user-xattr", false, func(p string) error { return unix.Setxattr(p, "user.late", []byte("x"), 0) },
			"file's extended attributes changed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir() // ext4: user xattrs on tmpfs need a recent kernel
			data := czText(89, 64<<10)
			in, out, raw := "f", "f.gz", data
			if c.decompress {
				in, out, raw = "g.gz", "g", czGzipBytes(t, data)
			}
			p := filepath.Join(dir, in)
			czWrite(t, p, raw, 0o644)
			cmd, _, stderr := czStraceStart(t, dir, []string{"trace=renameat2", "inject=renameat2:delay_enter=1000000"},
				[]string{"compress", "decompress"}[btoi(c.decompress)], "-w", "1", "--rm", in)
			czWaitFile(t, filepath.Join(dir, out), cmd) // the publishing rename is done
			time.Sleep(300 * time.Millisecond)          // into the delay of the rename to the private name
			if err := c.change(p); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Skipf("%s: %v", c.name, err)
			}
			if code := czExit(t, cmd.Wait(), stderr.String()); code != 1 {
				t.Errorf("exit %d, want 1\n%s", code, stderr)
			}
			if want := "pbatch: " + in + ": " + c.want + " after it was read: original kept next to the output\n"; !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
			if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, raw) {
				t.Fatalf("%s was removed or changed (%v): the change after it was read went unnoticed", in, err)
			}
			got := czRead(t, filepath.Join(dir, out))
			if !c.decompress {
				got = czDecode(t, "gzip", filepath.Join(dir, out))
			}
			if !bytes.Equal(got, data) {
				t.Errorf("%s does not hold the input's content", out)
			}
			czNoTemps(t, dir)
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
