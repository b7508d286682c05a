package tasks

import (
	"fmt"
	"strconv"
	"strings"
)

// The --shell script is read by a lexer that models a small part of the
// shell language exactly: plain words, single quotes, double quotes with
// backslash escapes, the operators ; & | && || ( ) and newlines, redirections,
// comments at the start of a word and simple $name expansions. A placeholder
// is only accepted where that model is certainly what sh reads: a lexer that
// loses track of quoting puts a value where the shell splits and globs it.
// Anything it cannot bound exactly ($( ), backquotes, ${ }, here-documents,
// $' ', $" ", case, line continuations, [[ ]], (( )), $[ ]) "poisons" the rest
// of the script: a placeholder inside or after it is refused (before it is
// fine). alias, eval, source, . and a command named by an expansion poison
// too: they can define an alias, which both shells expand in sh -c, and turn
// a later command name into eval. Contexts where bash evaluates a value as
// code even when it is quoted (arithmetic, the arguments of let and declare,
// array subscripts) are refused too. These refusals are a courtesy: a script
// that itself turns data into code (eval "$f", PS4, compgen -W) is not
// something a lexer can see. What is sound is the placement: a reference goes
// only where the lexer is certain of sh's quoting, and a name is never script
// text.

const (
	tokNone = iota // nothing yet
	tokWord
	tokOp // an operator, or a redirection waiting for its target
)

const (
	cmdStart = iota // no command name yet: assignments, redirections, keywords
	cmdArgs         // the command name seen: the words are its arguments
)

// shState is everything the lexer knows at a point of the script; it is
// comparable, so -X can check that an argument repeated per path leaves the
// lexer as it found it.
type shState struct {
	quote   byte   // 0, '\'' or '"': inside that quote
	comment bool   // in a # comment, up to the newline
	inWord  bool   // a word has begun (a quote counts)
	word    string // its text so far with quotes removed; values and expansions not included
	dyn     bool   // it holds an expansion or a value
	expand  bool   // it holds an expansion ($name), not only values
	cmd     int    // cmdStart or cmdArgs, for the current simple command
	wrapper string // the command so far is builtin, command, exec, time, nohup: a name follows
	optArg  bool   // the next word is the operand of the wrapper's option (exec -a NAME)
	fnName  bool   // the next word is the name after function: a body, a command, follows
	brace   bool   // the word has an unquoted { before this point (bash's brace expansion)
	redir   bool   // the next word is a redirection's target
	split   string // bash and dash read this command differently from here on
	batch   bool   // -X: an argument with a placeholder is repeated
	refused string // why no value may be an argument of this simple command
	poison  string // what the lexer could not bound; nothing after it is placed
	last    int    // the last token's kind
	lastOp  string // the last operator, for messages
	lastW   string // the last word, for messages
	werr    string // an error found at the end of a word
}

type shLexer struct{ shState }

// Keywords after which the next word is still a command name (or nothing).
var shKeepsCommand = map[string]bool{
	"!": true, "{": true, "}": true, "if": true, "then": true, "else": true, "elif": true,
	"fi": true, "do": true, "done": true, "while": true, "until": true,
}

// Commands whose arguments bash evaluates as code, or as variable names and
// attributes (declare -i makes later assignments arithmetic): no value may be
// one of their arguments.
var shRefused = map[string]bool{
	"let": true, "declare": true, "typeset": true, "local": true, "export": true,
	"readonly": true, "eval": true, "trap": true, "alias": true,
}

// Commands whose first operand (after their options) is itself a command
// name. Only these are known; env, nice, timeout and the like are not, and a
// value after them is an argument to the lexer (see the README's limits).
var shWrappers = map[string]bool{"builtin": true, "command": true, "exec": true, "time": true, "nohup": true}

// Commands after which bash may read later lines differently: they can
// define aliases (which both bash and dash expand in sh -c) or run text
// the lexer never sees. Nothing after them is placed.
var shRedefines = map[string]bool{"alias": true, "eval": true, "source": true, ".": true, "trap": true}

func isNameStart(c byte) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isNameChar(c byte) bool { return isNameStart(c) || '0' <= c && c <= '9' }

// nameThen reports whether w starts with a shell name followed by one of the
// bytes in then.
func nameThen(w, then string) bool {
	if w == "" || !isNameStart(w[0]) {
		return false
	}
	i := 1
	for i < len(w) && isNameChar(w[i]) {
		i++
	}
	if i < len(w) && w[i] == '+' && strings.Contains(then, "=") && i+1 < len(w) && w[i+1] == '=' {
		return true
	}
	return i < len(w) && strings.IndexByte(then, w[i]) >= 0
}

func (l *shLexer) setPoison(what string) {
	if l.poison == "" {
		l.poison = what
	}
}

// op ends the current simple command.
func (l *shLexer) op(desc string) {
	l.cmd, l.wrapper, l.optArg, l.fnName, l.redir, l.refused, l.split = cmdStart, "", false, false, false, "", ""
	l.last, l.lastOp = tokOp, desc
}

// endWord classifies the word just ended.
func (l *shLexer) endWord() {
	if !l.inWord {
		return
	}
	w, dyn, expand := l.word, l.dyn, l.expand
	l.inWord, l.word, l.dyn, l.expand, l.brace = false, "", false, false, false
	l.last, l.lastW = tokWord, w
	if strings.Contains(w, varPrefix) && l.werr == "" {
		l.werr = reservedErr(w)
	}
	if l.redir {
		l.redir = false
		return
	}
	if !dyn {
		switch w {
		case "case", "esac", "[[", "]]":
			l.setPoison(w)
		case "alias", "eval":
			// Anywhere: an alias defined here (eval "alias l=eval")
			// turns a later command name into code.
			l.setPoison(w)
		}
		if strings.Contains(w, "alias") {
			// Text run later as code: trap 'alias l=eval' DEBUG,
			// PS4='$(alias l=eval)'.
			l.setPoison("a word with alias in it")
		}
		if shRefused[w] {
			// Anywhere in the command, not just as its name: `x=1 let`,
			// `builtin let`, `time let` run let too.
			l.refused = w
		}
	}
	option := strings.HasPrefix(w, "-") || strings.HasPrefix(w, "+")
	if l.optArg {
		l.optArg = false
		return
	}
	if l.fnName {
		// function NAME { BODY }: the body's first word is a command.
		l.fnName = false
		return
	}
	if l.cmd != cmdStart {
		if option && (l.refused == "declare" || l.refused == "typeset" || l.refused == "local") {
			l.setPoison(l.refused + " " + w + " (an attribute such as -i makes assignments arithmetic)")
		}
		return
	}
	switch {
	case nameThen(w, "=") && (l.wrapper == "" || l.wrapper == "time"):
		return // an assignment: the command name is still to come
	case !dyn && l.wrapper == "" && w == "function":
		l.fnName = true
		return
	case !dyn && l.wrapper == "" && w == "coproc":
		// coproc NAME { …; } or coproc COMMAND: which one only the
		// word after the next tells.
		l.setPoison("coproc")
		return
	case !dyn && (l.wrapper == "" || l.wrapper == "time") && shKeepsCommand[w]:
		// time is a keyword: time { …; }, time ! cmd.
		l.wrapper = ""
		return
	case !dyn && l.wrapper != "" && option:
		// exec -a NAME, and -ca, -la, -cla: NAME is not the command.
		l.optArg = l.wrapper == "exec" && !strings.HasPrefix(w, "--") && strings.HasSuffix(w, "a")
		return
	case !dyn && shWrappers[w]:
		l.wrapper = w
		return
	}
	l.cmd = cmdArgs
	switch {
	case expand:
		// It may be alias or eval: nothing after it is known. A value
		// alone is a file's name with a '/' (the guard), never either.
		l.refused = "a command whose name is an expansion"
		l.setPoison("a command whose name is an expansion")
	case dyn:
		l.refused = "a command whose name is an expansion"
	case shRedefines[w]:
		l.setPoison(w)
	}
}

func reservedErr(w string) string {
	return fmt.Sprintf("--shell: the script names %q: names beginning %s hold the values and are reserved", w, varPrefix)
}

// step takes the token at s[i:] and returns its length (which may reach past
// the end of the current argument into the space after it).
func (l *shLexer) step(s string, i int) int {
	c := s[i]
	var next byte
	if i+1 < len(s) {
		next = s[i+1]
	}
	if l.comment {
		if c == '\n' {
			l.comment = false
			l.op("a newline")
		}
		return 1
	}
	switch l.quote {
	case '\'':
		if c == '\'' {
			l.quote = 0
		} else {
			l.word += s[i : i+1]
		}
		return 1
	case '"':
		switch c {
		case '"':
			l.quote = 0
			return 1
		case '\\':
			if next == '\n' {
				l.setPoison("a line continuation (\\ and a newline)")
				return 2
			}
			if next != 0 {
				if strings.IndexByte("$`\"\\", next) >= 0 {
					l.word += s[i+1 : i+2]
				} else {
					l.word += s[i : i+2]
				}
				return 2
			}
		case '`':
			l.setPoison("`…`")
			return 1
		case '$':
			return l.dollar(s, i, true)
		}
		l.word += s[i : i+1]
		return 1
	}
	switch c {
	case ' ', '\t':
		l.endWord()
		return 1
	case '\n':
		l.endWord()
		l.op("a newline")
		return 1
	case ';', '&', '|':
		l.endWord()
		if c == '&' && next == '>' {
			// bash's &> and &>>, a redirection of stdout and stderr;
			// dash reads & and a new command, so nothing placed after
			// it in this command would be where both shells read it.
			n := 2
			if i+2 < len(s) && s[i+2] == '>' {
				n = 3
			}
			l.redir, l.last, l.lastOp = true, tokOp, "'"+s[i:i+n]+"'"
			l.split = s[i : i+n]
			return n
		}
		n := 1
		if next == c || (c == ';' || c == '|') && next == '&' {
			n = 2
		}
		if s[i:i+n] == ";;" || s[i:i+n] == ";&" {
			l.setPoison("case")
		}
		l.op("'" + s[i:i+n] + "'")
		return n
	case '(', ')':
		switch {
		case c == '(' && next == '(':
			l.setPoison("((…))")
		case c == '(' && l.inWord && strings.IndexByte("@!+*?", s[i-1]) >= 0:
			l.setPoison("an extended pattern (" + s[i-1:i+1] + "…)")
		}
		l.endWord()
		l.op("'" + s[i:i+1] + "'")
		return 1
	case '<', '>':
		if l.inWord && !l.dyn && !l.redir && (allDigits(l.word) || braceName(l.word)) {
			// 2>, {fd}>: the word is the redirection's descriptor, not
			// a command name or an argument.
			l.inWord, l.word, l.dyn, l.expand, l.brace = false, "", false, false, false
		} else {
			l.endWord()
		}
		if c == '<' && next == '<' {
			l.setPoison("<< (a here-document)")
			return 2
		}
		if next == '(' {
			l.setPoison(s[i:i+2] + "…) (a process substitution)")
			return 2
		}
		n := 1
		if c == '>' && strings.IndexByte(">&|", next) >= 0 && next != 0 || c == '<' && strings.IndexByte("&>", next) >= 0 && next != 0 {
			n = 2
		}
		l.redir, l.last, l.lastOp = true, tokOp, "'"+s[i:i+n]+"'"
		return n
	case '\'', '"':
		l.quote, l.inWord = c, true
		return 1
	case '\\':
		switch next {
		case 0:
			l.setPoison("a trailing \\")
			return 1
		case '\n':
			l.setPoison("a line continuation (\\ and a newline)")
			return 2
		}
		l.inWord = true
		l.word += s[i+1 : i+2]
		return 2
	case '`':
		l.setPoison("`…`")
		l.inWord = true
		return 1
	case '$':
		l.inWord = true
		return l.dollar(s, i, false)
	case '#':
		if !l.inWord {
			l.comment = true
			return 1
		}
	case '{':
		if l.inWord || next != ' ' && next != '\t' && next != '\n' && next != 0 {
			l.brace = true
		}
	}
	l.inWord = true
	l.word += s[i : i+1]
	return 1
}

// dollar takes a $ and what it expands.
func (l *shLexer) dollar(s string, i int, inDouble bool) int {
	var next byte
	if i+1 < len(s) {
		next = s[i+1]
	}
	switch {
	case next == '(' && i+2 < len(s) && s[i+2] == '(':
		l.setPoison("$((…))")
		return 3
	case next == '(':
		l.setPoison("$(…)")
		return 2
	case next == '{':
		l.setPoison("${…}")
		return 2
	case next == '[':
		l.setPoison("$[…]")
		return 2
	case !inDouble && next == '\'':
		l.setPoison("$'…'")
		return 2
	case !inDouble && next == '"':
		l.setPoison(`$"…"`)
		return 2
	case isNameStart(next):
		j := i + 2
		for j < len(s) && isNameChar(s[j]) {
			j++
		}
		l.dyn, l.expand = true, true
		return j - i
	case next != 0 && strings.IndexByte("0123456789@*#?-$!", next) >= 0:
		l.dyn, l.expand = true, true
		return 2
	}
	l.word += "$"
	return 1
}

func allDigits(w string) bool {
	for i := range len(w) {
		if w[i] < '0' || w[i] > '9' {
			return false
		}
	}
	return w != ""
}

func braceName(w string) bool {
	return len(w) > 2 && w[0] == '{' && w[len(w)-1] == '}' && nameThen(w[1:], "}") && strings.IndexByte(w[1:], '}') == len(w)-2
}

// place decides how placeholder k is placed at the lexer's state: its
// guard, and whether its reference needs quotes (not inside double quotes).
func (l *shLexer) place(k int) (guard int, quoted bool, err error) {
	ph := placeholders[k]
	switch {
	case l.poison != "":
		return 0, false, fmt.Errorf("--shell: %s after %s: pbatch places values only where it can tell exactly how sh reads the script, and cannot past that; assign it to a variable first: f=%s; … \"$f\"",
			ph, l.poison, ph)
	case l.quote == '\'':
		return 0, false, fmt.Errorf("--shell: %s inside single quotes would not be replaced by its value; write \"%s\" or %s (values are passed to sh as quoted parameters)", ph, ph, ph)
	case l.split != "":
		return 0, false, fmt.Errorf("--shell: %s after %s in the same command: bash reads a redirection there, dash '&' and a new command with %s in it; refused: put the redirection after the placeholders", ph, l.split, ph)
	case l.redir && l.batch:
		return 0, false, fmt.Errorf("--shell -X: %s in a redirection's target would repeat the redirection for each path (each one opening, or truncating, another file); refused: redirect the whole command instead", ph)
	case l.brace:
		return 0, false, fmt.Errorf("--shell: %s inside a word with an unquoted { could be moved to the start of a word by bash's brace expansion ({x,%s}), past the guard on a leading '-'; refused: quote the braces", ph, ph)
	case l.refused != "":
		return 0, false, fmt.Errorf("--shell: %s as an argument of %s could be evaluated as code; refused (assign it to a variable first: f=%s, and mind what %s does with \"$f\")", ph, l.refused, ph, l.refused)
	case nameThen(l.word, "["):
		return 0, false, fmt.Errorf("--shell: %s inside an array subscript would be evaluated as an arithmetic expression; refused", ph)
	}
	start := l.word == "" && !l.dyn
	guard = guardNone
	switch {
	case l.cmd == cmdStart && !l.redir && !nameThen(l.word, "="):
		switch {
		case start:
			guard = guardCommand
		case !strings.Contains(l.word, "/"):
			return 0, false, fmt.Errorf("--shell: %s inside a command name after %q could make it a builtin (let, eval); refused: begin the name with a path (./)", ph, l.word)
		}
	case start:
		guard = guardDashed
	}
	l.inWord, l.dyn = true, true
	return guard, l.quote != '"', nil
}

// shellTemplates reads the --shell script (the arguments joined with spaces)
// and turns each placeholder into a reference to the variable that holds its
// value (see shellCommand). Without a placeholder the paths are appended as
// "$@", which is only right where the script ends in the arguments of a
// command. With -X an argument holding a placeholder is repeated per path, so
// it must leave the lexer in the state it found it in.
func shellTemplates(argv []string, batch bool, slotOf func(slot) int) ([]argTemplate, error) {
	script := strings.Join(argv, " ")
	if i := strings.Index(script, varPrefix); i >= 0 {
		// Read ($pbatch_1), assigned, exported, unset or named by exec
		// {pbatch_1}>: a name the values live in is the script's only
		// through a placeholder.
		j := i + len(varPrefix)
		for j < len(script) && isNameChar(script[j]) {
			j++
		}
		return nil, fmt.Errorf("%s", reservedErr(script[i:j]))
	}
	l := &shLexer{}
	l.batch = batch
	ts := make([]argTemplate, len(argv))
	places := false
	pos, st := 0, 0
	for n, a := range argv {
		if n > 0 {
			// The space between arguments, unless the last token took it.
			if sep := st - 1; pos <= sep {
				pos = sep + l.step(script, sep)
			}
		}
		en := st + len(a)
		before := l.shState
		t := &ts[n]
		var lit strings.Builder
		for pos < en {
			i := pos - st
			if k := placeholderAt(a, i); k >= 0 && (!l.comment || l.poison != "") {
				guard, quoted, err := l.place(k)
				if err != nil {
					return nil, err
				}
				if lit.Len() > 0 {
					t.pieces = append(t.pieces, piece{lit: lit.String(), slot: -1})
					lit.Reset()
				}
				t.pieces = append(t.pieces, piece{slot: slotOf(slot{k, guard}), quoted: quoted})
				t.places, places = true, true
				pos += len(placeholders[k])
				continue
			}
			w := l.step(script, pos)
			lit.WriteString(script[pos:min(pos+w, en)])
			pos += w
		}
		if l.werr != "" {
			return nil, fmt.Errorf("%s", l.werr)
		}
		if lit.Len() > 0 || len(t.pieces) == 0 {
			t.pieces = append(t.pieces, piece{lit: lit.String(), slot: -1})
		}
		st = en + 1
		if batch && t.places {
			after := *l
			if pos == en {
				after.step(" ", 0)
			}
			// The last token is only for the end of a script without
			// placeholders, and for messages.
			after.last, after.lastOp, after.lastW = before.last, before.lastOp, before.lastW
			if after.shState != before {
				if before.cmd == cmdStart && after.cmd != cmdStart && strings.ContainsAny(a, " \t") {
					how := ""
					if !strings.ContainsAny(a, ";&|()<>\n'\"`$\\") {
						how = " (-- " + strings.Join(strings.Fields(a), " ") + ")"
					}
					return nil, fmt.Errorf("--shell -X: argument %q holds a command and is repeated for each path; with -X, give the command as separate arguments%s so that only the argument with {} is repeated", a, how)
				}
				return nil, fmt.Errorf("--shell -X: argument %q is repeated for each path, so it must end as it begins: quotes closed, in the same command, with no $( ), backquotes, ${ }, << or case in it", a)
			}
		}
	}
	end := *l
	end.step(" ", 0)
	if end.werr != "" {
		return nil, fmt.Errorf("%s", end.werr)
	}
	if places {
		return ts, nil
	}
	// "$@" is appended: it must land in a command's arguments.
	fix := ": put {} where the paths go"
	switch {
	case end.poison != "":
		return nil, fmt.Errorf("--shell: the script has no placeholder, and pbatch cannot tell where it ends after %s%s", end.poison, fix)
	case end.quote != 0:
		return nil, fmt.Errorf("--shell script ends inside %c quotes%s", end.quote, fix)
	case end.comment:
		return nil, fmt.Errorf("--shell script ends with a comment%s", fix)
	case end.last == tokOp:
		return nil, fmt.Errorf("--shell script ends with %s%s", end.lastOp, fix)
	case end.split != "":
		return nil, fmt.Errorf("--shell script ends after %s: dash reads '&' there, and \"$@\" appended would run the paths as a command%s", end.split, fix)
	case end.last != tokWord || end.cmd != cmdArgs:
		return nil, fmt.Errorf("--shell script ends with %q, not in a command's arguments%s", end.lastW, fix)
	case end.refused != "":
		return nil, fmt.Errorf("--shell: the paths would be arguments of %s, which could evaluate them as code; refused", end.refused)
	}
	return ts, nil
}

// The variables that hold the values: `pbatch_N=${N}` for each positional
// parameter, on the script's first line. Assignments are not split or
// globbed, and unlike $N they keep their values through set --, shift and
// function calls.
const varPrefix = "pbatch_"

// assignLen is the length of the assignment of value n, with the space or
// newline after it.
func assignLen(n int) int {
	return len(varPrefix) + 2*len(strconv.Itoa(n)) + len("=${}") + 1
}

func appendAssign(b []byte, n int) []byte {
	b = append(b, varPrefix...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, "=${"...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '}')
}

// refLen is the length of the reference to value n.
func refLen(n int, quoted bool) int {
	l := len("${}") + len(varPrefix) + len(strconv.Itoa(n))
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
	b = append(b, varPrefix...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, '}')
	if quoted {
		b = append(b, '"')
	}
	return b
}
