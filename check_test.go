package main

// Tests of pbatch check against the real checkers: the normdiag script command
// and TestCheckRealToolsHostileNames.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rogpeppe/go-internal/testscript"
)

// cmdNormDiag: normdiag FILE rewrites coreutils diagnostics in FILE as pbatch
// words them, so a script can cmp pbatch's stderr with sha256sum's: a leading
// "sha256sum: " or "/usr/bin/sha256sum: " (any *sum program; ts.Exec runs it
// by its full path) becomes "pbatch: ", and a strerror text
// ending such a line starts lowercase ("No such file or directory" → "no such
// file or directory"). Other lines are left alone.
func cmdNormDiag(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: normdiag FILE")
	}
	name := ts.MkAbs(args[0])
	b, err := os.ReadFile(name)
	ts.Check(err)
	ts.Check(os.WriteFile(name, []byte(normDiag(string(b))), 0o644))
}

func normDiag(s string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		prog, rest, ok := strings.Cut(l, ": ")
		if !ok || !strings.HasSuffix(prog, "sum") || strings.ContainsAny(prog, " \t") {
			continue
		}
		l = "pbatch: " + rest
		if j := strings.LastIndex(l, ": "); j >= 0 && j+3 < len(l) &&
			'A' <= l[j+2] && l[j+2] <= 'Z' && 'a' <= l[j+3] && l[j+3] <= 'z' {
			l = l[:j+2] + string(l[j+2]-'A'+'a') + l[j+3:]
		}
		lines[i] = l
	}
	return strings.Join(lines, "")
}

func TestNormDiag(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"sha256sum: c: No such file or directory\n", "pbatch: c: no such file or directory\n"},
		{"md5sum: WARNING: 1 line is improperly formatted\n", "pbatch: WARNING: 1 line is improperly formatted\n"},
		{"sha256sum: m: 3: improperly formatted SHA256 checksum line\n", "pbatch: m: 3: improperly formatted SHA256 checksum line\n"},
		{"a: FAILED\nsha256sum: d: Is a directory\n", "a: FAILED\npbatch: d: is a directory\n"},
		{"/usr/bin/md5sum: c: Is a directory\n", "pbatch: c: is a directory\n"},
		{"a sum: Not a diagnostic\n", "a sum: Not a diagnostic\n"},
	} {
		if got := normDiag(c.in); got != c.want {
			t.Errorf("normDiag(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// checkHostileNames are the names of TestCheckRealToolsHostileNames: spaces,
// leading '-', '\', LF, CR (alone and with LF), non-UTF-8 bytes, a
// right-to-left override and a 255-byte name.
var checkHostileNames = []string{
	"plain.txt",
	"with space.txt",
	" leading space",
	"trailing space ",
	"-rf",
	"--help",
	"-", // given to the tools as ./- (a bare - is stdin)
	"back\\slash",
	"\\leading-backslash",
	"new\nline",
	"\nleading-newline",
	"trailing-newline\n",
	"car\rret",
	"all\\three\r\nat once",
	"tab\tname",
	"bad\xffname",
	"\xfe\xfflatin1-ish \xe9t\xe9",
	"rtl\u202etxt.exe",
	"(paren) = 0123",
	"SHA256 (fake) = 00",
	"quote\"'`$(echo hi)",
	strings.Repeat("n", 251) + ".txt", // 255 bytes: NAME_MAX
	"dir with\nnewline/inner\\file",
	"dir with\nnewline/-x",
	"\xffdir/\xfffile",
}

// TestCheckRealToolsHostileNames: manifests written by the real sha256sum,
// md5sum, sha256sum --tag and b3sum for a tree of hostile names verify with
// pbatch check, whose stdout is byte for byte the real checker's (run from the
// same directory on the same manifest); then again after one file changed and
// another was deleted.
func TestCheckRealToolsHostileNames(t *testing.T) {
	bin := pbatchBin(t)
	root, sums := t.TempDir(), t.TempDir()
	var args, utf8Args []string // names as given to the tools, in manifest order
	for i, name := range checkHostileNames {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, fmt.Appendf(nil, "file %d: %q\n", i, name), 0o644); err != nil {
			t.Fatalf("creating %q: %v", name, err)
		}
		if name == "-" {
			name = "./-"
		}
		args = append(args, name)
		if utf8.ValidString(name) {
			utf8Args = append(utf8Args, name)
		}
	}

	// run runs a program in root and returns its stdout, stderr and exit code.
	run := func(t *testing.T, prog string, args ...string) (stdout, stderr []byte, code int) {
		t.Helper()
		var o, e bytes.Buffer
		cmd := exec.Command(prog, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			code = ee.ExitCode()
		case err != nil:
			t.Fatalf("%s: %v", prog, err)
		}
		return o.Bytes(), e.Bytes(), code
	}
	// manifest runs a tool on names in root and stores its output in a file
	// outside root, for the damaged runs too.
	manifest := func(t *testing.T, tool string, toolArgs, names []string) string {
		t.Helper()
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
		out, stderr, code := run(t, tool, slices.Concat(toolArgs, []string{"--"}, names)...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", tool, code, stderr)
		}
		if n := bytes.Count(out, []byte("\n")); n != len(names) {
			t.Fatalf("%s wrote %d lines for %d names:\n%q", tool, n, len(names), out)
		}
		f := filepath.Join(sums, t.Name()[strings.LastIndex(t.Name(), "/")+1:]+"."+tool)
		if err := os.WriteFile(f, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	warnings := func(stderr []byte) []string {
		var w []string
		for _, l := range strings.SplitAfter(normDiag(string(stderr)), "\n") {
			if strings.HasPrefix(l, "pbatch: WARNING: ") {
				w = append(w, l)
			}
		}
		return w
	}

	type tc struct {
		name      string
		tool      string   // writes the manifest
		toolArgs  []string // its flags
		names     []string // given to tool
		checkArgs []string // pbatch check flags
		ref       []string // the real checker whose output pbatch's must equal
		refNames  []string // names of a sha256sum manifest for ref, when ref cannot read this one
	}
	cases := []tc{
		{name: "sha256sum", tool: "sha256sum", names: args, ref: []string{"sha256sum", "-c"}},
		{name: "md5sum", tool: "md5sum", names: args, ref: []string{"md5sum", "-c"}},
		{name: "sha256sum--tag", tool: "sha256sum", toolArgs: []string{"--tag"}, names: args, ref: []string{"sha256sum", "-c"}},
		// b3sum 1.2 writes non-UTF-8 names lossily: they are left out. Its own
		// --check prints names its own way (it escapes every '\'), so the
		// reference is sha256sum -c on a sha256sum manifest of the same names.
		{name: "b3sum", tool: "b3sum", names: utf8Args, checkArgs: []string{"-a", "blake3"},
			ref: []string{"sha256sum", "-c"}, refNames: utf8Args},
	}

	manifests := map[string]string{} // case name (+ "/ref") → manifest file

	// phase checks one case: wantOK OK lines, one line per file, the same
	// lines as the real checker, and wantCode from both.
	phase := func(t *testing.T, c tc, wantOK, wantCode int) {
		t.Helper()
		m, refManifest := manifests[c.name], manifests[c.name]
		if c.refNames != nil {
			refManifest = manifests[c.name+"/ref"]
		}
		got, gotErr, code := run(t, bin, slices.Concat([]string{"check"}, c.checkArgs, []string{m})...)
		if code != wantCode {
			t.Errorf("pbatch check %s: exit %d, want %d\nstderr:\n%s", strings.Join(c.checkArgs, " "), code, wantCode, gotErr)
		}
		if n := bytes.Count(got, []byte(": OK\n")); n != wantOK {
			t.Errorf("pbatch check: %d OK lines, want %d\n%q", n, wantOK, got)
		}
		if n, want := bytes.Count(got, []byte("\n")), len(c.names); n != want {
			t.Errorf("pbatch check: %d lines, want %d (one per file)\n%q", n, want, got)
		}
		want, wantErr, refCode := run(t, c.ref[0], slices.Concat(c.ref[1:], []string{refManifest})...)
		if refCode != wantCode {
			t.Errorf("%s: exit %d, want %d (a broken test)\n%s", strings.Join(c.ref, " "), refCode, wantCode, wantErr)
		}
		if !bytes.Equal(got, want) {
			gl, wl := strings.SplitAfter(string(got), "\n"), strings.SplitAfter(string(want), "\n")
			for i := range max(len(gl), len(wl)) {
				g, w := "", ""
				if i < len(gl) {
					g = gl[i]
				}
				if i < len(wl) {
					w = wl[i]
				}
				if g != w {
					t.Errorf("line %d: got %q, want %q (%s)", i+1, g, w, strings.Join(c.ref, " "))
				}
			}
		}
		if wantCode == 0 {
			if len(gotErr) > 0 {
				t.Errorf("pbatch check: stderr %q, want nothing", gotErr)
			}
		} else if g, w := warnings(gotErr), warnings(wantErr); !slices.Equal(g, w) {
			t.Errorf("WARNING lines: got %q, want %q (%s)", g, w, strings.Join(c.ref, " "))
		}
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			manifests[c.name] = manifest(t, c.tool, c.toolArgs, c.names)
			if c.refNames != nil {
				manifests[c.name+"/ref"] = manifest(t, "sha256sum", nil, c.refNames)
			}
			phase(t, c, len(c.names), 0)
		})
	}

	// One file changed, one deleted: FAILED and FAILED open or read lines, the
	// rest OK, exit 1, as the real checker says.
	changed, deleted := "all\\three\r\nat once", "rtl\u202etxt.exe"
	if err := os.WriteFile(filepath.Join(root, changed), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, deleted)); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name+"/damaged", func(t *testing.T) {
			if manifests[c.name] == "" || (c.refNames != nil && manifests[c.name+"/ref"] == "") {
				t.Skip("no manifest (see the undamaged run)")
			}
			phase(t, c, len(c.names)-2, 1)
		})
	}
}
