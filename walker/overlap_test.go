package walker

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBelowChangedAfterWalkBegan: a path below a directory PATH is left to
// that PATH's walk only if it was there, unchanged, before the walk began: a
// directory or file made later may come after the walk read its parent (a
// directory made then was left to a walk that had passed it: lost).
func TestBelowChangedAfterWalkBegan(t *testing.T) {
	root := t.TempDir()
	t.Chdir(root)
	if err := os.MkdirAll("d/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile("d/f", nil, 0o644)
	o := overlap{whole: true, root: true, maxDepth: -1}
	o.addDirPath("d")
	for _, p := range []string{"d/sub", "d/f"} {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if covered, _ := o.below(p, &st); !covered {
			t.Errorf("%s, older than the walk: not left to it", p)
		}
		st.Ctim = unix.NsecToTimespec(time.Now().Add(time.Hour).UnixNano())
		if covered, _ := o.below(p, &st); covered {
			t.Errorf("%s, changed after the walk began: left to it", p)
		}
	}
}
