package tasks

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestModeMatchesChmod applies each mode to files and directories with various
// starting modes with the real chmod(1) and with Mode.Apply, and compares.
func TestModeMatchesChmod(t *testing.T) {
	chmod, err := exec.LookPath("chmod")
	if err != nil {
		t.Skip("chmod(1) not found")
	}
	umask := uint32(syscall.Umask(0))
	syscall.Umask(int(umask))
	modes := []string{
		"644", "0644", "755", "2775", "02755", "00755", "4755", "1777", "0", "7777", "00000",
		"u+x", "u-x", "a=r", "a+rwX", "u+rwX,go-w", "go=", "u=rwx,g=rx,o=", "g+s", "g-s", "u+s", "o+t", "+t",
		"+x", "-w", "=r", "=", "g=u", "o=g", "u=o,g-w", "ug+X", "a-X", "u=rw,a+X", "+X", "o+u", "u-u",
		"g=u,o=u", "a+s", "ug=rwxs,o=", "u+r,u+w,u+x", "u=rwx,u-x", "=rwx,-x", "go-rwx", "a=rX",
		"u+st", "g+x,g-x", "ugoa+r", "o=rwxt", "u=rwxs",
	}
	starts := []uint32{0o000, 0o644, 0o755, 0o600, 0o711, 0o2775, 0o4755, 0o6777, 0o1777, 0o070, 0o001, 0o7000}
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	d := filepath.Join(dir, "d")
	os.WriteFile(f, nil, 0o644)
	os.Mkdir(d, 0o755)
	for _, ms := range modes {
		m, err := ParseMode(ms)
		if err != nil {
			t.Errorf("ParseMode(%q): %v", ms, err)
			continue
		}
		for _, start := range starts {
			for _, p := range []string{f, d} {
				if err := os.Chmod(p, os.FileMode(start&0o777)|unixToGoSpecial(start)); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command(chmod, "--", ms, p).CombinedOutput()
				if err != nil {
					t.Fatalf("chmod %s %s: %v %s", ms, p, err, out)
				}
				var st syscall.Stat_t
				syscall.Stat(p, &st)
				want := st.Mode & modeBits
				got := m.Apply(start, p == d, umask)
				if got != want {
					t.Errorf("mode %q on %s %04o (umask %03o): got %04o, chmod gives %04o", ms, filepath.Base(p), start, umask, got, want)
				}
			}
		}
	}
}

func unixToGoSpecial(m uint32) os.FileMode {
	var g os.FileMode
	if m&sISUID != 0 {
		g |= os.ModeSetuid
	}
	if m&sISGID != 0 {
		g |= os.ModeSetgid
	}
	if m&sISVTX != 0 {
		g |= os.ModeSticky
	}
	return g
}

func TestParseModeRejects(t *testing.T) {
	for _, s := range []string{"", "8", "0o644", "77777", "u", "u+z", "a+rw,", ",", "rwx", "u+r g+w", "+rw+", "99", "-", "u=g+"} {
		m, err := ParseMode(s)
		// "-" "+rw+" and "u=g+" are valid for chmod: check with the real tool.
		if ok := chmodAccepts(t, s); ok != (err == nil) {
			t.Errorf("ParseMode(%q) = %v, %v; chmod accepts it: %v", s, m, err, ok)
		}
	}
}

func chmodAccepts(t *testing.T, mode string) bool {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, nil, 0o644)
	out, err := exec.Command("chmod", "--", mode, p).CombinedOutput()
	return err == nil && !strings.Contains(string(out), "invalid")
}

func FuzzParseMode(f *testing.F) {
	for _, s := range []string{"644", "u+rwX,go-w", "a=r", "g=u", "2775", "o+t", "=,+,-"} {
		f.Add(s, uint32(0o644), false)
	}
	f.Fuzz(func(t *testing.T, s string, old uint32, dir bool) {
		m, err := ParseMode(s)
		if err != nil {
			return
		}
		got := m.Apply(old&modeBits, dir, 0o022)
		if got&^modeBits != 0 {
			t.Fatalf("Apply(%q) = %o: bits outside 07777", s, got)
		}
		// Applying an absolute octal mode twice changes nothing the second time.
		if s[0] >= '0' && s[0] <= '7' {
			if again := m.Apply(got, dir, 0o022); again != got {
				t.Fatalf("octal %q not idempotent: %o then %o", s, got, again)
			}
		}
	})
}
