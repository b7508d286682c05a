package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestClosedStdoutAtStart pins what README says of `pbatch hash d >&-`: the
// runtime has put /dev/null on fd 1 before main, opened read-write as Python's
// subprocess.DEVNULL is, so pbatch cannot tell it from a /dev/null given on
// purpose and must not fail the run for it.
func TestClosedStdoutAtStart(t *testing.T) {
	bin := pbatchBin(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, redir := range []string{">&-", "<>/dev/null 1>&0"} {
		cmd := exec.Command("sh", "-c", `"$0" hash -q a `+redir, bin)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) != 0 {
			t.Errorf("pbatch hash a %s: %v, output %q; want exit 0 and nothing", redir, err, out)
		}
	}
}
