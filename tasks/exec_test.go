package tasks

import (
	"bytes"
	"context"
	"fmt"
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

// TestShellCommand pins how --shell turns placeholders into references to
// the variables holding the values, by context, and which scripts it refuses:
// everything after a construct the lexer cannot bound exactly, contexts where
// bash evaluates a value as code, and a script without placeholder whose end
// is not in a command's arguments (where "$@" would run the paths or lose
// them).
func TestShellCommand(t *testing.T) {
	tests := []struct {
		argv    []string
		batch   bool
		script  string // after the assignments pbatch_N=${N}
		values  []string
		paths   []string // instead of "-a;b"
		wantErr string
	}{
		{argv: []string{"echo {}"}, script: `echo "${pbatch_1}"`, values: []string{"./-a;b"}},
		{argv: []string{`echo "x {/} y" {/}`}, script: `echo "x ${pbatch_1} y" "${pbatch_2}"`, values: []string{"-a;b", "./-a;b"}},
		{argv: []string{"echo", "{}.bak", "pre{}"}, script: `echo "${pbatch_1}".bak pre"${pbatch_2}"`, values: []string{"./-a;b", "-a;b"}},
		{argv: []string{`echo \{} "\{}" {}`}, script: `echo \{} "\{}" "${pbatch_1}"`, values: []string{"./-a;b"}},
		{argv: []string{"echo 'a' {} # it's {}", "{}"}, script: `echo 'a' "${pbatch_1}" # it's {} {}`, values: []string{"./-a;b"}},
		{argv: []string{`echo ""# {}`}, script: `echo ""# "${pbatch_1}"`, values: []string{"./-a;b"}},
		{argv: []string{`echo "a\"{}" $HOME {}`}, script: `echo "a\"${pbatch_1}" $HOME "${pbatch_2}"`, values: []string{"-a;b", "./-a;b"}},
		{argv: []string{"f={}; x=$(basename \"$f\")"}, script: `f="${pbatch_1}"; x=$(basename "$f")`, values: []string{"-a;b"}},
		{argv: []string{"{} x; 2>/dev/null {}; ./{}; x=1 {}; command -p {}"}, script: `"${pbatch_1}" x; 2>/dev/null "${pbatch_1}"; ./"${pbatch_2}"; x=1 "${pbatch_1}"; command -p "${pbatch_1}"`, values: []string{"./-a;b", "-a;b"}},
		{argv: []string{"set -- x; shift; f() { echo {}; }; f y"}, script: `set -- x; shift; f() { echo "${pbatch_1}"; }; f y`, values: []string{"./-a;b"}},
		{argv: []string{"printf %s"}, script: `printf %s "$@"`, values: []string{"./-a;b"}},
		{argv: []string{"printf %s >out 2>&1"}, script: `printf %s >out 2>&1 "$@"`, values: []string{"./-a;b"}},
		{argv: []string{"echo", "{}", "{/}"}, batch: true, script: `echo "${pbatch_1}" "${pbatch_3}" "${pbatch_2}" "${pbatch_4}"`, values: []string{"./-a;b", "./-a;b", "./-a;b", "./-a;b"}},
		{argv: []string{"mv {} /dst;"}, batch: true, script: `mv "${pbatch_1}" /dst; mv "${pbatch_2}" /dst;`, values: []string{"./-a;b", "./-a;b"}},

		{argv: []string{"echo '{}'"}, wantErr: "inside single quotes"},
		{argv: []string{"echo 'x", "{}'"}, wantErr: "inside single quotes"},
		// Constructs the lexer does not bound: a placeholder inside or after one.
		{argv: []string{`echo "$(case {} in *.tmp) rm -v {};; esac)"`}, wantErr: "{} after $(…): "},
		{argv: []string{"echo \"`printf \"[%s]\" \\\"{}\\\"`\""}, wantErr: "{} after `…`"},
		{argv: []string{"cat <<EOF\nHe said \"hi\nEOF\nprintf \"[%s]\" {}"}, wantErr: "{} after << (a here-document)"},
		{argv: []string{"cat <<<x; echo {}"}, wantErr: "after <<"},
		{argv: []string{"echo \\\n-{}"}, wantErr: "after a line continuation"},
		{argv: []string{"echo \"\\\n{}\""}, wantErr: "after a line continuation"},
		{argv: []string{"echo $'\\'' {}"}, wantErr: "after $'…'"},
		{argv: []string{`echo $"x" {}`}, wantErr: `after $"…"`},
		{argv: []string{`echo ${x} {}`}, wantErr: "after ${…}"},
		{argv: []string{`echo "${x:-a}" {}`}, wantErr: "after ${…}"},
		{argv: []string{`echo ${x:{}:1}`}, wantErr: "after ${…}"},
		{argv: []string{"case x in x) echo {};; esac"}, wantErr: "after case"},
		{argv: []string{"echo $(x) {}"}, wantErr: "after $(…)"},
		{argv: []string{"echo `x` {}"}, wantErr: "after `…`"},
		{argv: []string{"echo $(( {} ))"}, wantErr: "after $((…))"},
		// Arithmetic and the arguments of let, declare and their kind.
		{argv: []string{"[[ {/} -gt 0 ]]"}, wantErr: "after [["},
		{argv: []string{"(( {} ))"}, wantErr: "after ((…))"},
		{argv: []string{"echo $[ {} ]"}, wantErr: "after $[…]"},
		{argv: []string{"let x={}"}, wantErr: "as an argument of let"},
		{argv: []string{"x=1 let x={}"}, wantErr: "as an argument of let"},
		{argv: []string{"builtin let x={}"}, wantErr: "as an argument of let"},
		{argv: []string{`"let" x={}`}, wantErr: "as an argument of let"},
		{argv: []string{"declare x={}"}, wantErr: "as an argument of declare"},
		{argv: []string{"declare -i n; n={}"}, wantErr: "after declare -i"},
		{argv: []string{"f() { local -i n; n={}; }"}, wantErr: "after local -i"},
		{argv: []string{"typeset -i n={}"}, wantErr: "after typeset -i"},
		{argv: []string{"export x={}"}, wantErr: "as an argument of export"},
		{argv: []string{"readonly x={}"}, wantErr: "as an argument of readonly"},
		{argv: []string{"eval echo {}"}, wantErr: "{} after eval"},
		{argv: []string{"trap {} EXIT"}, wantErr: "{} after trap"},
		{argv: []string{"c=let; $c {}"}, wantErr: "a command whose name is an expansion"},
		{argv: []string{"a[{}]=1"}, wantErr: "array subscript"},
		{argv: []string{`a["{}"]=1`}, wantErr: "array subscript"},
		{argv: []string{"alias e='echo \"'\ne {}"}, wantErr: "after alias"},
		{argv: []string{"cat <(echo {})"}, wantErr: "after <(…) (a process substitution)"},
		{argv: []string{"echo >(cat) {}"}, wantErr: "after >(…)"},
		{argv: []string{"echo @(x|{})"}, wantErr: "after an extended pattern (@(…)"},
		{argv: []string{"l{} x"}, wantErr: "inside a command name"},
		{argv: []string{"pbatch_1=x; echo {}"}, wantErr: "pbatch_ hold the values and are reserved"},
		// Every other way of naming them: reassigned, unset, read.
		{argv: []string{"export pbatch_1=x; echo {}"}, wantErr: `names "pbatch_1": names beginning pbatch_`},
		{argv: []string{"readonly pbatch_1; echo {}"}, wantErr: `names "pbatch_1"`},
		{argv: []string{"f() { local pbatch_1=x; echo {}; }"}, wantErr: `names "pbatch_1"`},
		{argv: []string{"exec {pbatch_1}>/dev/null; echo {}"}, wantErr: `names "pbatch_1"`},
		{argv: []string{"unset pbatch_1; echo {}"}, wantErr: `names "pbatch_1"`},
		{argv: []string{"unset pbatch''_1; echo {}"}, wantErr: `names "pbatch_1"`},
		{argv: []string{"echo $pbatch_2 {}"}, wantErr: `names "pbatch_2"`},
		// &> and &>> are redirections in bash, '&' and a new command in
		// dash: nothing is placed after them in the same command.
		{argv: []string{"eval &>/dev/null {}"}, wantErr: "{} after eval"},
		{argv: []string{"echo &>/dev/null {}"}, wantErr: "{} after &> in the same command"},
		{argv: []string{"echo {} &>/dev/null; echo {}"}, script: `echo "${pbatch_1}" &>/dev/null; echo "${pbatch_1}"`, values: []string{"./-a;b"}},
		{argv: []string{"echo &>>log {}"}, wantErr: "{} after &>> in the same command"},
		// Command position after time, exec, command, builtin, nohup and in
		// function bodies: the file, not a command in $PATH.
		{argv: []string{"time -p {/}"}, script: `time -p "${pbatch_1}"`, values: []string{"./x"}, paths: []string{"x"}},
		{argv: []string{"exec -a name {/}"}, script: `exec -a name "${pbatch_1}"`, values: []string{"./x"}, paths: []string{"x"}},
		{argv: []string{"exec -cla name {/}"}, script: `exec -cla name "${pbatch_1}"`, values: []string{"./x"}, paths: []string{"x"}},
		{argv: []string{"time { {/}; }"}, script: `time { "${pbatch_1}"; }`, values: []string{"./x"}, paths: []string{"x"}},
		{argv: []string{"nohup {/}"}, script: `nohup "${pbatch_1}"`, values: []string{"./x"}, paths: []string{"x"}},
		{argv: []string{"builtin command -p {/}"}, script: `builtin command -p "${pbatch_1}"`, values: []string{"./x"}, paths: []string{"x"}},
		{argv: []string{"function f { {/}; }; f"}, script: `function f { "${pbatch_1}"; }; f`, values: []string{"./x"}, paths: []string{"x"}},
		{argv: []string{"function f() { {/}; }; f"}, script: `function f() { "${pbatch_1}"; }; f`, values: []string{"./x"}, paths: []string{"x"}},
		{argv: []string{"coproc f { {/}; }"}, wantErr: "{/} after coproc"},
		{argv: []string{"time x=1 {/}"}, script: `time x=1 "${pbatch_1}"`, values: []string{"./x"}, paths: []string{"x"}},
		{argv: []string{"printf %s function"}, script: `printf %s function "$@"`, values: []string{"./-a;b"}},
		// Aliases: after alias, eval, source or a command named by an
		// expansion anywhere, a command name could be an alias for eval.
		{argv: []string{"a=alias; $a l=eval\nl {}"}, wantErr: "{} after a word with alias in it"},
		{argv: []string{"a=al b=ias; $a$b l=eval\nl {}"}, wantErr: "{} after a command whose name is an expansion"},
		{argv: []string{"eval \"alias l=eval\"\nl {}"}, wantErr: "{} after eval"},
		{argv: []string{". ./lib; l {}"}, wantErr: "{} after ."},
		{argv: []string{"source ./lib; l {}"}, wantErr: "{} after source"},
		{argv: []string{"trap 'alias l=eval' DEBUG; true; l {}"}, wantErr: "{} after trap"},
		{argv: []string{"trap \"$x\" DEBUG; true; l {}"}, wantErr: "{} after trap"},
		{argv: []string{"PS4='$(alias l=eval)'; set -x; true; l {}"}, wantErr: "{} after a word with alias in it"},
		{argv: []string{"{} x; {} y"}, script: `"${pbatch_1}" x; "${pbatch_1}" y`, values: []string{"./-a;b"}},
		// Brace expansion would move a value to the start of a word.
		{argv: []string{"show {x,{/}}"}, wantErr: "inside a word with an unquoted {"},
		{argv: []string{"show x{a,b}{/}"}, wantErr: "inside a word with an unquoted {"},
		{argv: []string{`show "{x,"{/}}`}, script: `show "{x,""${pbatch_1}"}`, values: []string{"-a;b"}},
		{argv: []string{`show \{x,{/}}`}, script: `show \{x,"${pbatch_1}"}`, values: []string{"-a;b"}},
		{argv: []string{"{ show {/}; }"}, script: `{ show "${pbatch_1}"; }`, values: []string{"./-a;b"}},
		// No placeholder: "$@" only where it lands in a command's arguments.
		{argv: []string{"echo processing;"}, wantErr: "script ends with ';': put {} where the paths go"},
		{argv: []string{"echo x &"}, wantErr: "ends with '&'"},
		{argv: []string{"echo x |"}, wantErr: "ends with '|'"},
		{argv: []string{"echo x &&"}, wantErr: "ends with '&&'"},
		{argv: []string{"echo x\n"}, wantErr: "ends with a newline"},
		{argv: []string{"echo x # c"}, wantErr: "ends with a comment"},
		{argv: []string{"cat <<EOF\nx\nEOF"}, wantErr: "after << (a here-document): put {}"},
		{argv: []string{"echo >"}, wantErr: "ends with '>'"},
		{argv: []string{"echo x &>/dev/null"}, wantErr: "ends after &>: dash reads '&' there"},
		{argv: []string{"echo x &>>log"}, wantErr: "ends after &>>"},
		{argv: []string{"time -p"}, wantErr: `ends with "-p", not in a command's arguments`},
		{argv: []string{"exec -a name"}, wantErr: `ends with "name", not in a command's arguments`},
		{argv: []string{"nohup"}, wantErr: `ends with "nohup", not in a command's arguments`},
		{argv: []string{"for f; do"}, wantErr: `ends with "do"`},
		{argv: []string{"f() { echo; }"}, wantErr: `ends with "}"`},
		{argv: []string{"x=1"}, wantErr: `ends with "x=1"`},
		{argv: []string{"echo 'x"}, wantErr: "ends inside ' quotes"},
		{argv: []string{"echo $(date)"}, wantErr: "after $(…): put {}"},
		{argv: []string{"eval"}, wantErr: "after eval: put {}"},
		{argv: []string{"echo x \\"}, wantErr: "after a trailing"},
		// -X: a repeated argument must leave the lexer as it found it.
		{argv: []string{`echo "`, `{}"`}, batch: true, wantErr: "must end as it begins"},
		{argv: []string{"echo", "{}; let"}, batch: true, wantErr: "must end as it begins"},
		{argv: []string{"echo", "{} $(x)"}, batch: true, wantErr: "must end as it begins"},
		{argv: []string{"echo {}"}, batch: true, wantErr: "with -X, give the command as separate arguments (-- echo {}) so that only the argument with {} is repeated"},
		{argv: []string{"tar czf out.tgz {}"}, batch: true, wantErr: "(-- tar czf out.tgz {})"},
		{argv: []string{"file {} | grep -q ELF && printf '%s\\n' {}"}, batch: true, wantErr: "give the command as separate arguments so that only"},
		// -X repeats a redirection with a placeholder.
		{argv: []string{"echo", "data", ">{}"}, batch: true, wantErr: "in a redirection's target would repeat the redirection"},
		{argv: []string{"echo", "data", "2>>{}"}, batch: true, wantErr: "in a redirection's target"},
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
		if tc.paths != nil {
			paths = tc.paths
		} else if tc.batch {
			paths = append(paths, "-a;b")
		}
		got := x.command(nil, paths)
		script := tc.script
		if x.places {
			var assign []string
			for n := range tc.values {
				assign = append(assign, fmt.Sprintf("pbatch_%d=${%d}", n+1, n+1))
			}
			script = strings.Join(assign, " ") + "\n" + script
		}
		want := append([]string{"sh", "-c", script, "sh"}, tc.values...)
		if !slices.Equal(got, want) {
			t.Errorf("%q: got\n%q\nwant\n%q", tc.argv, got, want)
		}
	}
}

// TestExecShellBatchFitsLimits: with --shell -X, each invocation's argv as
// the kernel got it (read back from /proc/PID/cmdline) stays within the total
// limit, its script within MAX_ARG_STRLEN, and every path arrives once, in
// order, as a parameter of its own whatever it holds. The script holds an
// assignment (pbatch_N=${N}) per value and a reference per placeholder and
// path: "many values" is over MAX_ARG_STRLEN by its assignments alone unless
// they are counted.
func TestExecShellBatchFitsLimits(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	names := []string{"a;touch X;b", "$(touch X)", "`touch X`", "q'uote", `d"q`, "new\nline", "-rf", strings.Repeat("long", 40)}
	var hostile, short []walker.Entry
	var wantHostile, wantShort []string
	for i := range 120 {
		p := filepath.Join(dir, names[i%len(names)]+strings.Repeat("x", i))
		hostile = append(hostile, walker.NamedEntry(p, nil))
		wantHostile = append(wantHostile, p)
	}
	for i := range 3000 {
		p := filepath.Join(dir, "n"+strconv.Itoa(i))
		short = append(short, walker.NamedEntry(p, nil))
		wantShort = append(wantShort, p)
	}
	t.Setenv("LOG", log)
	pad := strings.Repeat("p", 2000)
	tests := []struct {
		name     string
		argMax   int
		argv     []string
		minCalls int
		many     bool
	}{
		{"total limit", 8 << 10, []string{`{ wc -c < /proc/$$/cmdline; cat /proc/$$/cmdline; } >> "$LOG";`, `: {};`}, 3, false},
		{"script limit", 4 << 20, []string{`{ wc -c < /proc/$$/cmdline; cat /proc/$$/cmdline; } >> "$LOG";`, `: {} ` + pad + `;`}, 2, false},
		{"many values", 1 << 20, []string{`{ wc -c < /proc/$$/cmdline; cat /proc/$$/cmdline; } >> "$LOG";`, `: {} {/} {//} {.} {/.};`}, 4, true},
		{"no placeholder", 8 << 10, []string{`{ wc -c < /proc/$$/cmdline; cat /proc/$$/cmdline; } >> "$LOG"; :`}, 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			es, want := hostile, wantHostile
			if tc.many {
				es, want = short, wantShort
			}
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
				if tc.many {
					// The five values of each path: keep the first, {}.
					var ps []string
					for k := 0; k < len(paths); k += 5 {
						ps = append(ps, paths[k])
					}
					paths = ps
				}
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
