package tasks

import (
	"path"
	"slices"
	"strings"
)

// The placeholders, longest spelling first so that "{/.}" is not read as "{/" ".}".
var placeholders = [...]string{"{/.}", "{//}", "{/}", "{.}", "{}"}

// placeholderAt returns which placeholder starts s[i:], or -1.
func placeholderAt(s string, i int) int {
	if s[i] != '{' {
		return -1
	}
	for k, ph := range placeholders {
		if strings.HasPrefix(s[i:], ph) {
			return k
		}
	}
	return -1
}

func hasPlaceholder(a string) bool {
	for i := range len(a) {
		if placeholderAt(a, i) >= 0 {
			return true
		}
	}
	return false
}

// placeholderValue is what placeholder kind stands for with path p.
func placeholderValue(kind int, p string) string {
	noExt := func(s string) string {
		b := path.Base(s)
		if i := strings.LastIndexByte(b, '.'); i > 0 {
			return s[:len(s)-(len(b)-i)]
		}
		return s
	}
	switch placeholders[kind] {
	case "{/.}":
		return noExt(path.Base(p))
	case "{//}":
		return path.Dir(p)
	case "{/}":
		return path.Base(p)
	case "{.}":
		return noExt(p)
	}
	return p
}

// A slot is one value handed to the command per path: a placeholder, and
// how its value is guarded.
type slot struct {
	kind  int
	guard int
}

// Guards. A value that begins an argument (a shell word) would be read as an
// option if it started with '-': such a value is given as ./VALUE, the same
// file, as find -execdir and fd do. A value that is the command's name would
// name a command in $PATH or, with --shell, a builtin (let, eval: its
// arguments are code) unless it holds a '/': without one it is given as
// ./VALUE too, the file itself (and so is one starting with '-', which -X
// repeats as an argument).
const (
	guardNone = iota
	guardDashed
	guardCommand
)

func (s slot) value(p string) string {
	v := placeholderValue(s.kind, p)
	switch s.guard {
	case guardDashed:
		return guardDash(v)
	case guardCommand:
		if !strings.Contains(v, "/") || strings.HasPrefix(v, "-") {
			return "./" + v
		}
	}
	return v
}

func guardDash(v string) string {
	if strings.HasPrefix(v, "-") {
		return "./" + v
	}
	return v
}

// A piece of an argument: literal text, or a slot's value. Under --shell a
// slot stands for a reference to the variable holding the value,
// "${pbatch_N}" (quoted is false inside double quotes, where the quotes are
// already there).
type piece struct {
	lit    string
	slot   int // -1 for literal text
	quoted bool
}

type argTemplate struct {
	pieces []piece
	places bool // some piece is a slot
}

// templates splits each argument into literal text and slots. Without a
// shell a slot's value is spliced into its argument; under --shell (see
// shellTemplates) the argument is script text and a slot becomes a parameter
// reference, so that no value is ever part of the script.
func templates(argv []string, shell, batch bool) ([]argTemplate, []slot, error) {
	var slots []slot
	slotOf := func(s slot) int {
		if i := slices.Index(slots, s); i >= 0 {
			return i
		}
		slots = append(slots, s)
		return len(slots) - 1
	}
	if shell {
		ts, err := shellTemplates(argv, batch, slotOf)
		return ts, slots, err
	}
	ts := make([]argTemplate, len(argv))
	for n, a := range argv {
		t := &ts[n]
		start := 0
		for i := 0; i < len(a); i++ {
			k := placeholderAt(a, i)
			if k < 0 {
				continue
			}
			if i > start {
				t.pieces = append(t.pieces, piece{lit: a[start:i], slot: -1})
			}
			g := guardNone
			switch {
			case i == 0 && n == 0:
				// The command itself: the file, not a namesake in $PATH.
				g = guardCommand
			case i == 0:
				g = guardDashed
			}
			t.pieces = append(t.pieces, piece{slot: slotOf(slot{k, g})})
			t.places = true
			i += len(placeholders[k]) - 1
			start = i + 1
		}
		if start < len(a) || len(t.pieces) == 0 {
			t.pieces = append(t.pieces, piece{lit: a[start:], slot: -1})
		}
	}
	return ts, slots, nil
}
