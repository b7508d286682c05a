package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"pbatch/manifest"
	"pbatch/tasks"
)

func auditCommand(stdin io.Reader, stdout, stderr io.Writer) *cli.Command {
	var o engineOpts
	var manifestPath, algorithm string
	var all bool
	return &cli.Command{
		Name:      "audit",
		Usage:     "compare trees with a manifest: ok, modified, damaged, new, missing, moved",
		ArgsUsage: "--manifest FILE PATH…",
		Description: `Hashes every file below the PATHs and classifies it against the manifest:
   ok        same content
   modified  content differs, and size or mtime changed (an edit)
   damaged   content differs but size and mtime did not (bit rot, tampering); needs
             a manifest that records size and mtime: pbatch hash --format json
   new       on disk, not in the manifest
   missing   in the manifest, not on disk
   moved     missing at its old path, same content found at a new one (OLD -> NEW)
PATHs must be spelled as when the manifest was made (pbatch hash tree → audit tree).
One line per path that is not ok (--all: every path); exit 0 when everything is ok.
A listed path that cannot be looked up (permission denied, I/O error) is an error,
never guessed missing or there.
Only the manifest's index is held in memory, whatever the size of the tree.

EXAMPLES:
   pbatch hash --format json /srv/archive > archive.jsonl
   pbatch audit --manifest archive.jsonl /srv/archive
   pbatch audit --manifest SHA256SUMS --format json . | jq 'select(.status != "ok")'`,
		Flags: append(append(engineFlags(&o), cacheFlags(&o)...),
			&cli.StringFlag{Name: "manifest", Aliases: []string{"m"}, Destination: &manifestPath,
				Usage: "the manifest `FILE` (any format pbatch check reads; '-' for stdin)"},
			&cli.StringFlag{Name: "algorithm", Aliases: []string{"a"}, Destination: &algorithm,
				Usage: "`NAME` for untagged digests whose length is ambiguous, and for new files"},
			&cli.BoolFlag{Name: "all", Destination: &all, Usage: "list ok paths too"},
			&cli.StringFlag{Name: "format", Value: "text", Destination: &o.format,
				Usage: "`FORMAT`: text (STATUS  PATH lines) or json (one object per path)"},
		),
		Action: func(c *cli.Context) error {
			if err := o.validate("audit"); err != nil {
				return err
			}
			if manifestPath == "" {
				return usagef("audit", "missing --manifest FILE")
			}
			if algorithm != "" {
				if _, err := tasks.LookupAlgorithm(algorithm); err != nil {
					return usagef("audit", "%s", err)
				}
			}
			paths := c.Args().Slice()
			var r io.Reader = stdin
			if manifestPath != "-" {
				f, closeFn, err := openInput(c.Context, manifestPath)
				if err != nil {
					if c.Context.Err() != nil {
						return exitError{exitFailed} // interrupted: run exits by the signal
					}
					fmt.Fprintf(stderr, "pbatch: %s: %s\n", manifestName(manifestPath), unwrapPathError(err))
					return exitError{exitFailed}
				}
				defer closeFn()
				r = f
			} else if len(paths) == 1 && paths[0] == "-" {
				return usagef("audit", "stdin cannot hold both the manifest and the paths")
			}
			ix, bad, err := tasks.ReadIndex(r, manifest.Options{DefaultAlgorithm: algorithm, NullTerminated: o.null})
			for _, b := range bad {
				fmt.Fprintf(stderr, "pbatch: %s: %s\n", manifestName(manifestPath), b)
			}
			if err != nil {
				if c.Context.Err() != nil {
					return exitError{exitFailed} // interrupted: run exits by the signal
				}
				fmt.Fprintf(stderr, "pbatch: %s: %s\n", manifestName(manifestPath), err)
				return exitError{exitFailed}
			}
			if ix.Len() == 0 {
				fmt.Fprintf(stderr, "pbatch: %s: no properly formatted checksum lines found\n", manifestName(manifestPath))
				return exitError{exitFailed}
			}
			o.noSummary, o.noDiag = true, true
			f := &auditFormat{json: o.format == "json", listAll: all, quiet: o.quiet, stderr: stderr, malformed: len(bad)}
			ro, done, err := o.readOpts(c.Context, "audit", paths, stderr)
			if err != nil {
				return err
			}
			defer done()
			err = runEngine(c.Context, "audit", paths, &o, tasks.NewAudit(ix, paths, ro), f, stdin, stdout, stderr)
			if err == nil && len(bad) > 0 {
				return exitError{exitFailed}
			}
			return err
		},
	}
}

// auditFormat prints one line per path that is not ok, and the count per verdict.
type auditFormat struct {
	json, listAll, quiet bool
	stderr               io.Writer
	malformed            int
	counts               map[string]int64
	errors               int64
	start                time.Time
	path                 []byte
}

func (f *auditFormat) all() bool { return true }

var verdicts = []string{tasks.VerdictOK, tasks.VerdictModified, tasks.VerdictDamaged, tasks.VerdictNew, tasks.VerdictMissing, tasks.VerdictMoved}

func (f *auditFormat) record(b []byte, r *tasks.Result) []byte {
	if f.counts == nil {
		f.counts = map[string]int64{}
		f.start = time.Now()
	}
	if r.Verdict == "" {
		// Not classified: unreadable (a failure), or skipped or vanished (a note).
		if r.Status.IsFailure() {
			f.errors++
		}
		if r.Err != nil && (r.Status.IsFailure() || !f.quiet) {
			fmt.Fprintf(f.stderr, "pbatch: %s: %s\n", quoteName(r.Entry.Path()), r.Err)
		}
		return b
	}
	f.counts[r.Verdict]++
	if r.Verdict == tasks.VerdictOK && !f.listAll {
		return b
	}
	f.path = r.Entry.AppendPath(f.path[:0])
	if f.json {
		b = append(b, '{')
		b = appendJSONName(b, "path", f.path)
		b = append(b, `,"status":"`...)
		b = append(b, r.Verdict...)
		b = append(b, '"')
		if r.OldPath != "" {
			b = append(b, `,"old_path":`...)
			b = appendJSONString(b, []byte(r.OldPath))
		}
		if r.Expected != nil {
			b = append(b, `,"expected":"`...)
			b = hex.AppendEncode(b, r.Expected)
			b = append(b, '"')
		}
		if r.SumLen > 0 {
			b = append(b, `,"actual":"`...)
			b = hex.AppendEncode(b, r.Digest())
			b = append(b, `","size":`...)
			b = strconv.AppendInt(b, r.Size, 10)
			b = append(b, `,"mtime":`...)
			b = appendJSONTime(b, r.Mtime)
		}
		return append(b, "}\n"...)
	}
	b = append(b, r.Verdict...)
	b = append(b, strings.Repeat(" ", 10-len(r.Verdict))...)
	if r.OldPath != "" {
		b = append(b, quoteName(r.OldPath)...)
		b = append(b, " -> "...)
	}
	b = appendQuotedName(b, f.path)
	return append(b, '\n')
}

// finish prints the count per verdict: "pbatch: audit: 98 ok, 1 modified, …".
func (f *auditFormat) finish(io.Writer) int64 {
	if f.quiet {
		return 0
	}
	var parts []string
	for _, v := range verdicts {
		parts = append(parts, humanize.Comma(f.counts[v])+" "+v)
	}
	line := "pbatch: audit: " + strings.Join(parts, ", ")
	if f.errors > 0 {
		line += "; " + humanize.Comma(f.errors) + " unreadable"
	}
	if f.malformed > 0 {
		line += "; " + humanize.Comma(int64(f.malformed)) + " malformed manifest lines"
	}
	fmt.Fprintln(f.stderr, line)
	return 0
}
