package main

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"pbatch/tasks"
)

// streamer is a formatter whose records can be too large to build in memory
// (exec's spooled output): it writes each record through the collector.
type streamer interface {
	stream(c *collector, r *tasks.Result)
}

// execFormat passes each job's captured stdout through as one block, or writes
// JSON records with the exit status and output. Both stream the output from
// its spool, so a job's output is never held whole in memory.
type execFormat struct {
	json bool
	path []byte
	js   jsonStream
}

func (f *execFormat) all() bool { return true }

// record is not used: stream writes exec's records.
func (f *execFormat) record(b []byte, r *tasks.Result) []byte { return b }

func (f *execFormat) stream(c *collector, r *tasks.Result) {
	if !f.json {
		c.writeOutput(r, r.Stdout, nil)
		return
	}
	f.path = r.Entry.AppendPath(f.path[:0])
	b := append(c.line[:0], '{')
	b = appendJSONName(b, "path", f.path)
	b = append(b, `,"status":"`...)
	b = append(b, r.Status.String()...)
	b = append(b, '"')
	if r.Status == tasks.OK || r.Exit != 0 || r.Stdout.Len() > 0 || r.Stderr.Len() > 0 {
		b = append(b, `,"exit":`...)
		b = strconv.AppendInt(b, int64(r.Exit), 10)
		b = append(b, `,"stdout":"`...)
		c.write(b)
		c.writeOutput(r, r.Stdout, &f.js)
		b = append(c.line[:0], `","stderr":"`...)
		c.write(b)
		c.writeOutput(r, r.Stderr, &f.js)
		b = append(c.line[:0], '"')
	}
	if r.Err != nil {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, []byte(r.Err.Error()))
	}
	c.write(append(b, "}\n"...))
}

// writeOutput writes o to stdout, escaped for a JSON string with js.
func (c *collector) writeOutput(r *tasks.Result, o *tasks.Output, js *jsonStream) {
	err := o.Chunks(c.spoolBuf(), func(p []byte) error {
		if js == nil {
			c.writeRaw(p)
			return c.werr
		}
		// In pieces, so that the escaped copy (up to six times the
		// size) stays small.
		for len(p) > 0 && c.werr == nil {
			n := min(len(p), 16<<10)
			c.escaped = js.append(c.escaped[:0], p[:n])
			c.writeRaw(c.escaped)
			p = p[n:]
		}
		return c.werr
	})
	if js != nil {
		c.writeRaw(js.end(c.escaped[:0]))
	}
	if tasks.IsSpoolReadError(err) {
		c.spoolErr(r, err)
	}
}

// writeRaw writes p to stdout like write, leaving c.line alone.
func (c *collector) writeRaw(p []byte) {
	if c.werr != nil {
		return
	}
	if _, err := c.out.Write(p); err != nil {
		c.setErr(err)
	}
}

// spoolBuf is the collector's buffer for reading spooled output back.
func (c *collector) spoolBuf() []byte {
	if c.spool == nil {
		c.spool = make([]byte, 64<<10)
	}
	return c.spool
}

// spoolErr reports output lost in its spool: the file fails.
func (c *collector) spoolErr(r *tasks.Result, err error) {
	c.prog.clear()
	fmt.Fprintf(c.stderr, "pbatch: %s: %s\n", quoteName(r.Entry.Path()), err)
	c.failed++
}

func closeOutputs(r *tasks.Result) {
	r.Stdout.Close()
	r.Stderr.Close()
	r.Stdout, r.Stderr = nil, nil
}

// jsonStream escapes a JSON string body that arrives in pieces: a UTF-8
// sequence cut between two pieces is escaped as if it came whole, so the
// result is the same as appendJSONBody's over the whole.
type jsonStream struct {
	carry [utf8.UTFMax]byte
	n     int // bytes in carry: the start of a sequence cut off
}

func (s *jsonStream) append(b, p []byte) []byte {
	for s.n > 0 && len(p) > 0 {
		k := copy(s.carry[s.n:], p)
		head := s.carry[:s.n+k]
		if !utf8.FullRune(head) {
			s.n += k
			return b
		}
		_, size := utf8.DecodeRune(head)
		b = appendJSONBody(b, head[:size])
		if size < s.n {
			// The carried bytes were no valid sequence: the rest of them
			// start over, p untouched.
			s.n = copy(s.carry[:], s.carry[size:s.n])
			continue
		}
		p = p[size-s.n:]
		s.n = 0
	}
	cut := len(p) - incompleteTail(p)
	b = appendJSONBody(b, p[:cut])
	s.n += copy(s.carry[s.n:], p[cut:])
	return b
}

// end escapes what is still carried: a sequence cut off by the end.
func (s *jsonStream) end(b []byte) []byte {
	for s.n > 0 {
		_, size := utf8.DecodeRune(s.carry[:s.n])
		b = appendJSONBody(b, s.carry[:size])
		s.n = copy(s.carry[:], s.carry[size:s.n])
	}
	return b
}

// incompleteTail is the length of a UTF-8 sequence begun but not finished
// at the end of p.
func incompleteTail(p []byte) int {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(p); i++ {
		c := p[len(p)-i]
		if c < utf8.RuneSelf {
			return 0
		}
		if utf8.RuneStart(c) {
			if utf8.FullRune(p[len(p)-i:]) {
				return 0
			}
			return i
		}
	}
	return 0
}
