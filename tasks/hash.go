package tasks

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/zeebo/blake3"
	"github.com/zeebo/xxh3"

	"pbatch/walker"
)

// Algorithm is a digest pbatch can compute.
type Algorithm struct {
	Name string // as given to -a and written in JSON
	Tag  string // BSD tag (--tag)
	// BSum is true where the checker is b3sum, which escapes only '\\' and LF in
	// names and rejects "\r"; coreutils escapes CR too.
	BSum bool
	New  func() hash.Hash
}

// Algorithms lists the supported digests; the first is the default.
var Algorithms = []Algorithm{
	{Name: "sha256", Tag: "SHA256", New: sha256.New},
	{Name: "md5", Tag: "MD5", New: md5.New},
	{Name: "sha1", Tag: "SHA1", New: sha1.New},
	{Name: "sha512", Tag: "SHA512", New: sha512.New},
	{Name: "blake3", Tag: "BLAKE3", BSum: true, New: func() hash.Hash { return blake3.New() }},
	{Name: "xxh64", Tag: "XXH64", New: func() hash.Hash { return xxhash.New() }},
	{Name: "xxh128", Tag: "XXH128", New: func() hash.Hash { return xxh128{xxh3.New()} }},
}

// AlgorithmNames is the list for help texts and error messages.
func AlgorithmNames() string {
	names := make([]string, len(Algorithms))
	for i, a := range Algorithms {
		names[i] = a.Name
	}
	return strings.Join(names, ", ")
}

// LookupAlgorithm finds an algorithm by name, case-insensitively.
func LookupAlgorithm(name string) (Algorithm, error) {
	i := slices.IndexFunc(Algorithms, func(a Algorithm) bool { return strings.EqualFold(a.Name, name) })
	if i < 0 {
		return Algorithm{}, fmt.Errorf("unknown algorithm %q (choose from %s)", name, AlgorithmNames())
	}
	return Algorithms[i], nil
}

// xxh128 makes zeebo/xxh3's 128-bit digest a hash.Hash in xxhsum's canonical
// (big-endian, high half first) byte order.
type xxh128 struct{ *xxh3.Hasher }

func (h xxh128) Size() int { return 16 }
func (h xxh128) Sum(b []byte) []byte {
	s := h.Sum128().Bytes()
	return append(b, s[:]...)
}

// Hash computes a digest of every regular file.
type Hash struct {
	alg Algorithm
	ro  ReadOptions
}

// NewHash returns the hash task.
func NewHash(alg Algorithm, ro ReadOptions) *Hash { return &Hash{alg: alg, ro: ro} }

func (t *Hash) NewWorker() Worker {
	return &hashWorker{rd: newReader(t.ro), h: t.alg.New(), alg: t.alg.Name}
}

type hashWorker struct {
	rd  reader
	h   hash.Hash
	alg string
}

func (w *hashWorker) Run(ctx context.Context, e *walker.Entry, r *Result) {
	w.rd.digest(ctx, e, w.alg, w.h, r)
}

// Flush releases the worker's cache transaction (see reader.Flush).
func (w *hashWorker) Flush() { w.rd.Flush() }
