package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"pbatch/tasks"
)

const compressSafety = `Nothing is lost: output goes to a temporary file in the same directory (named
` + tasks.TempPrefix + `XXXXXXXXXXXX, created O_EXCL|O_NOFOLLOW, mode 0600), which is
given the input's owner, group, user xattrs and POSIX ACL while still 0600, then
its permission bits (special bits dropped) and atime/mtime (ns), fsynced and
closed, then published with a no-replace rename and the directory fsynced. No
file under the final name is ever partial, even after SIGKILL. An existing output
name is never opened or followed; --force replaces it by rename only, and never
an output this run wrote: one run never publishes two inputs (f.gz and f.zst,
t.tgz and t.tar.gz) onto one name, nor takes its own output (a.gz from a.gz.gz)
as an input. decompress never replaces a .gz, .tgz or .zst file, even with
--force. In a sticky directory (/tmp), --force replaces only a file the input's
owner could: one they own, or any if they own the directory (or are root).
--rm removes the original only after all that, (compress) only after the output
was decoded and compared with the input (unless --no-verify), and only the inode
that was read: the name is first renamed to a temporary name, that inode checked
(size, mtime, mode, owner, links, xattrs) and unlinked, and a file renamed over
the original meanwhile is put back, as NAME` + tasks.KeptInfix + `XXXXXX if the name was taken
again. A leftover temporary file is a partial output, except after a kill during
an --rm removal: then it is what the original's name held (the original, its
output complete, or a file renamed over it just then). Symlinks, special files
and pbatch's temporary files are skipped; with --rm, so are files with several
hard links, setuid/setgid files, and files with xattrs the output would not get
(file capabilities, trusted.*). Any write, fsync or close error (ENOSPC, EDQUOT,
EFBIG, EIO) fails that file: temporary file removed, original untouched.`

func compressCommands(stdin io.Reader, stdout, stderr io.Writer) []*cli.Command {
	var c struct {
		engineOpts
		format   string
		level    int
		rm       bool
		force    bool
		noVerify bool
		// noPreserveRoot lets --rm work on "/": removing originals is what
		// preserve-root guards (GNU rm, chmod, chown).
		noPreserveRoot bool
	}
	var d struct {
		engineOpts
		rm             bool
		force          bool
		noPreserveRoot bool
	}
	check := func(cmd string, o *engineOpts) error {
		if err := o.validate(cmd); err != nil {
			return err
		}
		if o.follow {
			return usagef(cmd, "-L/--follow is not supported: %s never follows symlinks", cmd)
		}
		return nil
	}
	return []*cli.Command{
		{
			Name:      "compress",
			Usage:     "compress each file next to itself (gzip or zstd), never losing data",
			ArgsUsage: "PATH…",
			Description: `Writes NAME.gz (or NAME.zst) next to each regular file; names already ending in
.gz .tgz .zst .xz .bz2 .lz4 .zip .7z (any case) are skipped. Prints each output path.

` + compressSafety + `

EXAMPLES:
   pbatch compress --rm --older-than 7d --include '*.log' /var/log/app
   pbatch compress --format zstd -l 19 -w 4 /srv/archive
   pbatch compress --dry-run --rm /var/log`,
			Flags: append(engineFlags(&c.engineOpts),
				&cli.StringFlag{Name: "format", Value: "gzip", Destination: &c.format, Usage: "`FORMAT`: gzip or zstd"},
				&cli.IntFlag{Name: "level", Aliases: []string{"l"}, Destination: &c.level,
					Usage: "compression `LEVEL`: gzip 1-9 (default 6), zstd 1-22 (default 3)"},
				&cli.BoolFlag{Name: "rm", Destination: &c.rm, Usage: "remove each original once its output is durable and verified"},
				&cli.BoolFlag{Name: "no-preserve-root", Destination: &c.noPreserveRoot, Usage: "with --rm, allow '/' as a PATH or met in the tree"},
				&cli.BoolFlag{Name: "force", Destination: &c.force, Usage: "replace an existing output (by rename; it is never written through)"},
				&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Destination: &c.dryRun, Usage: "print what would be done, change nothing"},
				&cli.BoolFlag{Name: "no-verify", Destination: &c.noVerify, Usage: "with --rm, do not decode the output before removing the original"},
				&cli.StringFlag{Name: "output-format", Value: "text", Destination: &c.engineOpts.format,
					Usage: "`FORMAT` of results: text (output paths) or json (one object per file)"},
			),
			Action: func(cc *cli.Context) error {
				if err := check("compress", &c.engineOpts); err != nil {
					return err
				}
				c.preserveRoot = c.rm && !c.noPreserveRoot
				ro, done, err := c.readOpts(cc.Context, "compress", nil, stderr)
				if err != nil {
					return err
				}
				defer done()
				t, err := tasks.NewCompress(tasks.CompressOptions{Format: c.format, Level: c.level, Remove: c.rm, Cores: c.workers,
					Force: c.force, DryRun: c.dryRun, NoVerify: c.noVerify, Read: ro})
				if err != nil {
					return usagef("compress", "%s", err)
				}
				return runEngine(cc.Context, "compress", cc.Args().Slice(), &c.engineOpts, t,
					&compressFormat{json: c.engineOpts.format == "json", null: c.null, dryRun: c.dryRun, quiet: c.quiet, stderr: stderr}, stdin, stdout, stderr)
			},
		},
		{
			Name:      "decompress",
			Usage:     "decompress .gz, .tgz and .zst files next to themselves, never losing data",
			ArgsUsage: "PATH…",
			Description: `Writes NAME for each NAME.gz or NAME.zst (NAME.tar for NAME.tgz), the format checked
by its magic bytes; files without those suffixes are skipped. Prints each output path.
Reads what gzip -t and zstd -t accept (README lists the rare exceptions): several
members or frames, skippable frames (pzstd), zero bytes after gzip data. Trailing
garbage after gzip data fails the file (gzip -d only warns): it is kept.

` + compressSafety + `

EXAMPLES:
   pbatch decompress --rm /srv/restore
   pbatch decompress --include '*.zst' -k /data`,
			Flags: append(engineFlags(&d.engineOpts),
				&cli.BoolFlag{Name: "rm", Destination: &d.rm, Usage: "remove each compressed original once its output is durable"},
				&cli.BoolFlag{Name: "no-preserve-root", Destination: &d.noPreserveRoot, Usage: "with --rm, allow '/' as a PATH or met in the tree"},
				&cli.BoolFlag{Name: "force", Destination: &d.force, Usage: "replace an existing output (by rename)"},
				&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Destination: &d.dryRun, Usage: "print what would be done, change nothing"},
				&cli.StringFlag{Name: "output-format", Value: "text", Destination: &d.engineOpts.format,
					Usage: "`FORMAT` of results: text (output paths) or json (one object per file)"},
			),
			Action: func(cc *cli.Context) error {
				if err := check("decompress", &d.engineOpts); err != nil {
					return err
				}
				d.preserveRoot = d.rm && !d.noPreserveRoot
				ro, done, err := d.readOpts(cc.Context, "decompress", nil, stderr)
				if err != nil {
					return err
				}
				defer done()
				t := tasks.NewDecompress(tasks.CompressOptions{Remove: d.rm, Force: d.force, DryRun: d.dryRun, Read: ro})
				return runEngine(cc.Context, "decompress", cc.Args().Slice(), &d.engineOpts, t,
					&compressFormat{json: d.engineOpts.format == "json", null: d.null, dryRun: d.dryRun, quiet: d.quiet, stderr: stderr}, stdin, stdout, stderr)
			},
		},
	}
}

// compressFormat prints the path of each output written, or JSON records; at
// the end, the total output size against the input.
type compressFormat struct {
	json, null, dryRun, quiet bool
	stderr                    io.Writer
	in, out                   int64
	path                      []byte
}

func (f *compressFormat) all() bool { return f.json }

func (f *compressFormat) outPath(r *tasks.Result) []byte {
	f.path = r.Entry.AppendPath(f.path[:0])
	i := len(f.path) - 1
	for i >= 0 && f.path[i] != '/' {
		i--
	}
	return append(f.path[:i+1], r.Output...)
}

func (f *compressFormat) record(b []byte, r *tasks.Result) []byte {
	if r.Status == tasks.OK {
		f.in += r.Size
		f.out += r.OutSize
	}
	if f.json {
		in := r.Entry.AppendPath(nil)
		b = append(b, '{')
		b = appendJSONName(b, "path", in)
		if r.Output != "" {
			out := f.outPath(r)
			b = append(b, ',')
			b = appendJSONName(b, "output", out)
		}
		if r.Status == tasks.OK {
			b = append(b, `,"size":`...)
			b = strconv.AppendInt(b, r.Size, 10)
			if !f.dryRun {
				b = append(b, `,"output_size":`...)
				b = strconv.AppendInt(b, r.OutSize, 10)
			}
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
	out := f.outPath(r)
	if f.null {
		b = append(b, out...)
		return append(b, 0)
	}
	b = appendQuotedName(b, out)
	return append(b, '\n')
}

func (f *compressFormat) finish(io.Writer) int64 {
	if f.in > 0 && !f.dryRun && !f.quiet {
		fmt.Fprintf(f.stderr, "pbatch: output %s for %s read (%.1f%%)\n",
			humanize.Bytes(uint64(f.out)), humanize.Bytes(uint64(f.in)), 100*float64(f.out)/float64(f.in))
	}
	return 0
}
