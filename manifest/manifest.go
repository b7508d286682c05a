// Package manifest reads checksum manifests: the lines pbatch hash writes, and
// those of GNU coreutils (sha256sum and friends: plain, --tag and -z), b3sum,
// xxhsum and OpenSSL (dgst -r and its "SHA2-256(name)= hex" lines), and
// pbatch's JSON Lines records. A Reader streams a manifest one record at a time;
// Append writes a record that a Reader reads back unchanged.
//
// Text lines follow coreutils 9.1 sha256sum --check, checked by experiment:
//   - a line whose first byte is '#' is a comment; an empty line is skipped;
//     any other line that does not parse (a blank one, an indented '#') is
//     malformed.
//   - one trailing CR is removed (CRLF manifests), except on untagged BLAKE3
//     lines: b3sum writes CR in names raw and its --check keeps it.
//   - spaces and tabs before the digest or tag are skipped; a '\' there marks
//     a name escaped with "\\", "\n" and "\r" (anything else is malformed).
//   - "hex  name" and "hex *name" (binary marker) are the standard form; any
//     single space or tab works as the separator. "hex name" with one separator
//     (BSD md5 -r) is accepted too, but the first untagged line decides for the
//     whole manifest: after a standard line a one-separator line is malformed,
//     and after a one-separator line "hex  name" means the name " name".
//   - "TAG (name) = hex": the space before '(' is optional, the name ends at the
//     last ')' of the line, spaces and tabs around '=' are optional, and
//     nothing may follow the digest.
//   - the name is everything after the separator, trailing spaces included.
//
// The algorithm comes from the tag (case-sensitive as in coreutils; OpenSSL 3's
// SHA2-256 and SHA2-512 are accepted too, other tags such as SHA384 give
// ErrUnsupported), or from the digest's length, Options.DefaultAlgorithm
// settling 32 and 64 digits. A line starting with '{' is a pbatch JSON record:
// path_b64 wins over path, and records whose status is not "ok" are skipped.
//
// Stricter than coreutils on purpose: a NUL byte in a text line is malformed
// (coreutils silently truncates the name there). Unlike coreutils, which keeps
// the one-separator decision across all manifests of one run, each Reader
// decides for its own manifest.
//
// In NUL-terminated manifests (sha256sum -z, pbatch -0) names are raw: no CR is
// removed and a leading '\' is malformed. coreutils 9.1 cannot check such
// manifests; everything else is as for text lines.
package manifest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxLine is the longest record Reader accepts, without its terminator; a
// longer one is malformed and skipped, so memory stays bounded.
const maxLine = 1 << 20

// LineReader reads records ended by a delimiter (the last one may lack it),
// holding at most max bytes of one record, so that memory stays bounded
// whatever the input: a longer record is read to its end, reported as too
// long, and reading goes on with the next. Manifests and the path lists read
// from stdin share it.
type LineReader struct {
	br    *bufio.Reader
	delim byte
	max   int
	rec   []byte
}

// NewLineReader returns a LineReader of r for records of at most max bytes.
func NewLineReader(r io.Reader, delim byte, max int) *LineReader {
	return &LineReader{br: bufio.NewReader(r), delim: delim, max: max}
}

// Next returns the next record without its delimiter, valid until the next
// call. For a record longer than max, tooLong is set and rec holds its first
// max bytes (for a message). After the last record err is io.EOF; any other
// error is the reader's.
func (l *LineReader) Next() (rec []byte, tooLong bool, err error) {
	l.rec = l.rec[:0]
	empty := true
	for {
		chunk, err := l.br.ReadSlice(l.delim)
		empty = empty && len(chunk) == 0
		if err == nil {
			chunk = chunk[:len(chunk)-1]
		}
		if room := l.max - len(l.rec); len(chunk) > room {
			tooLong = true
			chunk = chunk[:room]
		}
		l.rec = append(l.rec, chunk...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == nil, err == io.EOF && !empty: // the last record may be unterminated
			return l.rec, tooLong, nil
		}
		return nil, false, err
	}
}

var (
	// ErrMalformed is wrapped by the LineError of a record that does not parse.
	ErrMalformed = errors.New("improperly formatted")
	// ErrUnsupported is wrapped by the LineError of a well-formed record whose
	// algorithm pbatch does not compute (SHA384, BLAKE2b, …).
	ErrUnsupported = errors.New("unsupported algorithm")
	// ErrUnrepresentable is returned by Append for a name its style cannot
	// carry: one containing NUL, or an empty name on an untagged line.
	ErrUnrepresentable = errors.New("name cannot be written in this manifest style")
)

// Entry is one file listed in a manifest.
type Entry struct {
	Line      int    // 1-based record number
	Name      string // unescaped path, as it should be opened
	Algorithm string // pbatch's name: md5 sha1 sha256 sha512 blake3 xxh64 xxh128
	Digest    []byte
	Size      int64     // bytes, -1 when unknown
	Mtime     time.Time // zero when unknown
	HasMeta   bool      // Size and Mtime are known (JSON records)
}

// Options configure a Reader.
type Options struct {
	// DefaultAlgorithm (-a; any case) decides untagged digests whose length
	// two algorithms share: 32 hex digits are md5 unless it is xxh128, 64 are
	// sha256 unless it is blake3. Other lengths, tags and JSON records name
	// their own algorithm.
	DefaultAlgorithm string
	// NullTerminated reads NUL-terminated records with raw names.
	NullTerminated bool
}

// LineError reports a record that is not a usable entry. The Reader goes on
// with the next record.
type LineError struct {
	Line int
	Err  error // wraps ErrMalformed or ErrUnsupported
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// formatError explains why a record is malformed.
type formatError string

func (e formatError) Error() string        { return "improperly formatted: " + string(e) }
func (e formatError) Is(target error) bool { return target == ErrMalformed }

type algorithm struct {
	name string // as pbatch's -a and JSON records spell it
	tag  string // BSD tag written by pbatch and coreutils
	size int    // digest bytes
}

// algorithms are pbatch's (tasks.Algorithms; this package stays free of its
// dependencies). Where two share a size, the first one listed is the default
// for untagged lines.
var algorithms = []algorithm{
	{"md5", "MD5", 16},
	{"sha1", "SHA1", 20},
	{"sha256", "SHA256", 32},
	{"sha512", "SHA512", 64},
	{"blake3", "BLAKE3", 32},
	{"xxh64", "XXH64", 8},
	{"xxh128", "XXH128", 16},
}

// tagAliases are other tools' tags for the same digests: OpenSSL 3 writes
// "SHA2-256(name)= hex".
var tagAliases = map[string]string{"SHA2-256": "sha256", "SHA2-512": "sha512"}

func byName(name string) *algorithm {
	for i := range algorithms {
		if strings.EqualFold(algorithms[i].name, name) {
			return &algorithms[i]
		}
	}
	return nil
}

func byTag(tag string) *algorithm {
	if name, ok := tagAliases[tag]; ok {
		return byName(name)
	}
	for i := range algorithms {
		if algorithms[i].tag == tag { // case-sensitive, as in coreutils
			return &algorithms[i]
		}
	}
	return nil
}

// Reader reads entries from a manifest. It holds at most one record in memory.
type Reader struct {
	lr    *LineReader
	delim byte
	def   *algorithm // nil: none given
	line  int
	err   error // sticky: a read error, a bad option, or io.EOF

	// layout is coreutils' bsd_reversed: set by the first untagged line.
	layout int8
}

const (
	undecided int8 = iota
	standard       // "hex  name", "hex *name"
	reversed       // "hex name"
)

// NewReader returns a Reader of r. An unknown Options.DefaultAlgorithm is
// reported by the first call to Next.
func NewReader(r io.Reader, opt Options) *Reader {
	rd := &Reader{delim: '\n'}
	if opt.NullTerminated {
		rd.delim = 0
	}
	rd.lr = NewLineReader(r, rd.delim, maxLine)
	if opt.DefaultAlgorithm != "" {
		if rd.def = byName(opt.DefaultAlgorithm); rd.def == nil {
			rd.err = fmt.Errorf("unknown algorithm %q", opt.DefaultAlgorithm)
		}
	}
	return rd
}

// Next returns the next entry, skipping comments, empty lines and JSON records
// of files that were not hashed. At the end it returns io.EOF. A record that is
// not a usable entry gives a *LineError, after which Next may be called again;
// any other error is final.
func (r *Reader) Next() (Entry, error) {
	for r.err == nil {
		rec, tooLong, err := r.lr.Next()
		if err != nil {
			r.err = err
			break
		}
		r.line++
		var e Entry
		ok := false
		if tooLong {
			err = formatError(fmt.Sprintf("longer than %d bytes", maxLine))
		} else {
			e, ok, err = r.parse(rec)
		}
		if err != nil {
			return Entry{}, &LineError{Line: r.line, Err: err}
		}
		if ok {
			e.Line = r.line
			return e, nil
		}
	}
	return Entry{}, r.err
}

func isWhite(c byte) bool { return c == ' ' || c == '\t' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// isTagByte reports whether c may be part of a tag: "SHA256", "SHA2-256",
// "BLAKE2b-256", "XXH3_64"... A tag starts with an upper-case letter and is
// not all hex digits, so it cannot be mistaken for an untagged digest.
func isTagByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// parse reads one record. ok is false for a record that is no entry.
func (r *Reader) parse(rec []byte) (e Entry, ok bool, err error) {
	null := r.delim == 0
	if !null && bytes.IndexByte(rec, 0) >= 0 {
		return e, false, formatError("NUL byte in line")
	}
	if len(rec) > 0 {
		switch rec[0] {
		case '#':
			return e, false, nil
		case '{':
			return parseJSON(rec)
		}
	}
	raw := rec
	if !null {
		rec = bytes.TrimSuffix(rec, []byte{'\r'})
	}
	if len(rec) == 0 {
		return e, false, nil
	}
	i := 0
	for i < len(rec) && isWhite(rec[i]) {
		i++
	}
	escaped := i < len(rec) && rec[i] == '\\'
	if escaped {
		if null {
			return e, false, formatError(`escaped name in a NUL-terminated record`)
		}
		i++
	}
	j := i
	for j < len(rec) && isTagByte(rec[j]) {
		j++
	}
	if j > i && 'A' <= rec[i] && rec[i] <= 'Z' && bytes.ContainsFunc(rec[i:j], func(c rune) bool { return !isHex(byte(c)) }) {
		e, err = parseTagged(string(rec[i:j]), rec[j:], escaped)
		return e, err == nil, err
	}
	e, err = r.parseUntagged(rec[i:], raw[i:], escaped)
	return e, err == nil, err
}

// parseTagged reads the rest of "TAG (name) = hex" after the tag.
func parseTagged(tag string, s []byte, escaped bool) (Entry, error) {
	s = bytes.TrimPrefix(s, []byte{' '})
	if len(s) == 0 || s[0] != '(' {
		return Entry{}, formatError(`no digest, or no "(" after the tag`)
	}
	s = s[1:]
	k := bytes.LastIndexByte(s, ')')
	if k < 0 {
		return Entry{}, formatError(`no ")" after the name`)
	}
	name, s := s[:k], trimWhite(s[k+1:])
	if len(s) == 0 || s[0] != '=' {
		return Entry{}, formatError(`no "=" before the digest`)
	}
	digest, err := decodeHex(trimWhite(s[1:]))
	if err != nil {
		return Entry{}, err
	}
	if escaped {
		if name, err = unescape(name); err != nil {
			return Entry{}, err
		}
	}
	alg := byTag(tag)
	if alg == nil {
		return Entry{}, fmt.Errorf("%w %s", ErrUnsupported, tag)
	}
	if len(digest) != alg.size {
		return Entry{}, formatError(fmt.Sprintf("%d-digit digest for %s", 2*len(digest), tag))
	}
	return newEntry(name, alg, digest), nil
}

// parseUntagged reads "hex  name" starting at the digest; raw is s with the
// trailing CR that was removed from it, if any.
func (r *Reader) parseUntagged(s, raw []byte, escaped bool) (Entry, error) {
	j := 0
	for j < len(s) && isHex(s[j]) {
		j++
	}
	if j == 0 {
		return Entry{}, formatError("no digest or tag")
	}
	if j == len(s) || !isWhite(s[j]) {
		return Entry{}, formatError("no space after the digest")
	}
	digest, err := decodeHex(s[:j])
	if err != nil {
		return Entry{}, err
	}
	alg := r.bySize(len(digest))
	if alg == nil {
		return Entry{}, formatError(fmt.Sprintf("%d-digit digest matches no algorithm", j))
	}
	name := s[j+1:]
	if alg.name == "blake3" {
		name = raw[j+1:] // b3sum keeps a trailing CR as part of the name
	}
	if len(name) == 0 {
		return Entry{}, formatError("no name")
	}
	// coreutils decides the layout before unescaping, so a line with a bad
	// escape still sets it.
	if len(name) == 1 || name[0] != ' ' && name[0] != '*' {
		if r.layout == standard {
			return Entry{}, formatError("one space between digest and name, after lines with two")
		}
		r.layout = reversed
	} else if r.layout != reversed {
		r.layout = standard
		name = name[1:] // ' ' or the binary marker '*'
	}
	if escaped {
		if name, err = unescape(name); err != nil {
			return Entry{}, err
		}
	}
	return newEntry(name, alg, digest), nil
}

// bySize picks the algorithm of an untagged digest of n bytes.
func (r *Reader) bySize(n int) *algorithm {
	if r.def != nil && r.def.size == n {
		return r.def
	}
	for i := range algorithms {
		if algorithms[i].size == n {
			return &algorithms[i]
		}
	}
	return nil
}

func newEntry(name []byte, alg *algorithm, digest []byte) Entry {
	return Entry{Name: string(name), Algorithm: alg.name, Digest: digest, Size: -1}
}

func trimWhite(s []byte) []byte {
	for len(s) > 0 && isWhite(s[0]) {
		s = s[1:]
	}
	return s
}

// decodeHex decodes a digest of either case; s must be all hex digits.
func decodeHex(s []byte) ([]byte, error) {
	switch {
	case len(s) == 0:
		return nil, formatError("no digest")
	case len(s)%2 != 0:
		return nil, formatError("odd number of hex digits")
	}
	d := make([]byte, len(s)/2)
	if _, err := hex.Decode(d, s); err != nil {
		return nil, formatError("digest is not hexadecimal")
	}
	return d, nil
}

// unescape reverses coreutils' escaping: "\\", "\n" and "\r" only.
func unescape(s []byte) ([]byte, error) {
	if bytes.IndexByte(s, '\\') < 0 {
		return s, nil
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' {
			if i++; i == len(s) {
				return nil, formatError(`name ends with "\"`)
			}
			switch s[i] {
			case '\\':
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			default:
				return nil, formatError(fmt.Sprintf("invalid escape %q in name", s[i-1:i+1]))
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// jsonRecord is a pbatch --format json record.
type jsonRecord struct {
	Path      *string `json:"path"`
	PathB64   *string `json:"path_b64"` // exact bytes of a name that is not UTF-8
	Size      *int64  `json:"size"`
	Mtime     *string `json:"mtime"`
	Algorithm string  `json:"algorithm"`
	Digest    string  `json:"digest"`
	Status    string  `json:"status"`
}

// parseJSON reads a JSON Lines record. Only status "ok" records are entries.
func parseJSON(rec []byte) (Entry, bool, error) {
	if !utf8.Valid(rec) {
		return Entry{}, false, formatError("JSON record is not UTF-8")
	}
	var j jsonRecord
	if err := json.Unmarshal(rec, &j); err != nil {
		return Entry{}, false, formatError("invalid JSON record: " + err.Error())
	}
	switch j.Status {
	case "":
		return Entry{}, false, formatError("JSON record without status")
	case "ok":
	default:
		return Entry{}, false, nil // a file that failed or was skipped
	}
	var name []byte
	switch {
	case j.PathB64 != nil:
		b, err := base64.StdEncoding.Strict().DecodeString(*j.PathB64)
		if err != nil {
			return Entry{}, false, formatError("invalid path_b64 in JSON record")
		}
		name = b
	case j.Path != nil:
		name = []byte(*j.Path)
	default:
		return Entry{}, false, formatError("JSON record without path")
	}
	if bytes.IndexByte(name, 0) >= 0 {
		return Entry{}, false, formatError("NUL byte in path")
	}
	if j.Algorithm == "" {
		return Entry{}, false, formatError("JSON record without algorithm")
	}
	alg := byName(j.Algorithm)
	if alg == nil {
		return Entry{}, false, fmt.Errorf("%w %q", ErrUnsupported, j.Algorithm)
	}
	digest, err := decodeHex([]byte(j.Digest))
	if err != nil {
		return Entry{}, false, err
	}
	if len(digest) != alg.size {
		return Entry{}, false, formatError(fmt.Sprintf("%d-digit digest for %s", len(j.Digest), alg.name))
	}
	e := newEntry(name, alg, digest)
	if (j.Size == nil) != (j.Mtime == nil) {
		return Entry{}, false, formatError("JSON record with only one of size and mtime")
	}
	if j.Size != nil {
		if *j.Size < 0 {
			return Entry{}, false, formatError("negative size in JSON record")
		}
		t, err := parseMtime(*j.Mtime)
		if err != nil {
			return Entry{}, false, formatError("invalid mtime in JSON record")
		}
		e.Size, e.Mtime, e.HasMeta = *j.Size, t, true
	}
	return e, true, nil
}

// parseMtime reads an RFC 3339 time, and the expanded years of ISO 8601 that
// pbatch writes for times outside 0000-9999 ("-0249-10-15T19:33:20Z",
// "11476-08-15T05:20:00Z"; tmpfs keeps such times), which time.Parse rejects.
// Such a year is parsed as the year with the same place in the 400-year
// Gregorian cycle, whose calendar is the same, and moved back by whole cycles.
func parseMtime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err == nil {
		return t, nil
	}
	body, neg := strings.CutPrefix(s, "-")
	i := strings.IndexByte(body, '-')
	if i < 4 || !neg && i == 4 {
		return t, err
	}
	for _, c := range body[:i] {
		if c < '0' || c > '9' {
			return t, err
		}
	}
	y, perr := strconv.ParseInt(body[:i], 10, 64)
	if perr != nil || y > maxYear {
		return t, err
	}
	if neg {
		y = -y
	}
	base := 2000 + (y%400+400)%400
	t, err = time.Parse(time.RFC3339Nano, strconv.FormatInt(base, 10)+body[i:])
	if err != nil {
		return t, err
	}
	return t.AddDate(int(y-base), 0, 0), nil
}

// maxYear bounds expanded years to about what int64 seconds of a file time
// reach (292 billion years).
const maxYear = 292_000_000_000

// Style selects the syntax Append writes.
type Style struct {
	Tag  bool // "SHA256 (name) = hex" (--tag) instead of "hex  name"
	Null bool // NUL-terminated with the name raw (-z), instead of an escaped line
}

// Append appends e as one record in style s, as pbatch hash writes it: names
// with '\', LF or CR are escaped and the line marked with a leading '\'
// (BLAKE3 lines escape only '\' and LF, as b3sum does). Size and Mtime are not
// written.
func Append(b []byte, e Entry, s Style) ([]byte, error) {
	alg := byName(e.Algorithm)
	if alg == nil {
		return b, fmt.Errorf("%w %q", ErrUnsupported, e.Algorithm)
	}
	if len(e.Digest) != alg.size {
		return b, fmt.Errorf("%d-byte digest for %s", len(e.Digest), alg.name)
	}
	if strings.IndexByte(e.Name, 0) >= 0 || !s.Tag && e.Name == "" {
		return b, ErrUnrepresentable
	}
	bsum := alg.name == "blake3"
	escape := !s.Null && strings.ContainsFunc(e.Name, func(c rune) bool { return c == '\\' || c == '\n' || c == '\r' && !bsum })
	if escape {
		b = append(b, '\\')
	}
	if s.Tag {
		b = append(b, alg.tag...)
		b = append(b, " ("...)
		b = appendName(b, e.Name, escape, bsum)
		b = append(b, ") = "...)
		b = hex.AppendEncode(b, e.Digest)
	} else {
		b = hex.AppendEncode(b, e.Digest)
		b = append(b, "  "...)
		b = appendName(b, e.Name, escape, bsum)
	}
	if s.Null {
		return append(b, 0), nil
	}
	return append(b, '\n'), nil
}

// appendName appends name, escaped if escape is set. bsum leaves CR raw.
func appendName(b []byte, name string, escape, bsum bool) []byte {
	if !escape {
		return append(b, name...)
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
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
