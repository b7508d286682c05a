package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"

	"pbatch/tasks"
)

// formatter turns results into stdout records.
type formatter interface {
	// record appends the stdout record for r to b. It is called for OK results,
	// and for every result when all() is true.
	record(b []byte, r *tasks.Result) []byte
	all() bool
}

// collector is the single writer of stdout. It receives every result as it
// completes, prints records and diagnostics, and keeps the counters.
type collector struct {
	out    *bufio.Writer
	stderr io.Writer
	f      formatter
	quiet  bool
	start  time.Time
	line   []byte
	werr   error // first stdout error; nothing more is written after it

	spool, escaped []byte // exec: reading spooled output back, escaping it

	noDiag bool // the formatter reports problems itself (check)
	meta   bool // chmod/chown: count changed and unchanged entries
	dryRun bool

	prog        *progress // nil unless a progress display is on
	stdoutIsTTY bool      // clear the display before writing results
	stop        bool      // the failure policy stopped the run
	jsonOut     bool      // exec output goes into the records
	noBytes     bool      // the task reads no content: no bytes or rate in the summary
	done        int64

	files, bytes              int64
	changed, unchanged        int64
	failed, skipped, vanished int64
}

func newCollector(stdout, stderr io.Writer, f formatter, quiet bool) *collector {
	return &collector{out: bufio.NewWriterSize(stdout, 64<<10), stderr: stderr, f: f, quiet: quiet}
}

func (c *collector) addAll(rs []tasks.Result) {
	for i := range rs {
		c.add(&rs[i])
	}
}

func (c *collector) add(r *tasks.Result) {
	defer closeOutputs(r)
	if r.Status == tasks.Failed && errors.Is(r.Err, context.Canceled) {
		return // aborted by an interrupt
	}
	c.done++
	switch r.Status {
	case tasks.OK:
		c.files++
		c.bytes += r.Size
		if r.Modified {
			c.changed++
		} else {
			c.unchanged++
		}
	case tasks.Skipped:
		c.skipped++
		c.note(r)
	case tasks.Vanished:
		c.vanished++
		c.note(r)
	default:
		c.failed++
		c.diag(r)
	}
	c.stderrBlock(r)
	if r.Note != nil && !c.quiet {
		c.prog.clear()
		fmt.Fprintf(c.stderr, "pbatch: %s: %s\n", quoteName(r.Entry.Path()), r.Note)
	}
	if r.Status == tasks.OK || c.f.all() {
		if s, ok := c.f.(streamer); ok {
			s.stream(c, r)
		} else if b := c.f.record(c.line[:0], r); len(b) > 0 {
			c.write(b)
		}
	}
}

func (c *collector) note(r *tasks.Result) {
	if !c.quiet && !c.noDiag {
		c.diag(r)
	}
}

// diag prints `pbatch: PATH: reason` on stderr in one write, so lines from
// concurrent writers never mix.
func (c *collector) diag(r *tasks.Result) {
	c.prog.clear()
	c.stderrBlock(r)
	if c.noDiag {
		return
	}
	fmt.Fprintf(c.stderr, "pbatch: %s: %s\n", quoteName(r.Entry.Path()), r.Err)
}

// stderrBlock writes a job's captured stderr (exec) in one block, once.
func (c *collector) stderrBlock(r *tasks.Result) {
	if r.Stderr.Len() > 0 && !c.jsonOut {
		c.prog.clear()
		err := r.Stderr.Chunks(c.spoolBuf(), func(p []byte) error {
			c.stderr.Write(p)
			return nil
		})
		if err != nil {
			c.spoolErr(r, err)
		}
		r.Stderr.Close()
		r.Stderr = nil
	}
}

func (c *collector) write(b []byte) {
	c.line = b[:0]
	if c.werr != nil {
		return
	}
	if _, err := c.out.Write(b); err != nil {
		c.setErr(err)
	}
}

func (c *collector) flush() {
	if c.stdoutIsTTY && c.out.Buffered() > 0 {
		c.prog.clear()
	}
	if c.werr == nil {
		if err := c.out.Flush(); err != nil {
			c.setErr(err)
		}
	}
}

func (c *collector) setErr(err error) {
	if errors.Is(err, syscall.EPIPE) {
		c.werr = errBrokenPipe
		return
	}
	c.werr = err
	fmt.Fprintf(c.stderr, "pbatch: write error: %s\n", unwrapErrno(err))
}

func unwrapErrno(err error) error {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return err
}

// summary prints one line on stderr: counts, bytes, elapsed time and throughput.
func (c *collector) summary(interrupted bool) {
	c.prog.clear()
	el := time.Since(c.start)
	var b strings.Builder
	b.WriteString("pbatch: ")
	switch {
	case interrupted:
		b.WriteString("interrupted: ")
	case c.stop:
		b.WriteString("stopped after " + humanize.Comma(c.failed) + " failed: ")
	}
	if c.meta {
		verb := "changed"
		if c.dryRun {
			verb = "would change"
		}
		fmt.Fprintf(&b, "%s %s, %s unchanged in %s", humanize.Comma(c.changed), verb, humanize.Comma(c.unchanged), roundDuration(el))
	} else if c.noBytes {
		fmt.Fprintf(&b, "%s files in %s", humanize.Comma(c.files), roundDuration(el))
	} else {
		fmt.Fprintf(&b, "%s files, %s in %s", humanize.Comma(c.files), humanize.Bytes(uint64(c.bytes)), roundDuration(el))
		if s := el.Seconds(); s > 0 {
			fmt.Fprintf(&b, ", %s/s", humanize.Bytes(uint64(float64(c.bytes)/s)))
		}
	}
	for _, n := range []struct {
		n    int64
		what string
	}{{c.skipped, "skipped"}, {c.vanished, "vanished"}, {c.failed, "failed"}} {
		if n.n > 0 {
			fmt.Fprintf(&b, "; %s %s", humanize.Comma(n.n), n.what)
		}
	}
	b.WriteByte('\n')
	io.WriteString(c.stderr, b.String())
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// appendQuotedName appends quoteName(name) without converting plain ASCII
// names (nearly all of them) to a string first: metadata tasks print a line per
// changed entry.
func appendQuotedName(b, name []byte) []byte {
	for _, c := range name {
		if c < 0x20 || c > 0x7e || c == '"' {
			return append(b, quoteName(string(name))...)
		}
	}
	return append(b, name...)
}

// quoteName makes a path safe for a diagnostic line: names with control
// characters, invalid UTF-8 or invisible format characters are Go-quoted
// ("a\nb", "\xff"), so a name cannot forge or hide output. Plain names print as is.
func quoteName(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) || r == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}

// hashFormat prints digests as coreutils (and b3sum) do, BSD tags, or JSON Lines.
type hashFormat struct {
	alg  tasks.Algorithm
	tag  bool
	json bool
	null bool
	path []byte
}

func (f *hashFormat) all() bool { return f.json }

func (f *hashFormat) record(b []byte, r *tasks.Result) []byte {
	f.path = r.Entry.AppendPath(f.path[:0])
	if f.json {
		return appendJSONRecord(b, f.path, f.alg.Name, r)
	}
	name := f.path
	escape := !f.null && needsEscape(name, f.alg.BSum)
	if escape {
		b = append(b, '\\')
		name = escapeName(nil, name, f.alg.BSum)
	}
	if f.tag {
		b = append(b, f.alg.Tag...)
		b = append(b, " ("...)
		b = append(b, name...)
		b = append(b, ") = "...)
		b = hex.AppendEncode(b, r.Digest())
	} else {
		b = hex.AppendEncode(b, r.Digest())
		b = append(b, "  "...)
		b = append(b, name...)
	}
	if f.null {
		return append(b, 0)
	}
	return append(b, '\n')
}

// needsEscape reports whether a name must be escaped in a checksum line: coreutils
// escapes '\\', LF and CR and marks the line with a leading '\\'; b3sum escapes
// only '\\' and LF, and its --check rejects "\r".
func needsEscape(name []byte, bsum bool) bool {
	for _, c := range name {
		if c == '\\' || c == '\n' || (c == '\r' && !bsum) {
			return true
		}
	}
	return false
}

func escapeName(b, name []byte, bsum bool) []byte {
	for _, c := range name {
		switch {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r' && !bsum:
			b = append(b, '\\', 'r')
		default:
			b = append(b, c)
		}
	}
	return b
}

// unescapeName reverses escapeName; ok is false for an invalid escape.
func unescapeName(s []byte) (out []byte, ok bool) {
	out = make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		i++
		if i == len(s) {
			return nil, false
		}
		switch s[i] {
		case '\\':
			out = append(out, '\\')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		default:
			return nil, false
		}
	}
	return out, true
}

// appendJSONRecord writes one JSON Lines record. encoding/json would replace
// invalid UTF-8 in names with U+FFFD; such a name gets "path" with the
// replacement (for display) and "path_b64" with its exact bytes (standard base64).
func appendJSONRecord(b, path []byte, alg string, r *tasks.Result) []byte {
	b = append(b, '{')
	b = appendJSONName(b, "path", path)
	if r.Status == tasks.OK || r.Status == tasks.Changed {
		b = append(b, `,"size":`...)
		b = strconv.AppendInt(b, r.Size, 10)
		b = append(b, `,"mtime":`...)
		b = appendJSONTime(b, r.Mtime)
	}
	if alg != "" {
		b = append(b, `,"algorithm":"`...)
		b = append(b, alg...)
		b = append(b, '"')
	}
	if r.Status == tasks.OK && r.SumLen > 0 {
		b = append(b, `,"digest":"`...)
		b = hex.AppendEncode(b, r.Digest())
		b = append(b, '"')
	}
	b = append(b, `,"status":"`...)
	b = append(b, r.Status.String()...)
	b = append(b, '"')
	if r.Err != nil {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, []byte(r.Err.Error()))
	}
	return append(b, "}\n"...)
}

// appendJSONTime appends a file time as a JSON string in RFC 3339 with
// nanoseconds, in UTC. It goes through seconds and nanoseconds, not an int64
// of nanoseconds, which holds only 1677-09-21 to 2262-04-11.
func appendJSONTime(b []byte, ts unix.Timespec) []byte {
	b = append(b, '"')
	b = time.Unix(ts.Unix()).UTC().AppendFormat(b, "2006-01-02T15:04:05.000000000Z")
	return append(b, '"')
}

// appendJSONName appends "key":"…" for a file name, and when the name is not
// valid UTF-8 (which a JSON string cannot carry) also "key_b64" with its exact
// bytes in standard base64.
func appendJSONName(b []byte, key string, name []byte) []byte {
	b = append(b, '"')
	b = append(b, key...)
	b = append(b, `":`...)
	b = appendJSONString(b, name)
	if !utf8.Valid(name) {
		b = append(b, `,"`...)
		b = append(b, key...)
		b = append(b, `_b64":"`...)
		b = base64.StdEncoding.AppendEncode(b, name)
		b = append(b, '"')
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b, s []byte) []byte {
	b = append(b, '"')
	b = appendJSONBody(b, s)
	return append(b, '"')
}

// appendJSONBody appends s escaped for the inside of a JSON string.
func appendJSONBody(b, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// Valid JSON, but not valid JavaScript in older engines.
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

// listFormat prints bare paths for pipelines.
type listFormat struct {
	null bool
}

func (f *listFormat) all() bool { return false }

func (f *listFormat) record(b []byte, r *tasks.Result) []byte {
	b = r.Entry.AppendPath(b)
	if f.null {
		return append(b, 0)
	}
	return append(b, '\n')
}

// metaFormat prints one line per entry that chmod or chown changed (or would
// change, with --dry-run): "mode 0664 -> 0644  PATH", "owner 1000:1000 -> 0:0  PATH".
type metaFormat struct {
	owner bool // chown; otherwise chmod
	json  bool
	null  bool
	path  []byte
}

func (f *metaFormat) all() bool { return f.json }

func (f *metaFormat) appendValue(b []byte, v [2]uint32) []byte {
	if f.owner {
		b = strconv.AppendUint(b, uint64(v[0]), 10)
		b = append(b, ':')
		return strconv.AppendUint(b, uint64(v[1]), 10)
	}
	s := strconv.FormatUint(uint64(v[0]), 8)
	for range 4 - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

func (f *metaFormat) record(b []byte, r *tasks.Result) []byte {
	f.path = r.Entry.AppendPath(f.path[:0])
	if f.json {
		b = append(b, '{')
		b = appendJSONName(b, "path", f.path)
		b = append(b, `,"status":"`...)
		b = append(b, r.Status.String()...)
		b = append(b, '"')
		if r.Status == tasks.OK {
			b = append(b, `,"changed":`...)
			b = strconv.AppendBool(b, r.Modified)
			b = append(b, `,"old":"`...)
			b = f.appendValue(b, r.Old)
			b = append(b, `","new":"`...)
			b = f.appendValue(b, r.New)
			b = append(b, '"')
		}
		if r.Err != nil {
			b = append(b, `,"error":`...)
			b = appendJSONString(b, []byte(r.Err.Error()))
		}
		return append(b, "}\n"...)
	}
	if !r.Modified {
		return b
	}
	if f.owner {
		b = append(b, "owner "...)
	} else {
		b = append(b, "mode "...)
	}
	b = f.appendValue(b, r.Old)
	b = append(b, " -> "...)
	b = f.appendValue(b, r.New)
	b = append(b, "  "...)
	if f.null {
		b = append(b, f.path...)
		return append(b, 0)
	}
	b = appendQuotedName(b, f.path)
	return append(b, '\n')
}
