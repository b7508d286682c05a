package main

import (
	"context"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"pbatch/tasks"
	"pbatch/walker"
)

// version is set by -ldflags "-X main.version=…"; otherwise the module version.
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

const exitCodesHelp = `EXIT STATUS:
   0    every file was processed (skipped symlinks, special files and vanished
        entries are not failures)
   1    at least one file failed, changed while being read, or stdout failed
   2    usage error
   129, 130, 143
        interrupted by SIGHUP, SIGINT or SIGTERM (128 + signal number); the
        summary is printed first
`

// engineOpts are the flags every task shares: walking, filtering, the pool and
// output.
type engineOpts struct {
	workers   int
	null      bool
	include   cli.StringSlice
	exclude   cli.StringSlice
	maxDepth  int
	oneFS     bool
	follow    bool
	keepOrder bool
	quiet     bool
	format    string
	progress  string
	failFast  bool
	maxErrors int

	// Selection and scheduled-maintenance flags (see selectFlags, processFlags).
	olderThan, newerThan string
	timeField            string
	minSize, maxSize     string
	types                string
	shard                string
	lock                 string
	waitLock             time.Duration
	bwlimit              string
	nice                 int
	ionice               string
	cache                string // "" off; cacheDefault for the default place
	cacheReset           bool
	cachePrune           bool

	// Set by commands, not flags.
	dirs          bool // the task receives directories too
	noFollowRoots bool // a PATH that is a symlink is not followed (chown -h)
	preserveRoot  bool // refuse "/"
	meta          bool // chmod/chown summary
	dryRun        bool
	batch         int // fixed batch size (exec -X); 0 adapts to the cost per file
	// lines is stdout as exec --line-buffer's jobs write it: its first error
	// ends the run as one of the collector's would.
	lines *tasks.LockedWriter
	// source replaces the walk (check reads manifests); batchSize says how many
	// entries to send at once.
	source    func(ctx context.Context, batchSize func() int, out chan<- []walker.Entry) error
	noSummary bool // the formatter prints its own (check)
	noDiag    bool // the formatter prints every diagnostic itself (check)
	// sel is the selection, made once: the walk and the tasks' own checks
	// of what they open must judge by the same instant (--older-than 1d).
	sel *selection
}

func engineFlags(o *engineOpts) []cli.Flag {
	return append(walkFlags(o), processFlags(o)...)
}

func walkFlags(o *engineOpts) []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "workers", Aliases: []string{"w"}, Value: runtime.NumCPU(), Destination: &o.workers,
			Usage: "run `N` workers in parallel"},
		&cli.BoolFlag{Name: "null", Aliases: []string{"0"}, Destination: &o.null,
			Usage: "end output records with NUL (names raw), and read NUL-separated paths from '-'"},
		&cli.StringSliceFlag{Name: "include", Destination: &o.include,
			Usage: "process only files matching `GLOB` (repeatable; no '/' = base name, '/' = path below the root, ** any depth)"},
		&cli.StringSliceFlag{Name: "exclude", Destination: &o.exclude,
			Usage: "skip files and prune directories matching `GLOB` (repeatable)"},
		&cli.IntFlag{Name: "max-depth", Value: -1, Destination: &o.maxDepth,
			Usage: "descend at most `N` levels below each PATH (as find -maxdepth)"},
		&cli.BoolFlag{Name: "one-file-system", Aliases: []string{"x"}, Destination: &o.oneFS,
			Usage: "do not descend into directories on other file systems"},
		&cli.BoolFlag{Name: "follow", Aliases: []string{"L"}, Destination: &o.follow,
			Usage: "follow symbolic links, even out of the tree (loops are detected); default: skip them"},
		&cli.BoolFlag{Name: "keep-order", Aliases: []string{"k"}, Destination: &o.keepOrder,
			Usage: "print results in walk order (directories read sorted), so runs over the same tree match"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Destination: &o.quiet,
			Usage: "print no summary and no notes (skipped, vanished); errors are still printed"},
		&cli.StringFlag{Name: "progress", Value: "auto", Destination: &o.progress,
			Usage: "live progress on stderr: `WHEN` is auto (when stderr is a terminal), always or never"},
		&cli.BoolFlag{Name: "fail-fast", Destination: &o.failFast,
			Usage: "stop dispatching at the first failure (files in flight are aborted)"},
		&cli.IntFlag{Name: "max-errors", Destination: &o.maxErrors,
			Usage: "stop dispatching after `N` failures (0: never)"},
		&cli.StringFlag{Name: "older-than", Destination: &o.olderThan,
			Usage: "only entries last modified before `AGE` ago (7d, 12h, 1w2d) or before a date (2026-11-01)"},
		&cli.StringFlag{Name: "newer-than", Destination: &o.newerThan,
			Usage: "only entries modified within `AGE` (or after a date)"},
		&cli.StringFlag{Name: "time", Value: "mtime", Destination: &o.timeField,
			Usage: "which time --older-than/--newer-than compare: `mtime`, ctime or atime"},
		&cli.StringFlag{Name: "min-size", Destination: &o.minSize, Usage: "only files of at least `SIZE` (4096, 10MB, 1.5GiB)"},
		&cli.StringFlag{Name: "max-size", Destination: &o.maxSize, Usage: "only files of at most `SIZE`"},
		&cli.StringFlag{Name: "type", Destination: &o.types,
			Usage: "only entries of `TYPES`: f (files), d (directories), l (symlinks), comma-separated, where the task allows"},
		&cli.StringFlag{Name: "shard", Destination: &o.shard,
			Usage: "process only shard `K/N` (0 <= K < N) of the files, by a stable hash of the path below the PATH"},
	}
}

// cacheDefault is what a bare --cache becomes (reorderArgs): the default place.
const cacheDefault = "@default"

// cacheFlags are for the tasks that compute digests: hash, check, audit.
func cacheFlags(o *engineOpts) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "cache", Destination: &o.cache,
			Usage: "reuse digests of unchanged files (same device, inode, size, mtime, ctime) from a cache; " +
				"--cache alone uses $XDG_CACHE_HOME/pbatch/cache.db, --cache=`PATH` another file"},
		&cli.BoolFlag{Name: "cache-reset", Destination: &o.cacheReset, Usage: "with --cache: empty the cache file (only a bbolt file or an empty one) and start anew"},
		&cli.BoolFlag{Name: "cache-prune", Destination: &o.cachePrune,
			Usage: "with --cache: drop entries of files under the PATHs that no longer exist (done anyway once a day)"},
	}
}

// processFlags are the scheduled-maintenance flags every command has, check included.
func processFlags(o *engineOpts) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "lock", Destination: &o.lock,
			Usage: "take an exclusive lock on `FILE` first; if another run holds it, exit 75 at once"},
		&cli.DurationFlag{Name: "wait-lock", Destination: &o.waitLock,
			Usage: "with --lock, wait up to `DURATION` for the lock instead"},
		&cli.StringFlag{Name: "bwlimit", Destination: &o.bwlimit,
			Usage: "read at most `RATE` (e.g. 50MB/s) in total, all workers together"},
		&cli.IntFlag{Name: "nice", Destination: &o.nice, Usage: "run at CPU niceness `N` (-20 to 19)"},
		&cli.StringFlag{Name: "ionice", Destination: &o.ionice,
			Usage: "I/O scheduling `CLASS`: idle, best-effort[:0-7] or realtime[:0-7]"},
	}
}

// readOpts builds the options of the tasks that read content. done must be
// called when the run is over: it flushes and closes the cache, pruning it
// first when that is due and the run was complete.
func (o *engineOpts) readOpts(ctx context.Context, cmd string, roots []string, stderr io.Writer) (ro tasks.ReadOptions, done func(), err error) {
	done = func() {}
	sel, err := o.selection(cmd)
	if err != nil {
		return ro, done, err
	}
	ro = tasks.ReadOptions{Follow: o.follow, Select: sel.match()}
	if o.cache != "" {
		ro, done, err = o.openCache(ctx, cmd, roots, ro, stderr)
		if err != nil {
			return ro, done, err
		}
	} else if o.cacheReset || o.cachePrune {
		return ro, done, usagef(cmd, "--cache-reset and --cache-prune need --cache")
	}
	if o.bwlimit != "" {
		bps, err := parseRate(o.bwlimit)
		if err != nil {
			done()
			return ro, func() {}, usagef(cmd, "--bwlimit: %s", err)
		}
		// A burst of one read buffer: one wait per read, and the average holds
		// to the limit from the first second on.
		ro.Limit = rate.NewLimiter(rate.Limit(bps), tasks.ReadBufSize)
	}
	return ro, done, nil
}

func (o *engineOpts) validate(cmd string) error {
	if o.workers < 1 {
		return usagef(cmd, "invalid --workers %d: must be at least 1", o.workers)
	}
	if o.workers > 4096 {
		return usagef(cmd, "invalid --workers %d: at most 4096", o.workers)
	}
	if o.maxDepth < -1 {
		return usagef(cmd, "invalid --max-depth %d", o.maxDepth)
	}
	switch o.format {
	case "", "text", "json":
	default:
		return usagef(cmd, "invalid --format %q (choose text or json)", o.format)
	}
	switch o.progress {
	case "auto", "always", "never":
	default:
		return usagef(cmd, "invalid --progress %q (choose auto, always or never)", o.progress)
	}
	if o.maxErrors < 0 {
		return usagef(cmd, "invalid --max-errors %d", o.maxErrors)
	}
	return nil
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	onUsage := func(c *cli.Context, err error, _ bool) error {
		name := ""
		if c.Command != nil {
			name = c.Command.Name
		}
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			// Go's flag package says "-name" whatever the user typed.
			if len(f) > 1 {
				f = "-" + f
			}
			msg = "unknown flag -" + f
		}
		return usagef(name, "%s", msg)
	}
	app := &cli.App{
		Name:      "pbatch",
		Usage:     "run a task over every file in many directory trees, in parallel",
		UsageText: "pbatch COMMAND [flags] PATH…   (flags may also follow the PATHs; -- ends them; - reads paths from stdin)",
		Description: `EXAMPLES:
   pbatch hash -w 8 /var/data > SHA256SUMS && sha256sum -c SHA256SUMS
   find /srv -type f -print0 | pbatch hash -0 - > sums.nul
   pbatch list --include '*.log' --max-depth 2 /var/log
   pbatch chmod --files 0644 --dirs 0755 /srv/www
   pbatch chown -n www-data: /srv/www

Run 'pbatch COMMAND --help' for a command's flags and examples.`,
		Version:   versionString(),
		Reader:    stdin,
		Writer:    stdout,
		ErrWriter: stderr,
		// Library defaults print "Incorrect Usage" and the whole help to stdout and
		// call os.Exit; run() maps errors to exit codes instead.
		OnUsageError:              onUsage,
		ExitErrHandler:            func(*cli.Context, error) {},
		DisableSliceFlagSeparator: true,
		UseShortOptionHandling:    true,
		EnableBashCompletion:      true,
		HideHelpCommand:           true,
		CustomAppHelpTemplate:     cli.AppHelpTemplate + "\n" + exitCodesHelp,
		Action: func(c *cli.Context) error {
			if c.Args().Len() == 0 {
				return usagef("", "no command given")
			}
			return usagef("", "unknown command %q", c.Args().First())
		},
	}
	for _, cmd := range append(append(commands(stdin, stdout, stderr), compressCommands(stdin, stdout, stderr)...), completionCommand(stdout)) {
		cmd.OnUsageError = onUsage
		// Commands have no subcommands: a PATH named "help" or "h" is a PATH.
		cmd.HideHelpCommand = true
		cmd.CustomHelpTemplate = cli.CommandHelpTemplate + "\n" + exitCodesHelp
		app.Commands = append(app.Commands, cmd)
	}
	return app
}

// commands is the command table: adding a task means adding an entry here.
func commands(stdin io.Reader, stdout, stderr io.Writer) []*cli.Command {
	var hash struct {
		engineOpts
		algorithm string
		tag       bool
	}
	var list engineOpts
	var chmod struct {
		engineOpts
		files, dirs    string
		allowHardlinks bool
		noPreserveRoot bool
	}
	var chown struct {
		engineOpts
		from           string
		noDeref        bool
		allowHardlinks bool
		noPreserveRoot bool
	}
	metaFlags := func(o *engineOpts, allowHardlinks, noPreserveRoot *bool) []cli.Flag {
		return []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Destination: &o.dryRun,
				Usage: "report what would change, change nothing"},
			&cli.BoolFlag{Name: "allow-hardlinks", Destination: allowHardlinks,
				Usage: "change regular files with several hard links (allowed anyway when fs.protected_hardlinks=1)"},
			&cli.BoolFlag{Name: "no-preserve-root", Destination: noPreserveRoot,
				Usage: "allow '/' as a PATH"},
			&cli.StringFlag{Name: "format", Value: "text", Destination: &o.format,
				Usage: "`FORMAT` of results: text (a line per changed entry) or json (one object per entry)"},
		}
	}
	metaCheck := func(cmd string, o *engineOpts, noPreserveRoot bool) error {
		if err := o.validate(cmd); err != nil {
			return err
		}
		if o.follow {
			return usagef(cmd, "-L/--follow is not supported: %s never follows symlinks", cmd)
		}
		o.dirs, o.meta, o.preserveRoot = true, true, !noPreserveRoot
		return nil
	}
	var execo struct {
		engineOpts
		shell      bool
		timeout    time.Duration
		batch      bool
		lineBuffer bool
	}
	return []*cli.Command{
		checkCommand(stdin, stdout, stderr),
		auditCommand(stdin, stdout, stderr),
		{
			Name:      "hash",
			Usage:     "print a checksum of every file, as sha256sum and friends do",
			ArgsUsage: "PATH…",
			Description: `Output is accepted as is by sha256sum -c (md5sum -c, sha1sum -c, sha512sum -c,
b3sum --check for -a blake3). Each PATH is printed as given, joined with the path
below it. Symlinks are skipped unless -L; FIFOs, sockets and devices are never read.

EXAMPLES:
   pbatch hash -w 8 /var/data > SHA256SUMS && sha256sum -c SHA256SUMS
   pbatch hash -a blake3 -k /srv/a /srv/b > b3.txt
   find /srv -name '*.iso' -print0 | pbatch hash -0 - > sums.nul
   pbatch hash --format json --exclude '*.tmp' /home > manifest.jsonl

ALGORITHMS: ` + tasks.AlgorithmNames(),
			Flags: append(append(engineFlags(&hash.engineOpts), cacheFlags(&hash.engineOpts)...),
				&cli.StringFlag{Name: "algorithm", Aliases: []string{"a"}, Value: "sha256", Destination: &hash.algorithm,
					Usage: "digest `NAME`: " + tasks.AlgorithmNames()},
				&cli.BoolFlag{Name: "tag", Destination: &hash.tag, Usage: "print BSD-style lines: SHA256 (PATH) = HEX"},
				&cli.StringFlag{Name: "format", Value: "text", Destination: &hash.format,
					Usage: "`FORMAT` of results: text (coreutils lines) or json (one object per file)"},
			),
			Action: func(c *cli.Context) error {
				if err := hash.validate("hash"); err != nil {
					return err
				}
				alg, err := tasks.LookupAlgorithm(hash.algorithm)
				if err != nil {
					return usagef("hash", "%s", err)
				}
				if hash.tag && hash.format == "json" {
					return usagef("hash", "--tag and --format json cannot be combined")
				}
				ro, done, err := hash.readOpts(c.Context, "hash", c.Args().Slice(), stderr)
				if err != nil {
					return err
				}
				defer done()
				f := &hashFormat{alg: alg, tag: hash.tag, json: hash.format == "json", null: hash.null}
				return runEngine(c.Context, "hash", c.Args().Slice(), &hash.engineOpts, tasks.NewHash(alg, ro), f, stdin, stdout, stderr)
			},
		},
		{
			Name:      "list",
			Usage:     "print the paths a task would receive (the walker and filters alone)",
			ArgsUsage: "PATH…",
			Description: `Prints every file, symlink and special file below the PATHs that passes the
filters, one per line (NUL-terminated with -0), as a task would receive them.

EXAMPLES:
   pbatch list --include '*.log' --max-depth 2 /var/log
   pbatch list -0 --exclude .git /src | xargs -0 grep -l TODO`,
			Flags: engineFlags(&list),
			Action: func(c *cli.Context) error {
				if err := list.validate("list"); err != nil {
					return err
				}
				list.quiet = true // a path list is for pipelines: no summary
				return runEngine(c.Context, "list", c.Args().Slice(), &list, tasks.List{}, &listFormat{null: list.null}, stdin, stdout, stderr)
			},
		},
		{
			Name:      "exec",
			Usage:     "run a command for each file, output grouped per job",
			ArgsUsage: "PATH… -- COMMAND [ARG…]",
			Description: `Runs COMMAND once per file with at most -w running at once. In any ARG, {} is the
path, {/} its base name, {//} its directory, {.} the path without its last extension,
{/.} the base name without it; with no placeholder the path is appended. A value
that would begin an argument with '-' is given as ./VALUE. No shell is involved
unless --shell: then COMMAND and ARGs form one sh -c script whose first line
copies the values from its parameters into variables pbatch_1, pbatch_2… (names
reserved), each placeholder becomes a quoted reference to its variable (so a
name is never shell code), and a placeholder is refused with the reason inside
single quotes, inside or after what pbatch cannot read exactly ($( ), backquotes,
${ }, <<, $' ', case, [[ ]], (( )), a line continuation: assign it to a variable
first, f={}; … "$f"), after alias, eval, source or $cmd (aliases), or where bash
would evaluate it (let, declare, eval…). A name is never script text and a value
is placed only where pbatch is certain of sh's quoting; the refusals of
evaluating contexts cannot be complete: a script that turns data into code
(eval "$f", compgen -W, PS4, arithmetic on it, an alias) makes it code. With -X
give the command as separate arguments (-- tar czf out.tgz {}) so that only the
argument with {} is repeated; a placeholder in a redirection target is refused
there. Without a placeholder "$@" is appended, only where it lands in a
command's arguments.
Each job's stdout and stderr are captured (past 256 KiB per stream, in an
unlinked file in $TMPDIR) and written as one block, so output never interleaves;
--line-buffer streams whole lines instead (a line over 64 KiB in pieces of at
least 64 KiB). A job that exits while a background process holds its output open
gets one more second, then a note. A non-zero exit, a death by signal or
--timeout marks the file failed; --timeout also kills what the command left
running when it fires. -X passes as many paths to one invocation as the
argument size limit allows (an ARG with a placeholder is repeated per path).

EXAMPLES:
   pbatch exec -w 4 --include '*.png' /srv/img -- optipng -quiet {}
   pbatch exec -X --include '*.log' /var/log -- gzip -9
   pbatch exec --timeout 30s /data -- sh -c 'test -s "$1"' sh {}
   pbatch exec --shell /srv -- 'file {} | grep -q ELF && printf "%s\n" {}'`,
			Flags: append(engineFlags(&execo.engineOpts),
				&cli.BoolFlag{Name: "shell", Destination: &execo.shell, Usage: "run COMMAND ARGs as one sh -c script"},
				&cli.DurationFlag{Name: "timeout", Destination: &execo.timeout,
					Usage: "kill a job (its whole process group) after `DURATION` (e.g. 30s, 5m); the file fails"},
				&cli.BoolFlag{Name: "batch", Aliases: []string{"X"}, Destination: &execo.batch,
					Usage: "pass many paths per invocation, up to the argument size limit"},
				&cli.BoolFlag{Name: "line-buffer", Destination: &execo.lineBuffer,
					Usage: "stream output line by line (whole lines) instead of one block per job"},
				&cli.StringFlag{Name: "format", Value: "text", Destination: &execo.format,
					Usage: "`FORMAT`: text (the commands' output) or json (one object per file with exit status and output)"},
			),
			Action: func(c *cli.Context) error {
				if err := execo.validate("exec"); err != nil {
					return err
				}
				args := c.Args().Slice()
				sep := slices.Index(args, "--")
				if sep < 0 || sep == len(args)-1 {
					return usagef("exec", "missing -- COMMAND after the PATHs")
				}
				if execo.timeout < 0 {
					return usagef("exec", "invalid --timeout %s", execo.timeout)
				}
				if execo.lineBuffer && execo.format == "json" {
					return usagef("exec", "--line-buffer and --format json cannot be combined")
				}
				opt := tasks.ExecOptions{Shell: execo.shell, Timeout: execo.timeout, Batch: execo.batch, ArgMax: argMax()}
				if execo.lineBuffer {
					execo.lines = &tasks.LockedWriter{W: stdout}
					opt.Lines = execo.lines
					opt.ErrLines = &tasks.LockedWriter{W: stderr}
					// Streamed lines bypass the collector, which could not erase
					// the display before them.
					execo.progress = "never"
				}
				t, err := tasks.NewExec(args[sep+1:], opt)
				if err != nil {
					return usagef("exec", "%s", err)
				}
				if execo.batch {
					// Invocations are bounded by ARG_MAX (RunBatch), not by the batch.
					execo.engineOpts.batch = 4096
				} else {
					// One job per batch: a job costs a fork and an exec, and
					// results waiting in the queues, each holding up to
					// tasks.spoolMem per stream and its spool files, stay few.
					execo.engineOpts.batch = 1
				}
				return runEngine(c.Context, "exec", args[:sep], &execo.engineOpts, t,
					&execFormat{json: execo.format == "json"}, stdin, stdout, stderr)
			},
		},
		{
			Name:      "chmod",
			Usage:     "set permission bits, writing only entries whose mode differs",
			ArgsUsage: "MODE PATH…  |  --files MODE --dirs MODE PATH…",
			Description: `MODE is chmod(1)'s: octal (644, 2775) or symbolic (u+rwX,go-w; a=r; g=u), applied to
regular files and directories. --files and --dirs give each type its own mode in one
pass (then no MODE argument). Entries already right get no write (ctime unchanged).
Every change goes through a descriptor of the inode examined, opened beneath its PATH
without following symlinks: symlinks, FIFOs, sockets and devices are left alone,
and files with several hard links are skipped unless allowed. A directory whose new
mode removes the owner's read or search bit is changed after its children. Use --
before a MODE that starts with '-' (pbatch chmod -- -w PATH).

EXAMPLES:
   pbatch chmod --files 0644 --dirs 0755 /srv/www
   pbatch chmod -n go-w /home/shared          # dry run: what would change
   pbatch chmod u+rwX,g+rX,o= --exclude .git /srv/git`,
			Flags: append(append(engineFlags(&chmod.engineOpts),
				&cli.StringFlag{Name: "files", Destination: &chmod.files, Usage: "`MODE` for regular files"},
				&cli.StringFlag{Name: "dirs", Destination: &chmod.dirs, Usage: "`MODE` for directories"},
			), metaFlags(&chmod.engineOpts, &chmod.allowHardlinks, &chmod.noPreserveRoot)...),
			Action: func(c *cli.Context) error {
				if err := metaCheck("chmod", &chmod.engineOpts, chmod.noPreserveRoot); err != nil {
					return err
				}
				var files, dirs *tasks.Mode
				parse := func(s string) (*tasks.Mode, error) {
					m, err := tasks.ParseMode(s)
					if err != nil {
						return nil, usagef("chmod", "%s", err)
					}
					return m, nil
				}
				var err error
				paths := c.Args().Slice()
				if chmod.files != "" || chmod.dirs != "" {
					if chmod.files != "" {
						if files, err = parse(chmod.files); err != nil {
							return err
						}
					}
					if chmod.dirs != "" {
						if dirs, err = parse(chmod.dirs); err != nil {
							return err
						}
					}
				} else {
					if c.Args().Len() == 0 {
						return usagef("chmod", "missing MODE")
					}
					if files, err = parse(c.Args().First()); err != nil {
						return err
					}
					dirs = files
					paths = paths[1:]
				}
				sel, err := chmod.selection("chmod")
				if err != nil {
					return err
				}
				t := tasks.NewChmod(files, dirs, tasks.MetaOptions{DryRun: chmod.dryRun, AllowHardlinks: chmod.allowHardlinks, Select: sel.match()})
				return runEngine(c.Context, "chmod", paths, &chmod.engineOpts, t, &metaFormat{json: chmod.format == "json", null: chmod.null}, stdin, stdout, stderr)
			},
		},
		{
			Name:      "chown",
			Usage:     "set owner and group, writing only entries whose owner differs",
			ArgsUsage: "OWNER[:GROUP] PATH…",
			Description: `OWNER and GROUP are names or numeric ids (+N is always numeric); ":GROUP" changes only
the group, "OWNER:" sets the owner's login group. --from changes only entries whose
current owner (and group) match, as chown(1) does. Entries already right get no write.
Changes go through a descriptor of the inode examined, opened beneath its PATH without
following symlinks; symlinks are skipped unless -h changes the links themselves. The
kernel clears setuid/setgid bits of files whose owner changes; pbatch does not restore them.
(-h means --no-dereference here, as in chown; help is --help.)

EXAMPLES:
   pbatch chown www-data:www-data /srv/www
   pbatch chown --from 1001 alice /home/alice
   pbatch chown -n :staff /srv/shared         # dry run`,
			Flags: append(append(engineFlags(&chown.engineOpts),
				&cli.StringFlag{Name: "from", Destination: &chown.from,
					Usage: "change only entries owned by `CURRENT_OWNER[:GROUP]`"},
				// -h is chown(1)'s --no-dereference; reorderArgs maps it, since -h
				// means --help everywhere else.
				&cli.BoolFlag{Name: "no-dereference", Destination: &chown.noDeref,
					Usage: "change symbolic links themselves (default: skip them); -h as in chown(1)"},
			), metaFlags(&chown.engineOpts, &chown.allowHardlinks, &chown.noPreserveRoot)...),
			Action: func(c *cli.Context) error {
				if err := metaCheck("chown", &chown.engineOpts, chown.noPreserveRoot); err != nil {
					return err
				}
				if c.Args().Len() == 0 {
					return usagef("chown", "missing OWNER[:GROUP]")
				}
				to, err := tasks.ParseOwner(c.Args().First())
				if err != nil {
					return usagef("chown", "%s", err)
				}
				from := tasks.Owner{UID: -1, GID: -1}
				if chown.from != "" {
					if from, err = tasks.ParseOwner(chown.from); err != nil {
						return usagef("chown", "--from: %s", err)
					}
				}
				// With -h a PATH that is a symlink is changed itself, not walked into.
				chown.noFollowRoots = chown.noDeref
				sel, err := chown.selection("chown")
				if err != nil {
					return err
				}
				t := tasks.NewChown(to, from, chown.noDeref, tasks.MetaOptions{DryRun: chown.dryRun, AllowHardlinks: chown.allowHardlinks, Select: sel.match()})
				return runEngine(c.Context, "chown", c.Args().Tail(), &chown.engineOpts, t, &metaFormat{owner: true, json: chown.format == "json", null: chown.null}, stdin, stdout, stderr)
			},
		},
	}
}

// argMax is how many bytes of arguments one exec -X invocation may take: the
// kernel allows a quarter of the stack limit (at most 2 MiB here), less the
// environment and some room, as xargs computes it.
func argMax() int {
	var rl unix.Rlimit
	limit := 128 << 10
	if unix.Getrlimit(unix.RLIMIT_STACK, &rl) == nil && rl.Cur != unix.RLIM_INFINITY {
		limit = int(min(rl.Cur/4, 2<<20))
	} else {
		limit = 2 << 20
	}
	env := 0
	for _, e := range os.Environ() {
		env += len(e) + 1 + 8
	}
	return max(limit-env-4096, 4096)
}

// reorderArgs moves flags given after PATHs (or before the command) to just after
// the command name, so that `pbatch hash /data -w 8` and `pbatch -w 8 hash /data`
// mean `pbatch hash -w 8 /data`, as GNU tools allow; urfave/cli stops parsing at
// the first positional argument. Everything after "--" stays a PATH, and "--" is
// inserted so that PATHs starting with '-' are never read as flags.
func reorderArgs(args []string) []string {
	if len(args) < 2 || args[len(args)-1] == "--generate-bash-completion" {
		return args
	}
	table := append(commands(nil, nil, nil), compressCommands(nil, nil, nil)...)
	byName := map[string]*cli.Command{}
	for _, c := range table {
		byName[c.Name] = c
		for _, a := range c.Aliases {
			byName[a] = c
		}
	}
	// Before the command, any command's flag may appear.
	var all []cli.Flag
	for _, c := range table {
		all = append(all, c.Flags...)
	}
	rest := splitShortValues(args[1:], all)
	var flags []string
	i := 0
	for ; i < len(rest); i++ {
		a := rest[i]
		if a == "--" || !isFlag(a) {
			break
		}
		flags = append(flags, a)
		if takesValue(all, a) && i+1 < len(rest) {
			i++
			flags = append(flags, rest[i])
		}
	}
	if i == len(rest) || rest[i] == "--" {
		return args
	}
	cmd, ok := byName[rest[i]]
	if !ok {
		// Not a command: let the app say so, without tripping on the flags.
		return append([]string{args[0]}, rest[i:]...)
	}
	rest = append(rest[:i+1], splitShortValues(rest[i+1:], cmd.Flags)...)
	if cmd.Name == "check" {
		// coreutils' -w is --warn; pbatch's -w N is --workers: a number decides.
		for j := i + 1; j < len(rest) && rest[j] != "--"; j++ {
			if rest[j] == "-w" && (j+1 == len(rest) || !isNumber(rest[j+1])) {
				rest[j] = "--warn"
			}
		}
	}
	var paths, command []string
	for j := i + 1; j < len(rest); j++ {
		a := rest[j]
		if a == "--" {
			if cmd.Name == "exec" {
				// exec: "--" ends the PATHs too; the rest is the command line.
				command = append([]string{"--"}, rest[j+1:]...)
				break
			}
			paths = append(paths, rest[j+1:]...)
			break
		}
		if !isFlag(a) {
			paths = append(paths, a)
			continue
		}
		flags = append(flags, a)
		if takesValue(cmd.Flags, a) {
			if j+1 == len(rest) {
				// The value is missing: let the flag parser say so, rather
				// than read an inserted "--" as the value.
				return append([]string{args[0], rest[i]}, flags...)
			}
			j++
			flags = append(flags, rest[j])
		}
	}
	for k, f := range flags {
		if f == "-h" && cmd.Name == "chown" {
			flags[k] = "--no-dereference"
		}
		if f == "--help" || f == "-h" && cmd.Name != "chown" {
			// urfave/cli would read a PATH after --help as a help topic.
			return []string{args[0], rest[i], "--help"}
		}
	}
	for k, f := range flags {
		if f == "--cache" {
			flags[k] = "--cache=" + cacheDefault
		}
	}
	out := append([]string{args[0], rest[i]}, flags...)
	out = append(out, "--")
	out = append(out, paths...)
	return append(out, command...)
}

// splitShortValues unbundles short flags as getopt does: "-w8" is "-w" "8", and
// "-qka" is "-q" "-k" "-a" (the value of -a follows); Go's flag package knows
// neither. A group with an unknown letter is left alone, as is everything after "--".
func splitShortValues(args []string, flags []cli.Flag) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) <= 2 || a[0] != '-' || a[1] == '-' || strings.Contains(a, "=") {
			out = append(out, a)
			continue
		}
		var split []string
		for k := 1; k < len(a); k++ {
			f := "-" + a[k:k+1]
			if !isShortFlag(flags, a[k:k+1]) {
				split = nil
				break
			}
			split = append(split, f)
			if takesValue(flags, f) {
				if k+1 < len(a) {
					split = append(split, a[k+1:])
				}
				break
			}
		}
		if split == nil {
			split = []string{a}
		}
		out = append(out, split...)
	}
	return out
}

func isShortFlag(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return name == "h"
}

func isNumber(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

// takesValue reports whether flag a (as typed: -w, --workers, --workers=8) needs
// the next argument as its value.
func takesValue(flags []cli.Flag, a string) bool {
	if a == "--cache" {
		return false // its value is optional: --cache=PATH (see reorderArgs)
	}
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				_, isBool := f.(*cli.BoolFlag)
				return !isBool
			}
		}
	}
	return false
}
