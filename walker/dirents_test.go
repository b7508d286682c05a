package walker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type dirent struct {
	ino  uint64
	typ  uint8
	name string
}

// encodeDirents writes records as the kernel's getdents64 does: 8-byte
// aligned, the name NUL-terminated and padded.
func encodeDirents(ds []dirent) []byte {
	var b []byte
	for _, d := range ds {
		reclen := (direntHeader + len(d.name) + 1 + 7) &^ 7
		rec := make([]byte, reclen)
		binary.NativeEndian.PutUint64(rec, d.ino)
		binary.NativeEndian.PutUint64(rec[8:], uint64(len(b)+reclen))
		binary.NativeEndian.PutUint16(rec[16:], uint16(reclen))
		rec[18] = d.typ
		copy(rec[direntHeader:], d.name)
		b = append(b, rec...)
	}
	return b
}

func collect(b []byte, stopAfter int) ([]string, bool, error) {
	var got []string
	more, err := parseDirents(b, func(name []byte, dt uint8) bool {
		got = append(got, fmt.Sprintf("%s:%d", name, dt))
		return len(got) != stopAfter
	})
	return got, more, err
}

func TestParseDirents(t *testing.T) {
	valid := encodeDirents([]dirent{{1, unix.DT_DIR, "."}, {2, unix.DT_DIR, ".."}, {3, unix.DT_REG, "a"},
		{0, unix.DT_REG, "deleted"}, {4, unix.DT_LNK, "..x"}, {5, unix.DT_UNKNOWN, "with space\nand newline"},
		{6, unix.DT_DIR, strings.Repeat("n", 255)}})
	tests := []struct {
		name      string
		buf       []byte
		stopAfter int
		want      []string
		more      bool
		err       error
	}{
		{"empty", nil, 0, nil, true, nil},
		{"skips dots and deleted", valid, 0,
			[]string{"a:8", "..x:10", "with space\nand newline:0", strings.Repeat("n", 255) + ":4"}, true, nil},
		{"stops when asked", valid, 2, []string{"a:8", "..x:10"}, false, nil},
		{"short header", valid[:10], 0, nil, false, unix.EIO},
		{"record past the end", valid[:len(valid)-1], 0,
			[]string{"a:8", "..x:10", "with space\nand newline:0"}, false, unix.EIO},
		{"reclen below header", func() []byte {
			b := encodeDirents([]dirent{{3, unix.DT_REG, "a"}})
			binary.NativeEndian.PutUint16(b[16:], 8)
			return b
		}(), 0, nil, false, unix.EIO},
		{"name filling its record, without NUL", func() []byte {
			b := make([]byte, direntHeader+5)
			binary.NativeEndian.PutUint64(b, 3)
			binary.NativeEndian.PutUint16(b[16:], uint16(len(b)))
			b[18] = unix.DT_REG
			copy(b[direntHeader:], "abcde")
			return append(b, encodeDirents([]dirent{{4, unix.DT_DIR, "next"}})...)
		}(), 0, []string{"abcde:8", "next:4"}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, more, err := collect(tc.buf, tc.stopAfter)
			if !slices.Equal(got, tc.want) || more != tc.more || !errors.Is(err, tc.err) && err != tc.err {
				t.Errorf("got %q more=%v err=%v; want %q more=%v err=%v", got, more, err, tc.want, tc.more, tc.err)
			}
		})
	}
}

// FuzzParseDirents: any buffer parses without panicking into names that are
// non-empty, hold no NUL and are not . or ..; a buffer built from names gives
// exactly those names back.
func FuzzParseDirents(f *testing.F) {
	f.Add([]byte{}, "a/b/c")
	f.Add(encodeDirents([]dirent{{1, unix.DT_REG, "x"}}), ".\x00..\x00y")
	f.Add([]byte(strings.Repeat("\xff", 40)), "")
	f.Fuzz(func(t *testing.T, raw []byte, names string) {
		_, _ = parseDirents(raw, func(name []byte, _ uint8) bool {
			if len(name) == 0 || bytes.IndexByte(name, 0) >= 0 || string(name) == "." || string(name) == ".." {
				t.Fatalf("bad name %q from %x", name, raw)
			}
			return true
		})
		var ds []dirent
		var want []string
		for i, n := range strings.Split(names, "/") {
			if n == "" || strings.IndexByte(n, 0) >= 0 || len(n) > 255 {
				continue
			}
			ds = append(ds, dirent{uint64(i + 1), uint8(i % 16), n})
			if n != "." && n != ".." {
				want = append(want, fmt.Sprintf("%s:%d", n, i%16))
			}
		}
		got, more, err := collect(encodeDirents(ds), -1)
		if err != nil || !more || !slices.Equal(got, want) {
			t.Fatalf("round trip of %q: got %q more=%v err=%v", names, got, more, err)
		}
	})
}

// TestReadDirentsLargeDirectory reads a directory that takes several getdents
// calls and compares with os.ReadDir.
func TestReadDirentsLargeDirectory(t *testing.T) {
	dir := t.TempDir()
	for i := range 3000 {
		name := fmt.Sprintf("%04d-%s", i, strings.Repeat("x", i%200))
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var got []string
	calls := 0
	buf := make([]byte, 4096)
	err = readDirents(fd, buf, func(name []byte, dt uint8) bool {
		calls++
		if dt != unix.DT_REG && dt != unix.DT_UNKNOWN {
			t.Errorf("%s: d_type %d", name, dt)
		}
		got = append(got, string(name))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, de := range des {
		want = append(want, de.Name())
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("read %d names, os.ReadDir %d", len(got), len(want))
	}
}

// TestDirentMode checks each d_type, and the lstat asked for DT_UNKNOWN.
func TestDirentMode(t *testing.T) {
	dir := mktree(t, map[string]string{"file": "x", "sub/": "", "link": "->file", "fifo": "|fifo"})
	l, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tests := []struct {
		name string
		dt   uint8
		want Type
	}{
		{"file", unix.DT_REG, File},
		{"sub", unix.DT_DIR, Dir},
		{"link", unix.DT_LNK, Symlink},
		{"fifo", unix.DT_FIFO, Other},
		{"sock", unix.DT_SOCK, Other},
		{"null", unix.DT_CHR, Other},
		{"loop", unix.DT_BLK, Other},
	}
	for _, tc := range tests {
		typ, err := direntType(fd, tc.name, tc.dt)
		if err != nil || typ != tc.want {
			t.Errorf("%s with d_type %d: %v, %v; want %v", tc.name, tc.dt, typ, err, tc.want)
		}
		if tc.dt == unix.DT_CHR || tc.dt == unix.DT_BLK {
			continue // not in the directory: only the d_type is checked
		}
		typ, err = direntType(fd, tc.name, unix.DT_UNKNOWN)
		if err != nil || typ != tc.want {
			t.Errorf("%s with DT_UNKNOWN: %v, %v; want %v", tc.name, typ, err, tc.want)
		}
	}
	if _, err := direntType(fd, "missing", unix.DT_UNKNOWN); !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing name with DT_UNKNOWN: %v, want ENOENT", err)
	}
}
