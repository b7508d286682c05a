package manifest

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/zeebo/blake3"
	"github.com/zeebo/xxh3"
)

// digestOf computes alg over data independently of the code under test.
func digestOf(alg string, data []byte) []byte {
	var h hash.Hash
	switch alg {
	case "md5":
		h = md5.New()
	case "sha1":
		h = sha1.New()
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	case "blake3":
		h = blake3.New()
	case "xxh64":
		h = xxhash.New()
	case "xxh128":
		s := xxh3.Hash128(data).Bytes()
		return s[:]
	default:
		panic("digestOf: " + alg)
	}
	h.Write(data)
	return h.Sum(nil)
}

// d is the hex digest of a file whose content is its name.
func d(alg, name string) string { return hex.EncodeToString(digestOf(alg, []byte(name))) }

// want is one expected result of Next: an entry whose digest is d(alg, name)
// (the name's own digest unless digest is set), or an error.
type want struct {
	line   int
	alg    string
	name   string
	digest string // hex; empty: d(alg, name)
	size   int64  // JSON records: HasMeta with this size and mtime
	mtime  string // RFC 3339, UTC
	err    error  // ErrMalformed or ErrUnsupported
}

func ok(line int, alg, name string) want { return want{line: line, alg: alg, name: name} }
func bad(line int) want                  { return want{line: line, err: ErrMalformed} }
func unsup(line int) want                { return want{line: line, err: ErrUnsupported} }

var (
	hA   = d("sha256", "a")
	hBC  = d("sha256", "b c")
	hMax = strings.Repeat("x", maxLine+1)
)

// readerTests are manifests and what Next returns for them. gnu marks the
// sha256 text manifests that TestCoreutilsAgrees also feeds to sha256sum -c.
var readerTests = []struct {
	name string
	opt  Options
	in   string
	want []want
	gnu  bool
}{
	{name: "two spaces", in: hA + "  a\n", want: []want{ok(1, "sha256", "a")}, gnu: true},
	{name: "binary marker", in: hA + " *a\n", want: []want{ok(1, "sha256", "a")}, gnu: true},
	{name: "tab separator", in: hA + "\ta\n" + hA + "\t*a\n", want: []want{ok(1, "sha256", "a"), {line: 2, alg: "sha256", name: "*a", digest: hA}}, gnu: true},
	{name: "tab then binary marker", in: hA + "\t*a\n", want: []want{ok(1, "sha256", "a")}, gnu: true},
	{name: "no final newline", in: hA + "  a", want: []want{ok(1, "sha256", "a")}, gnu: true},
	{name: "upper-case digest", in: strings.ToUpper(hA) + "  a\n", want: []want{ok(1, "sha256", "a")}, gnu: true},
	{name: "leading blanks", in: " \t" + hA + "  a\n", want: []want{ok(1, "sha256", "a")}, gnu: true},
	{name: "trailing blanks are part of the name", in: hA + "  a \n" + hA + "  a\t\n",
		want: []want{{line: 1, alg: "sha256", name: "a ", digest: hA}, {line: 2, alg: "sha256", name: "a\t", digest: hA}}, gnu: true},
	{name: "name starting with star and space", in: d("sha256", "*s") + "  *s\n" + d("sha256", " s") + "   s\n",
		want: []want{ok(1, "sha256", "*s"), ok(2, "sha256", " s")}, gnu: true},
	{name: "one space", in: hA + " a\n" + hBC + " b c\n", want: []want{ok(1, "sha256", "a"), ok(2, "sha256", "b c")}, gnu: true},
	{name: "one space, then two", in: hA + " a\n" + hBC + "  b c\n" + hA + " *a\n",
		want: []want{ok(1, "sha256", "a"), {line: 2, alg: "sha256", name: " b c", digest: hBC}, {line: 3, alg: "sha256", name: "*a", digest: hA}}, gnu: true},
	{name: "two spaces, then one", in: hBC + "  b c\n" + hA + " a\n" + hA + "  a\n",
		want: []want{ok(1, "sha256", "b c"), bad(2), ok(3, "sha256", "a")}, gnu: true},
	{name: "one space with a bad escape still decides", in: `\` + hA + ` a\x` + "\n" + hBC + "  b c\n",
		want: []want{bad(1), {line: 2, alg: "sha256", name: " b c", digest: hBC}}, gnu: true},
	{name: "one-byte name is one space", in: hA + "  a\n" + hA + "  \n", want: []want{ok(1, "sha256", "a"), bad(2)}, gnu: true},
	{name: "name of one space", in: hA + "  \n", want: []want{{line: 1, alg: "sha256", name: " ", digest: hA}}, gnu: true},
	{name: "name of one star", in: hA + " *\n", want: []want{{line: 1, alg: "sha256", name: "*", digest: hA}}, gnu: true},
	{name: "comment", in: "# sums\n" + hA + "  a\n", want: []want{ok(2, "sha256", "a")}, gnu: true},
	{name: "indented comment", in: " # sums\n" + hA + "  a\n", want: []want{bad(1), ok(2, "sha256", "a")}, gnu: true},
	{name: "escaped comment", in: `\# sums` + "\n", want: []want{bad(1)}, gnu: true},
	{name: "empty lines", in: "\n\r\n" + hA + "  a\n\n", want: []want{ok(3, "sha256", "a")}, gnu: true},
	{name: "blank line", in: "  \n\t\r\n" + hA + "  a\n", want: []want{bad(1), bad(2), ok(3, "sha256", "a")}, gnu: true},
	{name: "CRLF", in: hA + "  a\r\n" + "#x\r\n" + hBC + "  b c\r\n", want: []want{ok(1, "sha256", "a"), ok(3, "sha256", "b c")}, gnu: true},
	{name: "only one CR is removed", in: d("sha256", "a\r") + "  a\r\r\n", want: []want{ok(1, "sha256", "a\r")}, gnu: true},
	{name: "CR inside a name", in: d("sha256", "a\rb") + "  a\rb\n", want: []want{ok(1, "sha256", "a\rb")}, gnu: true},
	{name: "escaped names", in: `\` + d("sha256", "a\\b\nc\rd") + `  a\\b\nc\rd` + "\n" + `\` + hA + "  a\n",
		want: []want{ok(1, "sha256", "a\\b\nc\rd"), ok(2, "sha256", "a")}, gnu: true},
	{name: "unescaped backslash", in: d("sha256", `x\y`) + `  x\y` + "\n", want: []want{ok(1, "sha256", `x\y`)}, gnu: true},
	{name: "invalid escapes", in: `\` + hA + `  a\x` + "\n" + `\` + hA + `  a\` + "\n" + `\` + hA + `  a\t` + "\n" + `\\` + hA + "  a\n",
		want: []want{bad(1), bad(2), bad(3), bad(4)}, gnu: true},
	{name: "NUL in line", in: hA + "  a\x00b\n" + hA[:10] + "\x00" + hA[11:] + "  a\n", want: []want{bad(1), bad(2)}},
	{name: "no name", in: hA + " \n" + hA + "\n" + hA + "x  a\n", want: []want{bad(1), bad(2), bad(3)}, gnu: true},
	{name: "short digest", in: hA[:62] + "  a\n" + hA[:63] + "  a\n", want: []want{bad(1), bad(2)}, gnu: true},
	{name: "long digest", in: hA + "00  a\n", want: []want{bad(1)}, gnu: true},
	{name: "non-hex digest", in: "g" + hA[1:] + "  a\n", want: []want{bad(1)}, gnu: true},
	{name: "line too long", in: hMax + "\n" + hA + "  a\n" + hMax, want: []want{bad(1), ok(2, "sha256", "a"), bad(3)}},

	{name: "tag", in: "SHA256 (a) = " + hA + "\n", want: []want{ok(1, "sha256", "a")}, gnu: true},
	{name: "tag, OpenSSL spacing", in: "SHA256(a)= " + hA + "\n", want: []want{ok(1, "sha256", "a")}, gnu: true},
	{name: "tag, tabs and no spaces", in: "SHA256 (a)\t=\t" + hA + "\n" + "SHA256 (a)=" + hA + "\n", want: []want{ok(1, "sha256", "a"), ok(2, "sha256", "a")}, gnu: true},
	{name: "tag, upper-case digest", in: "SHA256 (a) = " + strings.ToUpper(hA) + "\r\n", want: []want{ok(1, "sha256", "a")}, gnu: true},
	{name: "tag, indented and escaped", in: ` \SHA256 (a\\b\n) = ` + d("sha256", "a\\b\n") + "\n", want: []want{ok(1, "sha256", "a\\b\n")}, gnu: true},
	{name: "tag, name ends at the last paren", in: "SHA256 (x) = y)z (w) = " + d("sha256", "x) = y)z (w") + "\n", want: []want{ok(1, "sha256", "x) = y)z (w")}, gnu: true},
	{name: "tag, empty name", in: "SHA256 () = " + hA + "\n", want: []want{{line: 1, alg: "sha256", name: "", digest: hA}}, gnu: true},
	{name: "tag, malformed", in: "SHA256 (a) = " + hA + " \n" + "SHA256  (a) = " + hA + "\n" + "SHA256 (a = " + hA + "\n" +
		"SHA256 (a) " + hA + "\n" + "SHA256 (a) = " + hA + ")\n" + "SHA256 (a) = \n" + "SHA256 a) = " + hA + "\n" + "sha256 (a) = " + hA + "\n" +
		`\SHA256 (a\x) = ` + hA + "\n",
		want: []want{bad(1), bad(2), bad(3), bad(4), bad(5), bad(6), bad(7), bad(8), bad(9)}, gnu: true},
	{name: "tag, wrong digest length", in: "SHA256 (a) = " + d("sha1", "a") + "\n" + "MD5 (a) = " + d("xxh64", "a") + "\n", want: []want{bad(1), bad(2)}, gnu: true},
	{name: "tag, unsupported", in: "SHA384 (a) = " + strings.Repeat("0", 96) + "\n" + "BLAKE2b (a) = " + strings.Repeat("0", 128) + "\n" + "SHA224(a)= 00\n",
		want: []want{unsup(1), unsup(2), unsup(3)}, gnu: true},
	{name: "tags of every algorithm", in: "MD5 (a) = " + d("md5", "a") + "\nSHA1 (a) = " + d("sha1", "a") + "\nSHA512 (a) = " + d("sha512", "a") +
		"\nBLAKE3 (a) = " + d("blake3", "a") + "\nXXH64 (a) = " + d("xxh64", "a") + "\nXXH128 (a) = " + d("xxh128", "a") +
		"\nSHA2-256(a)= " + d("sha256", "a") + "\nSHA2-512(a)= " + d("sha512", "a") + "\n",
		want: []want{ok(1, "md5", "a"), ok(2, "sha1", "a"), ok(3, "sha512", "a"), ok(4, "blake3", "a"), ok(5, "xxh64", "a"), ok(6, "xxh128", "a"), ok(7, "sha256", "a"), ok(8, "sha512", "a")}},
	{name: "tags decide, not -a", opt: Options{DefaultAlgorithm: "blake3"}, in: "SHA256 (a) = " + hA + "\nBLAKE3 (a) = " + d("blake3", "a") + "\n",
		want: []want{ok(1, "sha256", "a"), ok(2, "blake3", "a")}},

	{name: "digest lengths", in: d("xxh64", "a") + "  a\n" + d("md5", "a") + "  a\n" + d("sha1", "a") + "  a\n" + d("sha512", "a") + "  a\n" + strings.Repeat("0", 48) + "  a\n",
		want: []want{ok(1, "xxh64", "a"), ok(2, "md5", "a"), ok(3, "sha1", "a"), ok(4, "sha512", "a"), bad(5)}},
	{name: "-a xxh128", opt: Options{DefaultAlgorithm: "XXH128"}, in: d("xxh128", "a") + "  a\n" + hA + "  a\n",
		want: []want{ok(1, "xxh128", "a"), ok(2, "sha256", "a")}},
	{name: "-a sha1 does not decide other lengths", opt: Options{DefaultAlgorithm: "sha1"}, in: d("md5", "a") + "  a\n", want: []want{ok(1, "md5", "a")}},
	{name: "b3sum", opt: Options{DefaultAlgorithm: "blake3"}, in: d("blake3", "a") + "  a\n" + `\` + d("blake3", "x\\y\nz") + `  x\\y\nz` + "\n",
		want: []want{ok(1, "blake3", "a"), ok(2, "blake3", "x\\y\nz")}},
	{name: "b3sum keeps CR", opt: Options{DefaultAlgorithm: "blake3"}, in: d("blake3", "c\r") + "  c\r\n" + "BLAKE3 (a) = " + d("blake3", "a") + "\r\n",
		want: []want{ok(1, "blake3", "c\r"), ok(2, "blake3", "a")}},
	{name: "b3sum, one-space line ending in CR", opt: Options{DefaultAlgorithm: "blake3"}, in: d("blake3", "\r") + " \r\n",
		want: []want{ok(1, "blake3", "\r")}},

	{name: "NUL-terminated", opt: Options{NullTerminated: true},
		in:   d("sha256", "n\nl") + "  n\nl\x00" + d("sha256", `x\y`) + `  x\y` + "\x00" + d("sha256", "c\r") + "  c\r\x00\x00#x\x00SHA256 (t\n) = " + d("sha256", "t\n") + "\x00",
		want: []want{ok(1, "sha256", "n\nl"), ok(2, "sha256", `x\y`), ok(3, "sha256", "c\r"), ok(6, "sha256", "t\n")}},
	{name: "NUL-terminated, no escapes", opt: Options{NullTerminated: true}, in: `\` + hA + "  a\x00" + hA + "  a", want: []want{bad(1), ok(2, "sha256", "a")}},

	{name: "JSON", in: `{"path":"a","size":1,"mtime":"2024-05-06T07:08:09.123456789Z","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n",
		want: []want{{line: 1, alg: "sha256", name: "a", size: 1, mtime: "2024-05-06T07:08:09.123456789Z"}}},
	{name: "JSON, times an int64 of ns cannot hold", in: `{"path":"a","size":1,"mtime":"2400-01-01T00:00:00.5Z","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"b","size":2,"mtime":"1900-01-01T00:00:00+01:00","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n",
		want: []want{{line: 1, alg: "sha256", name: "a", digest: hA, size: 1, mtime: "2400-01-01T00:00:00.5Z"},
			{line: 2, alg: "sha256", name: "b", digest: hA, size: 2, mtime: "1899-12-31T23:00:00Z"}}},
	{name: "JSON, years beyond 0000-9999 (ISO 8601 expanded)", in: `{"path":"a","size":1,"mtime":"11476-08-15T05:20:00.000000001Z","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"b","size":2,"mtime":"-0249-10-15T19:33:20Z","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"c","size":3,"mtime":"10000-02-29T00:00:00+02:00","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n",
		want: []want{{line: 1, alg: "sha256", name: "a", digest: hA, size: 1, mtime: "11476-08-15T05:20:00.000000001Z"},
			{line: 2, alg: "sha256", name: "b", digest: hA, size: 2, mtime: "-0249-10-15T19:33:20Z"},
			{line: 3, alg: "sha256", name: "c", digest: hA, size: 3, mtime: "10000-02-28T22:00:00Z"}}},
	{name: "JSON, path_b64 wins", in: `{"path":"b\ufffd","path_b64":"Yv8=","algorithm":"md5","digest":"` + d("md5", "b\xff") + `","status":"ok"}` + "\r\n",
		want: []want{ok(1, "md5", "b\xff")}},
	{name: "JSON, files not hashed", in: `{"path":"x","algorithm":"sha256","status":"failed","error":"boom"}` + "\n" +
		`{"path":"y","size":1,"mtime":"2024-05-06T07:08:09.000000000Z","algorithm":"sha256","status":"changed"}` + "\n" + hA + "  a\n",
		want: []want{ok(3, "sha256", "a")}},
	{name: "JSON, malformed", in: `{"path":"a","algorithm":"sha256","digest":"` + hA + `"}` + "\n" +
		`{"algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","algorithm":"sha1","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","algorithm":"sha256","digest":"` + hA + `","status":"ok"` + "\n" +
		`{"path":"a\u0000","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","path_b64":"!!","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","size":1,"algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","size":1,"mtime":"yesterday","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","size":-1,"mtime":"2024-05-06T07:08:09Z","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","algorithm":"sha256","digest":"` + hA + `","status":"ok"} {}` + "\n" +
		`{"path":"a\xff","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","size":1,"mtime":"10100-02-29T00:00:00Z","algorithm":"sha256","digest":"` + hA + `","status":"ok"}` + "\n" +
		`{"path":"a","algorithm":"sha384","digest":"00","status":"ok"}` + "\n",
		want: []want{bad(1), bad(2), bad(3), bad(4), bad(5), bad(6), bad(7), bad(8), bad(9), bad(10), bad(11), bad(12), bad(13), unsup(14)}},
}

// result renders what Next returned, for comparison with a want.
func result(e Entry, err error) string {
	switch {
	case errors.Is(err, ErrMalformed):
		return fmt.Sprintf("line %d: malformed", err.(*LineError).Line)
	case errors.Is(err, ErrUnsupported):
		return fmt.Sprintf("line %d: unsupported", err.(*LineError).Line)
	case err != nil:
		return "error " + err.Error()
	}
	meta := "no meta"
	if e.HasMeta {
		meta = fmt.Sprintf("size %d mtime %s", e.Size, e.Mtime.UTC().Format(time.RFC3339Nano))
	} else if e.Size != -1 || !e.Mtime.IsZero() {
		meta = fmt.Sprintf("unknown size %d mtime %v", e.Size, e.Mtime)
	}
	return fmt.Sprintf("line %d: %s %q %x %s", e.Line, e.Algorithm, e.Name, e.Digest, meta)
}

func (w want) String() string {
	switch w.err {
	case ErrMalformed:
		return fmt.Sprintf("line %d: malformed", w.line)
	case ErrUnsupported:
		return fmt.Sprintf("line %d: unsupported", w.line)
	}
	digest := w.digest
	if digest == "" {
		digest = d(w.alg, w.name)
	}
	meta := "no meta"
	if w.size != 0 || w.mtime != "" {
		meta = fmt.Sprintf("size %d mtime %s", w.size, w.mtime)
	}
	return fmt.Sprintf("line %d: %s %q %s %s", w.line, w.alg, w.name, digest, meta)
}

// readAll returns every result of Next up to io.EOF, rendered.
func readAll(t *testing.T, in string, opt Options) []string {
	t.Helper()
	r := NewReader(strings.NewReader(in), opt)
	var got []string
	for range strings.Count(in, "\n") + strings.Count(in, "\x00") + 2 {
		e, err := r.Next()
		if err == io.EOF {
			return got
		}
		var le *LineError
		if err != nil && !errors.As(err, &le) {
			t.Fatalf("got error %v, want only line errors", err)
		}
		got = append(got, result(e, err))
	}
	t.Fatalf("Next did not reach io.EOF; got %q so far", got)
	return nil
}

func TestReader(t *testing.T) {
	for _, tt := range readerTests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, tt.in, tt.opt)
			var want []string
			for _, w := range tt.want {
				want = append(want, w.String())
			}
			if !slices.Equal(got, want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
		})
	}
}

func TestReaderBadOption(t *testing.T) {
	r := NewReader(strings.NewReader(hA+"  a\n"), Options{DefaultAlgorithm: "crc32"})
	for range 2 {
		_, err := r.Next()
		var le *LineError
		if err == nil || err == io.EOF || errors.As(err, &le) {
			t.Fatalf("got %v, want an error for the unknown algorithm", err)
		}
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(io.MultiReader(strings.NewReader(hA+"  a\n"), errReader{boom}), Options{})
	if e, err := r.Next(); err != nil || e.Name != "a" {
		t.Fatalf("got %q, %v; want entry a", e.Name, err)
	}
	for range 2 {
		if _, err := r.Next(); err != boom {
			t.Fatalf("got %v, want %v", err, boom)
		}
	}
}

func TestLineErrorMessage(t *testing.T) {
	_, err := NewReader(strings.NewReader(`\`+hA+`  a\x`), Options{}).Next()
	if got, want := fmt.Sprint(err), `line 1: improperly formatted: invalid escape "\\x" in name`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestCoreutilsAgrees feeds the gnu manifests of readerTests to sha256sum -c
// and checks that it finds the same malformed lines and verifies as many
// files as there are entries naming a file whose content is that name.
func TestCoreutilsAgrees(t *testing.T) {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum not installed")
	}
	warnRE := regexp.MustCompile(`: (\d+): improperly formatted`)
	for _, tt := range readerTests {
		if !tt.gnu {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			dir, mdir := t.TempDir(), t.TempDir()
			for _, w := range tt.want {
				if w.err == nil && w.name != "" && !strings.Contains(w.name, "/") {
					if err := os.WriteFile(filepath.Join(dir, w.name), []byte(w.name), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			m := filepath.Join(mdir, "m")
			if err := os.WriteFile(m, []byte(tt.in), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sha256sum", "-c", "--warn", m)
			cmd.Dir = dir
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.Run() // exits 1 for any failure; the output tells
			var gnuBad []int
			for _, m := range warnRE.FindAllStringSubmatch(stderr.String(), -1) {
				n, _ := strconv.Atoi(m[1])
				gnuBad = append(gnuBad, n)
			}
			gnuOK := strings.Count(stdout.String(), ": OK\n")

			var ourBad []int
			ourOK := 0
			r := NewReader(strings.NewReader(tt.in), tt.opt)
			for {
				e, err := r.Next()
				if err == io.EOF {
					break
				}
				if le := (*LineError)(nil); errors.As(err, &le) {
					ourBad = append(ourBad, le.Line)
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if content, err := os.ReadFile(filepath.Join(dir, e.Name)); err == nil && e.Name != "" && bytes.Equal(digestOf("sha256", content), e.Digest) {
					ourOK++
				}
			}
			if !slices.Equal(ourBad, gnuBad) {
				t.Errorf("malformed lines: got %v, want %v as sha256sum -c", ourBad, gnuBad)
			}
			if ourOK != gnuOK {
				t.Errorf("verified: got %d, want %d as sha256sum -c\n%s%s", ourOK, gnuOK, stdout.String(), stderr.String())
			}
		})
	}
}

// hostileNames are file names that break naive manifest parsers.
var hostileNames = []string{
	"plain.txt",
	"with space",
	"  two leading spaces",
	"trailing space ",
	"-leading-dash",
	"--",
	`back\slash`,
	`\leading-backslash`,
	`trailing-backslash\`,
	`\\`,
	`\n`,
	"new\nline",
	"\nleading-newline",
	"trailing-newline\n",
	"carriage\rreturn",
	"trailing-cr\r",
	"\r",
	"tab\tname",
	"bad\xffutf8",
	"\xfe\xfd",
	"rtl\u202egnp.exe",
	"é unicode",
	strings.Repeat("n", 251) + ".txt",
	"*star",
	"* star space",
	" *space star",
	"tag (paren) = name",
	"SHA256 (x) = " + strings.Repeat("0", 64),
	"end paren)",
	"(",
	")",
	") = ",
	"#hash",
	"{brace",
	strings.Repeat("a", 64),
}

// tools lists the checksum writers compared against; skip drops names a tool
// cannot write faithfully.
var tools = []struct {
	args   []string // before the names
	alg    string
	null   bool
	prefix string // prepended to the names on the command line, and so in the output
	skip   func(string) bool
}{
	{args: []string{"sha256sum", "--"}, alg: "sha256"},
	{args: []string{"md5sum", "--"}, alg: "md5"},
	{args: []string{"sha1sum", "--"}, alg: "sha1"},
	{args: []string{"sha512sum", "--"}, alg: "sha512"},
	{args: []string{"sha256sum", "-b", "--"}, alg: "sha256"},
	{args: []string{"sha256sum", "--tag", "--"}, alg: "sha256"},
	{args: []string{"md5sum", "--tag", "--"}, alg: "md5"},
	{args: []string{"sha256sum", "-z", "--"}, alg: "sha256", null: true},
	{args: []string{"sha512sum", "-z", "--tag", "--"}, alg: "sha512", null: true},
	{args: []string{"cksum", "-a", "sha256", "--"}, alg: "sha256"},
	{args: []string{"cksum", "-a", "sha1", "--untagged", "--"}, alg: "sha1"},
	// b3sum writes names that are not UTF-8 with U+FFFD in place of bad bytes.
	{args: []string{"b3sum", "--"}, alg: "blake3", skip: func(n string) bool { return !utf8.ValidString(n) }},
	// OpenSSL and xxhsum 0.8.1 escape nothing: LF breaks the line and a
	// trailing CR reads as a CRLF line end.
	{args: []string{"openssl", "dgst", "-sha256", "-r"}, alg: "sha256", prefix: "./", skip: rawLines},
	{args: []string{"openssl", "sha256"}, alg: "sha256", prefix: "./", skip: rawLines},
	{args: []string{"openssl", "md5"}, alg: "md5", prefix: "./", skip: rawLines},
	{args: []string{"openssl", "sha1"}, alg: "sha1", prefix: "./", skip: rawLines},
	{args: []string{"openssl", "dgst", "-sha512"}, alg: "sha512", prefix: "./", skip: rawLines},
	{args: []string{"xxhsum", "-H64", "--"}, alg: "xxh64", skip: rawLines},
	{args: []string{"xxhsum", "-H128", "--"}, alg: "xxh128", skip: rawLines},
	{args: []string{"xxhsum", "-H128", "--tag", "--"}, alg: "xxh128", skip: rawLines},
}

func rawLines(n string) bool { return strings.Contains(n, "\n") || strings.HasSuffix(n, "\r") }

// TestRealTools parses manifests written by the real tools over a tree of
// hostile names and checks every entry against the file's actual digest.
func TestRealTools(t *testing.T) {
	dir := t.TempDir()
	for _, n := range hostileNames {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("content of "+n), 0o644); err != nil {
			t.Fatalf("%q: %v", n, err)
		}
	}
	for _, tool := range tools {
		t.Run(strings.Join(tool.args, " "), func(t *testing.T) {
			if _, err := exec.LookPath(tool.args[0]); err != nil {
				t.Skipf("%s not installed", tool.args[0])
			}
			want := map[string][]byte{}
			args := slices.Clone(tool.args)
			for _, n := range hostileNames {
				if tool.skip == nil || !tool.skip(n) {
					want[tool.prefix+n] = digestOf(tool.alg, []byte("content of "+n))
					args = append(args, tool.prefix+n)
				}
			}
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir = dir
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %s", err, stderr.String())
			}
			r := NewReader(bytes.NewReader(out), Options{DefaultAlgorithm: tool.alg, NullTerminated: tool.null})
			seen := map[string]bool{}
			for {
				e, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("got %v, want no error; manifest:\n%q", err, out)
				}
				digest, ok := want[e.Name]
				switch {
				case !ok:
					t.Errorf("line %d: got unexpected name %q", e.Line, e.Name)
				case seen[e.Name]:
					t.Errorf("line %d: got name %q twice", e.Line, e.Name)
				case e.Algorithm != tool.alg || !bytes.Equal(e.Digest, digest):
					t.Errorf("line %d: %q: got %s %x, want %s %x", e.Line, e.Name, e.Algorithm, e.Digest, tool.alg, digest)
				}
				seen[e.Name] = true
			}
			for n := range want {
				if !seen[n] {
					t.Errorf("got no entry for %q", n)
				}
			}
		})
	}
}

// appendJSON writes e as pbatch's --format json does (fields it reads).
func appendJSON(b []byte, e Entry) []byte {
	rec := map[string]any{"path": e.Name, "algorithm": e.Algorithm, "digest": hex.EncodeToString(e.Digest), "status": "ok"}
	if !utf8.ValidString(e.Name) {
		rec["path_b64"] = base64.StdEncoding.EncodeToString([]byte(e.Name))
	}
	if e.HasMeta {
		rec["size"] = e.Size
		rec["mtime"] = e.Mtime.UTC().Format("2006-01-02T15:04:05.000000000Z")
	}
	j, err := json.Marshal(rec)
	if err != nil {
		panic(err)
	}
	return append(b, j...)
}

func TestAppend(t *testing.T) {
	digest := digestOf("sha256", []byte("x"))
	b3 := digestOf("blake3", []byte("x"))
	h, h3 := hex.EncodeToString(digest), hex.EncodeToString(b3)
	for _, tt := range []struct {
		e     Entry
		style Style
		want  string
		err   error
	}{
		{Entry{Name: "a", Algorithm: "sha256", Digest: digest}, Style{}, h + "  a\n", nil},
		{Entry{Name: "a\\b\nc\rd", Algorithm: "sha256", Digest: digest}, Style{}, `\` + h + `  a\\b\nc\rd` + "\n", nil},
		{Entry{Name: "a\\b\nc\rd", Algorithm: "sha256", Digest: digest}, Style{Tag: true}, `\SHA256 (a\\b\nc\rd) = ` + h + "\n", nil},
		{Entry{Name: "a\\b\nc\rd", Algorithm: "blake3", Digest: b3}, Style{}, `\` + h3 + `  a\\b\nc` + "\rd\n", nil},
		{Entry{Name: "c\r", Algorithm: "blake3", Digest: b3}, Style{}, h3 + "  c\r\n", nil},
		{Entry{Name: "a\\b\nc", Algorithm: "sha256", Digest: digest}, Style{Null: true}, h + "  a\\b\nc\x00", nil},
		{Entry{Name: "a", Algorithm: "sha256", Digest: digest}, Style{Tag: true, Null: true}, "SHA256 (a) = " + h + "\x00", nil},
		{Entry{Name: "", Algorithm: "sha256", Digest: digest}, Style{Tag: true}, "SHA256 () = " + h + "\n", nil},
		{Entry{Name: "", Algorithm: "sha256", Digest: digest}, Style{}, "", ErrUnrepresentable},
		{Entry{Name: "a\x00b", Algorithm: "sha256", Digest: digest}, Style{Null: true}, "", ErrUnrepresentable},
		{Entry{Name: "a", Algorithm: "sha384", Digest: digest}, Style{}, "", ErrUnsupported},
	} {
		got, err := Append(nil, tt.e, tt.style)
		if string(got) != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("Append(%q, %s, %+v) = %q, %v; want %q, %v", tt.e.Name, tt.e.Algorithm, tt.style, got, err, tt.want, tt.err)
		}
	}
}

func TestParseMtime(t *testing.T) {
	for _, tc := range []struct {
		in        string
		sec, nsec int64 // as stat reports it (date -u -d TIME +%s)
		ok        bool
	}{
		{"2024-05-06T07:08:09.5Z", 1714979289, 5e8, true},
		{"2400-01-01T00:00:00Z", 13569465600, 0, true},
		{"1900-01-01T00:00:00Z", -2208988800, 0, true},
		{"11476-08-15T05:20:00.000000001Z", 300000000000, 1, true},
		{"-0249-10-15T19:33:20Z", -70000000000, 0, true},
		{"10000-02-29T00:00:00Z", 253407398400, 0, true},
		{"10100-02-29T00:00:00Z", 0, 0, false}, // not a leap year
		{"0999-01-01T00:00:00Z", -30641760000, 0, true},
		{"999-01-01T00:00:00Z", 0, 0, false},
		{"+10000-01-01T00:00:00Z", 0, 0, false},
		{"1e5-01-01T00:00:00Z", 0, 0, false},
		{"999999999999999-01-01T00:00:00Z", 0, 0, false},
		{"yesterday", 0, 0, false},
	} {
		got, err := parseMtime(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parseMtime(%q): err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (got.Unix() != tc.sec || int64(got.Nanosecond()) != tc.nsec) {
			t.Errorf("parseMtime(%q) = %d.%09d, want %d.%09d", tc.in, got.Unix(), got.Nanosecond(), tc.sec, tc.nsec)
		}
	}
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 10)
	tests := []struct {
		name  string
		in    string
		delim byte
		max   int
		want  []string // "!" prefix: too long, followed by what was kept
	}{
		{"lines", "a\nbb\n\nc", '\n', 4, []string{"a", "bb", "", "c"}},
		{"exactly max", "abcd\nx\n", '\n', 4, []string{"abcd", "x"}},
		{"one over max", "abcde\nx\n", '\n', 4, []string{"!abcd", "x"}},
		{"long unterminated last", "x\n" + long, '\n', 4, []string{"x", "!xxxx"}},
		{"nul", "a\x00" + long + "\x00b\nc\x00", 0, 4, []string{"a", "!xxxx", "b\nc"}},
		{"empty", "", '\n', 4, nil},
		// Past bufio's buffer: the record is read to its end in chunks.
		{"longer than the buffer", strings.Repeat("y", 10000) + "\nz", '\n', 4096, []string{"!" + strings.Repeat("y", 4096), "z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr := NewLineReader(strings.NewReader(tt.in), tt.delim, tt.max)
			var got []string
			for {
				rec, tooLong, err := lr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				s := string(rec)
				if tooLong {
					s = "!" + s
				}
				got = append(got, s)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
