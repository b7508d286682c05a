package main

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestJSONStream: escaping output in pieces, cut anywhere (inside a UTF-8
// sequence too), gives what escaping it whole gives.
func TestJSONStream(t *testing.T) {
	inputs := [][]byte{
		[]byte("plain ascii\n\"quoted\"\t\\"),
		[]byte("é€😀 mixed \u2028 and \ufffd"),
		[]byte("bad \xff\xfe, cut \xe2\x82 and \xf0\x9f\x98 then \xc3"),
		bytes.Repeat([]byte("😀é"), 50),
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = []byte{'a', 0, '"', 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xff, 0x80}[rng.IntN(14)]
		}
		inputs = append(inputs, b)
	}
	for _, in := range inputs {
		want := appendJSONBody(nil, in)
		for cuts := range 6 {
			var js jsonStream
			var got []byte
			rest := in
			for k := 0; k < cuts && len(rest) > 0; k++ {
				n := rng.IntN(len(rest) + 1)
				got = js.append(got, rest[:n])
				rest = rest[n:]
			}
			got = js.append(got, rest)
			got = js.end(got)
			if !bytes.Equal(got, want) {
				t.Fatalf("%q in %d pieces: got %s, want %s", in, cuts+1, got, want)
			}
		}
		// One byte at a time.
		var js jsonStream
		var got []byte
		for i := range in {
			got = js.append(got, in[i:i+1])
		}
		if got = js.end(got); !bytes.Equal(got, want) {
			t.Fatalf("%q byte by byte: got %s, want %s", in, got, want)
		}
	}
}
