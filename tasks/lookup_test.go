package tasks

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLookupLongPaths: present and openLong reach paths beyond PATH_MAX, given
// absolute or relative, and tell absent (ENOENT, ENOTDIR) from undecided.
func TestLookupLongPaths(t *testing.T) {
	root := t.TempDir()
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 250)
	parts := []string{root}
	for range 20 { // about 5000 bytes
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
		parts = append(parts, name)
	}
	f, err := unix.Openat(fd, "file", unix.O_WRONLY|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(f, []byte("x"))
	unix.Close(f)
	unix.Close(fd)
	deep := strings.Join(parts, "/")
	if len(deep) < pathMax {
		t.Fatalf("test path is only %d bytes", len(deep))
	}
	for _, tc := range []struct {
		path      string
		there     bool
		undecided bool
	}{
		{deep + "/file", true, false},
		{deep + "//file", true, false},
		{deep + "/gone", false, false},
		{deep + "/file/below", false, false}, // ENOTDIR
		{deep + "/" + strings.Repeat("n", 300), false, true},
		{"/" + strings.Repeat("n", 5000), false, true},
		{root + "/file-short-gone", false, false},
	} {
		there, err := present(tc.path)
		if there != tc.there || (err != nil) != tc.undecided || err != nil && !errors.Is(err, ErrUndecided) {
			t.Errorf("present(…%s) = %v, %v; want %v, undecided %v", tc.path[max(0, len(tc.path)-20):], there, err, tc.there, tc.undecided)
		}
	}
	ofd, err := openLong(deep+"/file", unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		t.Fatalf("openLong: %v", err)
	}
	buf := make([]byte, 4)
	n, _ := unix.Read(ofd, buf)
	unix.Close(ofd)
	if string(buf[:n]) != "x" {
		t.Errorf("openLong read %q, want %q", buf[:n], "x")
	}
}
