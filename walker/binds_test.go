package walker

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseBinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []uint64
	}{
		{"none", "22 1 254:0 / / rw - ext4 /dev/vda rw\n23 22 0:21 / /proc rw - proc proc rw\n", nil},
		{"bind of a subdirectory", "22 1 254:0 / / rw - ext4 /dev/vda rw\n40 22 254:0 /srv/a /srv/b rw - ext4 /dev/vda rw\n", []uint64{unix.Mkdev(254, 0)}},
		{"mounted twice", "22 1 8:1 / /mnt/x rw - ext4 /dev/sda1 rw\n41 1 8:1 / /mnt/y rw - ext4 /dev/sda1 rw\n", []uint64{unix.Mkdev(8, 1)}},
		{"large numbers", "1 0 259:1048575 /x /y rw - xfs /dev/nvme rw\n", []uint64{unix.Mkdev(259, 1048575)}},
		{"damaged lines", "garbage\n1 2 x:y /a /b\n1 2 3 /a\n\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			binds, ok := parseBinds(strings.NewReader(tc.in))
			if !ok {
				t.Fatal("read as incomplete")
			}
			got := slices.Sorted(maps.Keys(binds))
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseBindsLongLine(t *testing.T) {
	if _, ok := parseBinds(strings.NewReader("1 0 8:1 / /" + strings.Repeat("x", 2<<20) + " rw\n")); ok {
		t.Error("a line past the scanner's limit was taken as the whole of mountinfo")
	}
}

func FuzzParseBinds(f *testing.F) {
	f.Add("22 1 254:0 / / rw - ext4 /dev/vda rw\n40 22 254:0 /srv/a /srv/b rw\n")
	f.Fuzz(func(t *testing.T, in string) {
		binds, _ := parseBinds(strings.NewReader(in))
		for dev := range binds {
			if !strings.Contains(in, ":") {
				t.Fatalf("device %d from input without a major:minor", dev)
			}
		}
	})
}
