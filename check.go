package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"pbatch/manifest"
	"pbatch/tasks"
	"pbatch/walker"
)

func checkCommand(stdin io.Reader, stdout, stderr io.Writer) *cli.Command {
	var o engineOpts
	var algorithm string
	var quiet, status, ignoreMissing, strict, warn bool
	return &cli.Command{
		Name:      "check",
		Usage:     "verify files against checksum manifests, in parallel, as sha256sum -c does",
		ArgsUsage: "MANIFEST…",
		Description: `Reads manifests written by pbatch hash (text, --tag, -0 or --format json), by coreutils
(sha256sum, sha1sum, md5sum, sha512sum; escaped lines and '*' binary markers), BSD
and OpenSSL tag lines, and b3sum. The algorithm comes from the tag, or from the
digest length; -a decides where lengths collide (64 hex digits: sha256 or blake3;
32: md5 or xxh128). Names are opened as written, relative to the current directory,
as coreutils does; FIFOs and devices are never read. '-' reads a manifest from stdin.
Output is sha256sum -c's, in manifest order: NAME: OK, NAME: FAILED,
NAME: FAILED open or read, and its WARNING lines on stderr. -w is --warn when not
followed by a number (then it is --workers).

EXAMPLES:
   pbatch check SHA256SUMS
   pbatch check --quiet -w 8 /srv/archive/*.sha256
   pbatch check -a blake3 B3SUMS
   pbatch hash --format json /srv > m.jsonl && pbatch check m.jsonl`,
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "workers", Aliases: []string{"w"}, Value: runtime.NumCPU(), Destination: &o.workers,
				Usage: "verify `N` files in parallel"},
			&cli.StringFlag{Name: "algorithm", Aliases: []string{"a"}, Destination: &algorithm,
				Usage: "`NAME` of the algorithm for untagged digests whose length is ambiguous (sha256/blake3, md5/xxh128)"},
			&cli.BoolFlag{Name: "null", Aliases: []string{"0"}, Destination: &o.null,
				Usage: "read NUL-terminated manifests with raw names (pbatch hash -0)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Destination: &quiet, Usage: "print no OK lines, only failures"},
			&cli.BoolFlag{Name: "status", Destination: &status, Usage: "print nothing on stdout; the exit status tells"},
			&cli.BoolFlag{Name: "ignore-missing", Destination: &ignoreMissing, Usage: "do not fail or report missing files"},
			&cli.BoolFlag{Name: "strict", Destination: &strict, Usage: "exit 1 for improperly formatted lines"},
			&cli.BoolFlag{Name: "warn", Destination: &warn, Usage: "warn about each improperly formatted line"},
			&cli.StringFlag{Name: "format", Value: "text", Destination: &o.format,
				Usage: "`FORMAT`: text (as sha256sum -c) or json (one object per manifest record)"},
			&cli.StringFlag{Name: "progress", Value: "auto", Destination: &o.progress,
				Usage: "live progress on stderr: `WHEN` is auto, always or never"},
			&cli.BoolFlag{Name: "fail-fast", Destination: &o.failFast, Usage: "stop at the first failure"},
			&cli.IntFlag{Name: "max-errors", Destination: &o.maxErrors, Usage: "stop after `N` failures (0: never)"},
		}, append(processFlags(&o), cacheFlags(&o)...)...),
		Action: func(c *cli.Context) error {
			o.maxDepth = -1
			if err := o.validate("check"); err != nil {
				return err
			}
			if algorithm != "" {
				if _, err := tasks.LookupAlgorithm(algorithm); err != nil {
					return usagef("check", "%s", err)
				}
			}
			names := c.Args().Slice()
			if len(names) == 0 {
				return usagef("check", "no MANIFEST given ('-' reads one from stdin)")
			}
			o.keepOrder = true // results in manifest order
			o.noSummary, o.noDiag = true, true
			o.source = manifestSource(names, stdin, manifest.Options{DefaultAlgorithm: algorithm, NullTerminated: o.null})
			f := &checkFormat{ctx: c.Context, stderr: stderr, names: names, quiet: quiet, status: status, warn: warn,
				json: o.format == "json", strict: strict, ignoreMissing: ignoreMissing,
				counts: make([]checkCounts, len(names))}
			ro, done, err := o.readOpts(c.Context, "check", nil, stderr)
			if err != nil {
				return err
			}
			defer done()
			return runEngine(c.Context, "check", nil, &o, tasks.NewCheck(ignoreMissing, strict, ro), f, stdin, stdout, stderr)
		},
	}
}

// manifestSource streams manifest records as entries, in order; it never holds
// more than a batch.
func manifestSource(names []string, stdin io.Reader, opt manifest.Options) func(context.Context, func() int, chan<- []walker.Entry) error {
	return func(ctx context.Context, batchSize func() int, out chan<- []walker.Entry) error {
		var batch []walker.Entry
		send := func() bool {
			if len(batch) == 0 {
				return true
			}
			select {
			case out <- batch:
				batch = nil
				return true
			case <-ctx.Done():
				return false
			}
		}
		add := func(e walker.Entry) bool {
			batch = append(batch, e)
			if len(batch) >= max(batchSize(), 1) {
				return send()
			}
			return true
		}
		for i, name := range names {
			item := func(me manifest.Entry, err error) *tasks.CheckItem {
				return &tasks.CheckItem{Manifest: name, Index: i, Entry: me, Err: err}
			}
			// Each manifest is closed once read: thousands may be named.
			ok := func() bool {
				var r io.Reader = stdin
				if name != "-" {
					f, closeFn, err := openInput(ctx, name)
					if err != nil {
						if ctx.Err() != nil {
							return false
						}
						return add(walker.NamedEntry(name, &tasks.CheckItem{Manifest: name, Index: i, Open: unwrapPathError(err)}))
					}
					defer closeFn()
					r = f
				}
				mr := manifest.NewReader(r, opt)
				for {
					me, err := mr.Next()
					if err == io.EOF {
						return true
					}
					var le *manifest.LineError
					switch {
					case errors.As(err, &le):
						if !add(walker.NamedEntry("", item(manifest.Entry{Line: le.Line}, le))) {
							return false
						}
					case err != nil && ctx.Err() != nil:
						return false // interrupted, not unreadable
					case err != nil:
						return add(walker.NamedEntry(name, &tasks.CheckItem{Manifest: name, Index: i, Open: unwrapPathError(err)}))
					default:
						if !add(walker.NamedEntry(me.Name, item(me, nil))) {
							return false
						}
					}
				}
			}()
			if !ok {
				return ctx.Err()
			}
		}
		if !send() {
			return ctx.Err()
		}
		return nil
	}
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

type checkCounts struct {
	seen, failed                                 bool
	proper, verified, malformed, unreadable, bad int
}

// checkFormat prints what sha256sum -c prints, record by record, and its
// WARNING lines when a manifest is done.
type checkFormat struct {
	ctx                       context.Context // done: interrupted, the manifest being read is not complete
	stderr                    io.Writer
	names                     []string
	quiet, status, warn, json bool
	strict, ignoreMissing     bool
	counts                    []checkCounts
	cur                       int
	extra                     int64 // failures found at the end of a manifest
	path                      []byte
}

func (f *checkFormat) all() bool { return true }

func (f *checkFormat) record(b []byte, r *tasks.Result) []byte {
	item, _ := r.Entry.Aux.(*tasks.CheckItem)
	if item == nil {
		return b
	}
	if item.Index != f.cur {
		f.endManifest(f.cur)
		f.cur = item.Index
	}
	c := &f.counts[item.Index]
	c.seen = true
	name := item.Entry.Name
	switch {
	case item.Open != nil:
		c.failed = true
		fmt.Fprintf(f.stderr, "pbatch: %s: %s\n", manifestName(item.Manifest), item.Open)
		if f.json {
			return f.jsonRecord(b, item, r, "unreadable")
		}
		return b
	case item.Err != nil:
		c.malformed++
		if f.warn && !f.status {
			fmt.Fprintf(f.stderr, "pbatch: %s: %d: %s\n", manifestName(item.Manifest), item.Entry.Line, lineProblem(item.Err))
		}
		if f.json {
			return f.jsonRecord(b, item, r, "malformed")
		}
		return b
	}
	c.proper++
	verdict := ""
	switch {
	case r.Status == tasks.OK:
		c.verified++
		if f.json {
			return f.jsonRecord(b, item, r, "ok")
		}
		if f.quiet || f.status {
			return b
		}
		verdict = "OK"
	case errors.Is(r.Err, tasks.ErrIgnoredMissing):
		if f.json {
			return f.jsonRecord(b, item, r, "missing")
		}
		return b
	case errors.Is(r.Err, tasks.ErrMismatch):
		c.bad++ // read, but not verified: coreutils counts only matches
		if f.json {
			return f.jsonRecord(b, item, r, "failed")
		}
		if f.status {
			return b
		}
		verdict = "FAILED"
	default:
		c.unreadable++
		fmt.Fprintf(f.stderr, "pbatch: %s: %s\n", quoteName(name), r.Err)
		if f.json {
			st := "unreadable"
			if errors.Is(r.Err, unix.ENOENT) {
				st = "missing"
			}
			return f.jsonRecord(b, item, r, st)
		}
		if f.status {
			return b
		}
		verdict = "FAILED open or read"
	}
	// coreutils 9.1 escapes a name in -c output only when it holds a newline,
	// and then escapes '\\' and CR too; otherwise a CR is printed as is.
	nb := []byte(name)
	if containsLF(nb) {
		b = append(b, '\\')
		b = escapeName(b, nb, false)
	} else {
		b = append(b, name...)
	}
	b = append(b, ": "...)
	b = append(b, verdict...)
	return append(b, '\n')
}

func containsLF(b []byte) bool {
	for _, c := range b {
		if c == '\n' {
			return true
		}
	}
	return false
}

// manifestName names a manifest in diagnostics as coreutils does: stdin is
// 'standard input', not "-".
func manifestName(p string) string {
	if p == "-" {
		return "'standard input'"
	}
	return quoteName(p)
}

func lineProblem(err error) string {
	if errors.Is(err, manifest.ErrUnsupported) {
		return "unsupported algorithm"
	}
	return "improperly formatted checksum line"
}

func (f *checkFormat) jsonRecord(b []byte, item *tasks.CheckItem, r *tasks.Result, status string) []byte {
	b = append(b, `{"manifest":`...)
	b = appendJSONString(b, []byte(item.Manifest))
	if item.Entry.Line > 0 {
		b = append(b, `,"line":`...)
		b = fmt.Appendf(b, "%d", item.Entry.Line)
	}
	if item.Err == nil && item.Open == nil {
		f.path = append(f.path[:0], item.Entry.Name...)
		b = append(b, ',')
		b = appendJSONName(b, "path", f.path)
		b = append(b, `,"algorithm":"`...)
		b = append(b, item.Entry.Algorithm...)
		b = append(b, `","expected":"`...)
		b = hex.AppendEncode(b, item.Entry.Digest)
		b = append(b, '"')
		if r.SumLen > 0 {
			b = append(b, `,"actual":"`...)
			b = hex.AppendEncode(b, r.Digest())
			b = append(b, '"')
		}
	}
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, '"')
	var err error
	switch {
	case item.Open != nil:
		err = item.Open
	case item.Err != nil:
		err = item.Err
	case r.Status != tasks.OK:
		err = r.Err
	}
	if err != nil {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, []byte(err.Error()))
	}
	return append(b, "}\n"...)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// endManifest prints coreutils' closing lines for one manifest.
func (f *checkFormat) endManifest(i int) {
	c := &f.counts[i]
	if c.failed {
		return
	}
	name := manifestName(f.names[i])
	if c.proper == 0 {
		fmt.Fprintf(f.stderr, "pbatch: %s: no properly formatted checksum lines found\n", name)
		f.extra++
		return
	}
	if !f.status && !f.json {
		if c.malformed > 0 {
			fmt.Fprintf(f.stderr, "pbatch: WARNING: %s\n", plural(c.malformed, "line is improperly formatted", "lines are improperly formatted"))
		}
		if c.unreadable > 0 {
			fmt.Fprintf(f.stderr, "pbatch: WARNING: %s\n", plural(c.unreadable, "listed file could not be read", "listed files could not be read"))
		}
		if c.bad > 0 {
			fmt.Fprintf(f.stderr, "pbatch: WARNING: %s\n", plural(c.bad, "computed checksum did NOT match", "computed checksums did NOT match"))
		}
	}
	if f.ignoreMissing && c.verified == 0 {
		if !f.status {
			fmt.Fprintf(f.stderr, "pbatch: %s: no file was verified\n", name)
		}
		f.extra++
	}
}

func (f *checkFormat) finish(io.Writer) int64 {
	if f.ctx.Err() != nil {
		return f.extra // what is left was not read to its end: nothing to conclude
	}
	for i := range f.counts {
		if f.counts[i].seen || i == f.cur {
			if i >= f.cur {
				f.endManifest(i)
			}
			continue
		}
		f.endManifest(i) // an empty manifest: no record at all
	}
	return f.extra
}
