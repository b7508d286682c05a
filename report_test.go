package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"pbatch/tasks"
	"pbatch/walker"
)

func TestEscapeName(t *testing.T) {
	for _, tc := range []struct {
		name      string
		bsum      bool
		want      string
		wantEscap bool
	}{
		{"plain", false, "plain", false},
		{`a\b`, false, `a\\b`, true},
		{"a\nb", false, `a\nb`, true},
		{"a\rb", false, `a\rb`, true},
		{"a\rb", true, "a\rb", false},
		{"a\nb\\", true, `a\nb\\`, true},
		{"tab\there", false, "tab\there", false},
	} {
		if got := needsEscape([]byte(tc.name), tc.bsum); got != tc.wantEscap {
			t.Errorf("needsEscape(%q, bsum=%v) = %v, want %v", tc.name, tc.bsum, got, tc.wantEscap)
		}
		if got := string(escapeName(nil, []byte(tc.name), tc.bsum)); got != tc.want {
			t.Errorf("escapeName(%q, bsum=%v) = %q, want %q", tc.name, tc.bsum, got, tc.want)
		}
	}
}

func FuzzEscapeRoundTrip(f *testing.F) {
	for _, s := range []string{"", "a", `\`, "\n", "\r", "a\\n", "\xff\x00", "\\\\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, name []byte) {
		for _, bsum := range []bool{false, true} {
			esc := escapeName(nil, name, bsum)
			if bytes.IndexByte(esc, '\n') >= 0 {
				t.Fatalf("escaped name %q still contains a newline", esc)
			}
			if !bsum && bytes.IndexByte(esc, '\r') >= 0 {
				t.Fatalf("escaped name %q still contains a CR", esc)
			}
			got, ok := unescapeName(esc)
			if !ok || !bytes.Equal(got, name) {
				t.Fatalf("unescape(escape(%q)) = %q, %v", name, got, ok)
			}
		}
	})
}

func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\\", "\x00\x1f\x7f", "\u2028", "\xff", "é\xe9", "\xed\xa0\x80"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		enc := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: invalid JSON: %v", s, enc, err)
		}
		if want := strings.ToValidUTF8(string(s), "\uFFFD"); utf8.Valid(s) && got != want {
			t.Fatalf("round trip of %q: got %q", s, got)
		}
	})
}

func FuzzJSONRecordPathRoundTrip(f *testing.F) {
	for _, s := range []string{"a", "\xff\xfe", "dir/\n", "ok é"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, path []byte) {
		r := &tasks.Result{Status: tasks.Failed, Err: errors.New("boom")}
		line := appendJSONRecord(nil, path, "sha256", r)
		var rec struct {
			Path    string `json:"path"`
			PathB64 string `json:"path_b64"`
			Status  string `json:"status"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("record %s: %v", line, err)
		}
		got := []byte(rec.Path)
		if rec.PathB64 != "" {
			var err error
			if got, err = base64.StdEncoding.DecodeString(rec.PathB64); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, path) {
			t.Fatalf("path %q came back as %q", path, got)
		}
		if rec.Status != "failed" {
			t.Fatalf("status %q", rec.Status)
		}
	})
}

func TestHashFormatLines(t *testing.T) {
	sha256, _ := tasks.LookupAlgorithm("sha256")
	blake3, _ := tasks.LookupAlgorithm("blake3")
	r := tasks.Result{Entry: walker.Entry{Root: &walker.Root{Path: "d"}, Rel: "a\\b\r"}, SumLen: 2}
	r.Sum[0], r.Sum[1] = 0xab, 0xcd
	for _, tc := range []struct {
		f    hashFormat
		want string
	}{
		{hashFormat{alg: sha256}, "\\abcd  d/a\\\\b\\r\n"},
		{hashFormat{alg: blake3}, "\\abcd  d/a\\\\b\r\n"},
		{hashFormat{alg: sha256, tag: true}, "\\SHA256 (d/a\\\\b\\r) = abcd\n"},
		{hashFormat{alg: sha256, null: true}, "abcd  d/a\\b\r\x00"},
	} {
		if got := string(tc.f.record(nil, &r)); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.f, got, tc.want)
		}
	}
}

func TestQuoteName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain/path.txt", "plain/path.txt"},
		{"with space", "with space"},
		{"é", "é"},
		{"a\nb", `"a\nb"`},
		{"\xff", `"\xff"`},
		{"rtl\u202etxt", `"rtl\u202etxt"`},
		{"esc\x1b[31m", `"esc\x1b[31m"`},
		{`say "hi"`, `"say \"hi\""`},
		{"del\x7f", `"del\x7f"`},
	} {
		if got := quoteName(tc.in); got != tc.want {
			t.Errorf("quoteName(%q) = %s, want %s", tc.in, got, tc.want)
		}
		if got := string(appendQuotedName([]byte("x "), []byte(tc.in))); got != "x "+tc.want {
			t.Errorf("appendQuotedName(%q) = %s, want x %s", tc.in, got, tc.want)
		}
	}
}

// FuzzAppendQuotedName: the ASCII fast path gives what quoteName gives.
func FuzzAppendQuotedName(f *testing.F) {
	for _, s := range []string{"plain", "a\"b", "\x7f", "é", "a\nb", "~ !"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := string(appendQuotedName(nil, []byte(s))), quoteName(s); got != want {
			t.Errorf("appendQuotedName(%q) = %q, quoteName = %q", s, got, want)
		}
	})
}

func TestReorderArgs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"pbatch hash d", "pbatch hash -- d"},
		{"pbatch hash d -w 8", "pbatch hash -w 8 -- d"},
		{"pbatch hash d -w8", "pbatch hash -w 8 -- d"},
		{"pbatch -w8 hash d -0q", "pbatch hash -w 8 -0 -q -- d"},
		{"pbatch -w 8 hash d", "pbatch hash -w 8 -- d"},
		{"pbatch hash -a md5 d1 --tag d2", "pbatch hash -a md5 --tag -- d1 d2"},
		{"pbatch hash d -- -w", "pbatch hash -- d -w"},
		{"pbatch hash - -0", "pbatch hash -0 -- -"},
		{"pbatch hash --workers=3 d", "pbatch hash --workers=3 -- d"},
		{"pbatch hash --exclude a,b d", "pbatch hash --exclude a,b -- d"},
		{"pbatch hash d --help", "pbatch hash --help"},
		{"pbatch hash d -h", "pbatch hash --help"},
		{"pbatch chown -h 0 d", "pbatch chown --no-dereference -- 0 d"},
		{"pbatch --version", "pbatch --version"},
		{"pbatch nosuch -w 2", "pbatch nosuch -w 2"},
		{"pbatch -w 2 nosuch d", "pbatch nosuch d"},
		{"pbatch hash d -w", "pbatch hash -w"},
		{"pbatch hash d -qka md5", "pbatch hash -q -k -a md5 -- d"},
		{"pbatch hash -0q d", "pbatch hash -0 -q -- d"},
		{"pbatch hash --cache d", "pbatch hash --cache=@default -- d"},
		{"pbatch hash d --cache=/x.db", "pbatch hash --cache=/x.db -- d"},
		{"pbatch hash -qzk d", "pbatch hash -qzk -- d"},
		{"pbatch", "pbatch"},
	} {
		got := strings.Join(reorderArgs(strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzReorderArgsKeepsEveryArgument(f *testing.F) {
	f.Add("hash\x00d\x00-w\x008\x00--\x00-x")
	f.Fuzz(func(t *testing.T, s string) {
		args := append([]string{"pbatch"}, strings.Split(s, "\x00")...)
		got := reorderArgs(slices.Clone(args))
		// Reordering may only add one "--": it never drops or invents arguments.
		want := slices.Clone(args)
		if len(got) == len(args)+1 {
			want = append(want, "--")
		} else if len(got) != len(args) {
			t.Fatalf("reorderArgs(%q) = %q: length changed", args, got)
		}
		a, b := slices.Clone(got), want
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Fatalf("reorderArgs(%q) = %q: arguments changed", args, got)
		}
	})
}
