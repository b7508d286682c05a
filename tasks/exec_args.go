package tasks

import (
	"fmt"
	"path"
	"slices"
	"strconv"
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
// whether it begins an argument (a shell word), where a value starting with
// '-' would be read as an option: such a value is given as ./VALUE, the same
// file, as find -execdir and fd do.
type slot struct {
	kind  int
	guard bool
}

func (s slot) value(p string) string {
	v := placeholderValue(s.kind, p)
	if s.guard {
		return guardDash(v)
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
// slot stands for a reference to a positional parameter, "${N}" (quoted is
// false inside double quotes, where the quotes are already there).
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
			t.pieces = append(t.pieces, piece{slot: slotOf(slot{k, i == 0})})
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

// The shell contexts shellTemplates tells apart.
const (
	ctxPlain  = iota // unquoted, at the top or inside $( ) or ` `
	ctxSubst         // $( ), unquoted inside
	ctxBack          // ` `, unquoted inside
	ctxDouble        // "…"
	ctxSingle        // '…': nothing expands
	ctxArith         // $(( )): a value would be evaluated as an expression
)

type shellFrame struct {
	ctx    int
	parens int // open parentheses inside $( ) or $(( ))
}

type shellLexer struct {
	stack   []shellFrame
	comment bool // in a # comment, up to the newline
	atWord  bool // nothing of the current word seen yet but quote characters
}

func (l *shellLexer) top() *shellFrame { return &l.stack[len(l.stack)-1] }
func (l *shellLexer) push(ctx int)     { l.stack = append(l.stack, shellFrame{ctx: ctx}) }
func (l *shellLexer) pop()             { l.stack = l.stack[:len(l.stack)-1] }

// shellTemplates reads the --shell script (the arguments joined with spaces)
// far enough to know each placeholder's context: unquoted it becomes "${N}",
// inside double quotes ${N}, and the value is passed as positional parameter
// N of `sh -c SCRIPT sh VALUE…`, so quoting cannot matter. Inside single
// quotes nothing expands, and inside $(( )) a value would be evaluated as an
// arithmetic expression (code, in bash): a placeholder there is refused.
// A backslash before a placeholder keeps it literal. Here-documents are not
// recognised: in the body of one, the reference stays quoted ("${N}").
// With -X an argument holding a placeholder is repeated per path, so it must
// end in the context it starts in.
func shellTemplates(argv []string, batch bool, slotOf func(slot) int) ([]argTemplate, error) {
	l := &shellLexer{stack: []shellFrame{{ctx: ctxPlain}}, atWord: true}
	ts := make([]argTemplate, len(argv))
	for n, a := range argv {
		if n > 0 {
			l.lex(" ", 0)
		}
		before := slices.Clone(l.stack)
		beforeComment := l.comment
		t := &ts[n]
		var lit strings.Builder
		for i := 0; i < len(a); {
			if k := placeholderAt(a, i); k >= 0 && !l.comment {
				switch l.top().ctx {
				case ctxSingle:
					return nil, fmt.Errorf("--shell: %s inside single quotes would not be replaced by its value; write \"%s\" or %s (values are passed to sh as quoted parameters)",
						placeholders[k], placeholders[k], placeholders[k])
				case ctxArith:
					return nil, fmt.Errorf("--shell: %s inside $(( )) would be evaluated as an expression; refused", placeholders[k])
				}
				if lit.Len() > 0 {
					t.pieces = append(t.pieces, piece{lit: lit.String(), slot: -1})
					lit.Reset()
				}
				t.pieces = append(t.pieces, piece{slot: slotOf(slot{k, l.atWord}), quoted: l.top().ctx != ctxDouble})
				t.places = true
				l.atWord = false
				i += len(placeholders[k])
				continue
			}
			w := l.lex(a, i)
			lit.WriteString(a[i : i+w])
			i += w
		}
		if lit.Len() > 0 || len(t.pieces) == 0 {
			t.pieces = append(t.pieces, piece{lit: lit.String(), slot: -1})
		}
		if batch && t.places && (!slices.Equal(before, l.stack) || beforeComment != l.comment) {
			return nil, fmt.Errorf("--shell -X: argument %q is repeated for each path, so its quotes and parentheses must close within it", a)
		}
	}
	return ts, nil
}

// lex takes the token at a[i:] and returns its length.
func (l *shellLexer) lex(a string, i int) int {
	c := a[i]
	if l.comment {
		if c == '\n' {
			l.comment, l.atWord = false, true
		}
		return 1
	}
	f := l.top()
	switch f.ctx {
	case ctxSingle:
		if c == '\'' {
			l.pop()
		} else {
			l.atWord = false
		}
		return 1
	case ctxDouble:
		switch {
		case c == '\\' && i+1 < len(a):
			l.atWord = false
			return 2
		case c == '"':
			l.pop()
		case c == '`':
			l.push(ctxBack)
		case strings.HasPrefix(a[i:], "$(("):
			l.push(ctxArith)
			return 3
		case strings.HasPrefix(a[i:], "$("):
			l.push(ctxSubst)
			return 2
		default:
			l.atWord = false
		}
		return 1
	case ctxArith:
		switch {
		case c == '(':
			f.parens++
		case c == ')' && f.parens > 0:
			f.parens--
		case strings.HasPrefix(a[i:], "))"):
			l.pop()
			l.atWord = false
			return 2
		}
		return 1
	}
	// Unquoted: at the top, inside $( ) or inside ` `.
	switch {
	case c == '\\' && i+1 < len(a):
		l.atWord = false
		return 2
	case c == '\'':
		l.push(ctxSingle)
	case c == '"':
		l.push(ctxDouble)
	case c == '`' && f.ctx == ctxBack:
		l.pop()
		l.atWord = false
	case c == '`':
		l.push(ctxBack)
		l.atWord = true
	case strings.HasPrefix(a[i:], "$(("):
		l.push(ctxArith)
		return 3
	case strings.HasPrefix(a[i:], "$("):
		l.push(ctxSubst)
		l.atWord = true
		return 2
	case c == '(' && f.ctx == ctxSubst:
		f.parens++
		l.atWord = true
	case c == ')' && f.ctx == ctxSubst && f.parens == 0:
		l.pop()
		l.atWord = false
	case c == ')' && f.ctx == ctxSubst:
		f.parens--
		l.atWord = true
	case c == '#' && l.atWord:
		l.comment = true
	case strings.IndexByte(" \t\n;&|<>()", c) >= 0:
		l.atWord = true
	default:
		l.atWord = false
	}
	return 1
}

// refLen is the length of the reference to positional parameter n.
func refLen(n int, quoted bool) int {
	l := len("${}") + len(strconv.Itoa(n))
	if quoted {
		l += 2
	}
	return l
}

func appendRef(b []byte, n int, quoted bool) []byte {
	if quoted {
		b = append(b, '"')
	}
	b = append(b, "${"...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, '}')
	if quoted {
		b = append(b, '"')
	}
	return b
}
