package tasks

import (
	"slices"
	"strings"
	"testing"
)

func TestXattrNames(t *testing.T) {
	for _, c := range []struct {
		list string
		want []string
	}{
		{"", nil},
		{"user.a\x00", []string{"user.a"}},
		{"user.a\x00security.capability\x00", []string{"user.a", "security.capability"}},
		{"user.a", []string{"user.a"}}, // no final NUL
		{"\x00user.a\x00\x00", []string{"user.a"}},
	} {
		if got := slices.Collect(xattrNames([]byte(c.list))); !slices.Equal(got, c.want) {
			t.Errorf("xattrNames(%q) = %q, want %q", c.list, got, c.want)
		}
	}
}

// TestUncarried: the xattrs the output does not get make --rm skip the file;
// user xattrs, the access ACL and the SELinux label (given by policy to every
// new file) do not.
func TestUncarried(t *testing.T) {
	for _, c := range []struct {
		list, want string
	}{
		{"", ""},
		{"user.a\x00system.posix_acl_access\x00security.selinux\x00", ""},
		{"user.a\x00security.capability\x00", "file capabilities (security.capability)"},
		{"trusted.overlay.opaque\x00", `the extended attribute "trusted.overlay.opaque"`},
		{"security.ima\x00", `the extended attribute "security.ima"`},
		{"system.nfs4_acl\x00", `the extended attribute "system.nfs4_acl"`},
		{"system.posix_acl_default\x00", `the extended attribute "system.posix_acl_default"`},
	} {
		if got := uncarried([]byte(c.list)); got != c.want {
			t.Errorf("uncarried(%q) = %q, want %q", c.list, got, c.want)
		}
	}
}

// TestKeptName: the visible name of a file --rm could not put back is NAME,
// KeptInfix and 6 hex digits, NAME cut so that it fits in 255 bytes.
func TestKeptName(t *testing.T) {
	for _, name := range []string{"f", "report.txt", strings.Repeat("a", 236), strings.Repeat("a", 237), strings.Repeat("b", 255)} {
		got := keptName(name)
		base := name[:min(len(name), 255-len(KeptInfix)-6)]
		if len(got) > 255 || !strings.HasPrefix(got, base+KeptInfix) || len(got) != len(base)+len(KeptInfix)+6 {
			t.Errorf("keptName(%d bytes) = %q", len(name), got)
		}
		if strings.HasPrefix(got, TempPrefix) {
			t.Errorf("keptName(%q) = %q: a temporary name", name, got)
		}
	}
}
