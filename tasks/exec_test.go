package tasks

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"pbatch/walker"
)

// TestExecBatchSplitsByArgMax runs -X batches under several argument limits
// and checks, from what the command itself received, that every path reached
// exactly one invocation unchanged and in order (a path that starts the next
// invocation is carried over whole), that no invocation with more than one
// path exceeds the limit, and that each file gets its invocation's status.
func TestExecBatchSplitsByArgMax(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	names := []string{"a", "with space", "new\nline", "-dash", "quote'\"", strings.Repeat("long", 40), "é", "z"}
	var es []walker.Entry
	var want []string
	for i := range 40 {
		p := filepath.Join(dir, names[i%len(names)]+strings.Repeat("x", i))
		es = append(es, walker.NamedEntry(p, nil))
		want = append(want, p)
	}
	// Each invocation appends its paths, NUL-terminated, then a lone NUL.
	script := `for a; do printf '%s\0' "$a"; done >> "$LOG"; printf '\0' >> "$LOG"; case "$1" in *quote*) exit 3;; esac`
	argv := []string{"sh", "-c", script, "sh"}
	base := 0
	for _, a := range argv {
		base += len(a) + 1 + 8
	}
	tests := []struct {
		name      string
		argMax    int
		minCalls  int
		maxCalls  int
		fitsLimit bool
	}{
		{"one path each", 1, 40, 40, false},
		{"a few paths each", base + 600, 4, 39, true},
		{"all in one", 1 << 20, 1, 1, true},
	}
	t.Setenv("LOG", log)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(log)
			x, err := NewExec(argv, ExecOptions{Batch: true, ArgMax: tc.argMax})
			if err != nil {
				t.Fatal(err)
			}
			w := x.NewWorker().(BatchWorker)
			rs := make([]Result, len(es))
			w.RunBatch(context.Background(), es, rs)
			data, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			calls := bytes.Split(bytes.TrimSuffix(data, []byte{0, 0}), []byte{0, 0})
			for _, c := range calls {
				var size int
				for p := range bytes.SplitSeq(c, []byte{0}) {
					got = append(got, string(p))
					size += len(p) + 1 + 8
				}
				if n := bytes.Count(c, []byte{0}) + 1; tc.fitsLimit && n > 1 && base+size > tc.argMax {
					t.Errorf("an invocation of %d paths took %d bytes, over %d", n, base+size, tc.argMax)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("paths received:\n%q\nwant:\n%q", got, want)
			}
			if len(calls) < tc.minCalls || len(calls) > tc.maxCalls {
				t.Errorf("%d invocations, want %d to %d", len(calls), tc.minCalls, tc.maxCalls)
			}
			// Files given to an invocation whose first path holds a quote fail
			// with its status; the others succeed.
			k := 0
			for _, c := range calls {
				n := bytes.Count(c, []byte{0}) + 1
				first := string(bytes.SplitN(c, []byte{0}, 2)[0])
				wantExit := 0
				if strings.Contains(first, "quote") {
					wantExit = 3
				}
				for i := k; i < k+n; i++ {
					if rs[i].Exit != wantExit || (wantExit != 0) != rs[i].Status.IsFailure() || rs[i].Entry.Root.Path != want[i] {
						t.Errorf("%q: exit %d, status %v; want exit %d", want[i], rs[i].Exit, rs[i].Status, wantExit)
					}
				}
				k += n
			}
		})
	}
}

// TestShellCommand pins how --shell turns placeholders into parameter
// references by context, and which contexts it refuses.
func TestShellCommand(t *testing.T) {
	tests := []struct {
		argv    []string
		batch   bool
		script  string
		values  []string
		wantErr string
	}{
		{argv: []string{"echo {}"}, script: `echo "${1}"`, values: []string{"./-a;b"}},
		{argv: []string{`echo "x {/} y" {/}`}, script: `echo "x ${1} y" "${2}"`, values: []string{"-a;b", "./-a;b"}},
		{argv: []string{"echo", "{}.bak", "pre{}"}, script: `echo "${1}".bak pre"${2}"`, values: []string{"./-a;b", "-a;b"}},
		{argv: []string{`echo "$(basename {})" ` + "`ls {}`"}, script: `echo "$(basename "${1}")" ` + "`ls \"${1}\"`", values: []string{"./-a;b"}},
		{argv: []string{`echo \{} "\{}" {}`}, script: `echo \{} "\{}" "${1}"`, values: []string{"./-a;b"}},
		{argv: []string{"echo 'a' {} # it's {}", "{}"}, script: `echo 'a' "${1}" # it's {} {}`, values: []string{"./-a;b"}},
		{argv: []string{"printf %s"}, script: `printf %s "$@"`, values: []string{"./-a;b"}},
		{argv: []string{"echo", "{}", "{/}"}, batch: true, script: `echo "${1}" "${3}" "${2}" "${4}"`, values: []string{"./-a;b", "./-a;b", "./-a;b", "./-a;b"}},
		{argv: []string{"echo '{}'"}, wantErr: "inside single quotes"},
		{argv: []string{"echo 'x", "{}'"}, wantErr: "inside single quotes"},
		{argv: []string{"echo $(( {} ))"}, wantErr: "inside $(( ))"},
		{argv: []string{`echo "`, `{}"`}, batch: true, wantErr: "must close within it"},
	}
	for _, tc := range tests {
		x, err := NewExec(tc.argv, ExecOptions{Shell: true, Batch: tc.batch})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one containing %q", tc.argv, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.argv, err)
			continue
		}
		paths := []string{"-a;b"}
		if tc.batch {
			paths = append(paths, "-a;b")
		}
		got := x.command(nil, paths)
		want := append([]string{"sh", "-c", tc.script, "sh"}, tc.values...)
		if !slices.Equal(got, want) {
			t.Errorf("%q: got\n%q\nwant\n%q", tc.argv, got, want)
		}
	}
}

// TestExecShellBatchFitsLimits: with --shell -X, each invocation's argv as
// the kernel got it (read back from /proc/PID/cmdline) stays within the total
// limit, its script within MAX_ARG_STRLEN, and every path arrives once, in
// order, as a parameter of its own whatever it holds.
func TestExecShellBatchFitsLimits(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	names := []string{"a;touch X;b", "$(touch X)", "`touch X`", "q'uote", `d"q`, "new\nline", "-rf", strings.Repeat("long", 40)}
	var es []walker.Entry
	var want []string
	for i := range 120 {
		p := filepath.Join(dir, names[i%len(names)]+strings.Repeat("x", i))
		es = append(es, walker.NamedEntry(p, nil))
		want = append(want, p)
	}
	t.Setenv("LOG", log)
	pad := strings.Repeat("p", 2000)
	tests := []struct {
		name     string
		argMax   int
		argv     []string
		minCalls int
	}{
		{"total limit", 8 << 10, []string{`{ wc -c < /proc/$$/cmdline; cat /proc/$$/cmdline; } >> "$LOG";`, `: {};`}, 3},
		{"script limit", 4 << 20, []string{`{ wc -c < /proc/$$/cmdline; cat /proc/$$/cmdline; } >> "$LOG";`, `: {} ` + pad + `;`}, 2},
		{"no placeholder", 8 << 10, []string{`{ wc -c < /proc/$$/cmdline; cat /proc/$$/cmdline; } >> "$LOG"; :`}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(log)
			x, err := NewExec(tc.argv, ExecOptions{Shell: true, Batch: true, ArgMax: tc.argMax})
			if err != nil {
				t.Fatal(err)
			}
			rs := make([]Result, len(es))
			x.NewWorker().(BatchWorker).RunBatch(context.Background(), es, rs)
			for i := range rs {
				if rs[i].Status != OK {
					t.Fatalf("%q: %v %v", want[i], rs[i].Status, rs[i].Err)
				}
			}
			// Each invocation logs its cmdline's length on a line, then the cmdline.
			data, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			type call struct{ argv []string }
			var calls []call
			for len(data) > 0 {
				nl := bytes.IndexByte(data, '\n')
				n, err := strconv.Atoi(strings.TrimSpace(string(data[:nl])))
				if err != nil || nl+1+n > len(data) {
					t.Fatalf("bad log at %.40q", data)
				}
				calls = append(calls, call{strings.Split(strings.TrimSuffix(string(data[nl+1:nl+1+n]), "\x00"), "\x00")})
				data = data[nl+1+n:]
			}
			if len(calls) < tc.minCalls {
				t.Errorf("%d invocations, want at least %d", len(calls), tc.minCalls)
			}
			var got []string
			for _, c := range calls {
				size := 0
				for _, a := range c.argv {
					size += len(a) + 1 + pointer
				}
				paths := c.argv[4:]
				if len(paths) > 1 && (size > tc.argMax || len(c.argv[2]) >= maxArgStrlen) {
					t.Errorf("an invocation of %d paths took %d bytes (limit %d), its script %d", len(paths), size, tc.argMax, len(c.argv[2]))
				}
				if strings.Contains(c.argv[2], "touch") {
					t.Errorf("a name reached the script: %.200q", c.argv[2])
				}
				got = append(got, paths...)
			}
			if !slices.Equal(got, want) {
				t.Errorf("paths received:\n%q\nwant:\n%q", got, want)
			}
		})
	}
}
