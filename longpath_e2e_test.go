package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mkDeep makes 25 levels of 200-byte directory names below root (about 5000
// bytes, beyond PATH_MAX) through descriptors, since no single path may be
// that long, with files in the deepest. It returns the deepest directory's
// descriptor (closed at cleanup) and its path relative to root.
func mkDeep(t *testing.T, root string, files map[string]string) (int, string) {
	t.Helper()
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 200)
	var rel []string
	for range 25 {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
		rel = append(rel, name)
	}
	t.Cleanup(func() { unix.Close(fd) })
	for n, content := range files {
		f, err := unix.Openat(fd, n, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		unix.Write(f, []byte(content))
		unix.Close(f)
	}
	return fd, strings.Join(rel, "/")
}

func runIn(t *testing.T, dir, bin string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := exec.Command(bin, args...)
	c.Dir = dir
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// TestLongPathManifest: audit and check look manifest paths longer than
// PATH_MAX up in pieces: a deleted one is missing (lstat of the whole path
// fails with ENAMETOOLONG, which was read as "there"), a renamed one is moved,
// and check verifies them.
func TestLongPathManifest(t *testing.T) {
	bin := pbatchBin(t)
	root := fastTempDir(t)
	fd, deep := mkDeep(t, root, map[string]string{"gone": "gone\n", "old": "old\n", "stay": "stay\n"})
	deep = "./" + deep

	sums, stderr, code := runIn(t, root, bin, "hash", "-q", "-k", ".")
	if code != 0 || strings.Count(sums, "\n") != 3 {
		t.Fatalf("hash: exit %d\nstdout: %.300q\nstderr: %.300q", code, sums, stderr)
	}
	// Beside the tree, not in it.
	manifest := root + ".sums"
	if err := os.WriteFile(manifest, []byte(sums), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(manifest) })

	out, stderr, code := runIn(t, root, bin, "check", manifest)
	want := deep + "/gone: OK\n" + deep + "/old: OK\n" + deep + "/stay: OK\n"
	if code != 0 || out != want {
		t.Errorf("check: exit %d, want 0\nstdout: %.300q\nstderr: %.300q", code, out, stderr)
	}

	if err := unix.Unlinkat(fd, "gone", 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat(fd, "old", fd, "new"); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = runIn(t, root, bin, "audit", "-k", "--manifest", manifest, ".")
	want = "moved     " + deep + "/old -> " + deep + "/new\n" + "missing   " + deep + "/gone\n"
	if code != 1 || out != want {
		t.Errorf("audit: exit %d, want 1\nstdout: %q\nwant:   %q\nstderr: %.300q", code, out, want, stderr)
	}
}
