package manifest

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// defaults are the -a values the fuzz targets try, picked by a fuzzed byte.
var defaults = []string{"", "md5", "sha1", "sha256", "sha512", "blake3", "xxh64", "xxh128"}

// reparse reads one record that should hold exactly want.
func reparse(t *testing.T, rec []byte, opt Options, want Entry) {
	t.Helper()
	r := NewReader(bytes.NewReader(rec), opt)
	got, err := r.Next()
	if err != nil {
		t.Fatalf("%q (%+v): got %v, want entry %q", rec, opt, err, want.Name)
	}
	want.Line = 1
	if !sameEntry(got, want) {
		t.Fatalf("%q (%+v): got %+v, want %+v", rec, opt, got, want)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("%q (%+v): got %v after the entry, want io.EOF", rec, opt, err)
	}
}

func sameEntry(a, b Entry) bool {
	return a.Line == b.Line && a.Name == b.Name && a.Algorithm == b.Algorithm && bytes.Equal(a.Digest, b.Digest) &&
		a.Size == b.Size && a.Mtime.Equal(b.Mtime) && a.HasMeta == b.HasMeta
}

// roundTrip writes e in every style its source can have and reads it back.
func roundTrip(t *testing.T, e Entry, null bool) {
	t.Helper()
	term := byte('\n')
	if null {
		term = 0
	}
	opt := Options{DefaultAlgorithm: e.Algorithm, NullTerminated: null}
	if strings.IndexByte(e.Name, 0) >= 0 {
		return // no style can name a file with NUL
	}
	reparse(t, append(appendJSON(nil, e), term), opt, e)
	if e.HasMeta {
		return // only JSON carries size and mtime
	}
	for _, tag := range []bool{false, true} {
		s := Style{Tag: tag, Null: null}
		rec, err := Append(nil, e, s)
		if errors.Is(err, ErrUnrepresentable) && !tag && e.Name == "" {
			continue
		}
		if err != nil {
			t.Fatalf("Append(%q, %+v): %v", e.Name, s, err)
		}
		reparse(t, rec, opt, e)
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range readerTests {
		if len(tt.in) < 4096 {
			f.Add([]byte(tt.in), tt.opt.NullTerminated, uint8(0))
		}
	}
	f.Add([]byte("\\"+hA+"  a\\\\b\\nc\\r\n"+hA+" a\n"), false, uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, null bool, def uint8) {
		opt := Options{DefaultAlgorithm: defaults[int(def)%len(defaults)], NullTerminated: null}
		r := NewReader(bytes.NewReader(data), opt)
		line := 0
		for range len(data) + 2 {
			e, err := r.Next()
			if err == io.EOF {
				return
			}
			var le *LineError
			if errors.As(err, &le) {
				if le.Line <= line || !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("got %v after line %d", err, line)
				}
				line = le.Line
				continue
			}
			if err != nil {
				t.Fatalf("got %v, want only line errors", err)
			}
			if e.Line <= line {
				t.Fatalf("got line %d after line %d", e.Line, line)
			}
			line = e.Line
			if a := byName(e.Algorithm); a == nil || a.name != e.Algorithm || len(e.Digest) != a.size {
				t.Fatalf("got algorithm %q with a %d-byte digest", e.Algorithm, len(e.Digest))
			}
			if strings.IndexByte(e.Name, 0) >= 0 {
				t.Fatalf("got name %q with NUL", e.Name)
			}
			if !e.HasMeta && (e.Size != -1 || !e.Mtime.IsZero()) {
				t.Fatalf("got size %d mtime %v without HasMeta", e.Size, e.Mtime)
			}
			roundTrip(t, e, null)
		}
		t.Fatalf("Next did not reach io.EOF")
	})
}

func FuzzNameRoundTrip(f *testing.F) {
	for _, n := range hostileNames {
		f.Add([]byte(n))
	}
	f.Add([]byte(""))
	f.Add([]byte("a\x00b"))
	f.Add([]byte(" *\r"))
	f.Fuzz(func(t *testing.T, name []byte) {
		for _, a := range algorithms {
			e := Entry{Name: string(name), Algorithm: a.name, Digest: digestOf(a.name, name), Size: -1}
			roundTrip(t, e, false)
			roundTrip(t, e, true)
			e.Size, e.Mtime, e.HasMeta = int64(len(name)), time.Unix(int64(len(name))*1e7-1e9, 7), true
			roundTrip(t, e, false)
		}
	})
}
