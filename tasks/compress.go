package tasks

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// TempPrefix starts the name of every temporary file compress and decompress
// create, in the directory of the file they work on: ".pbatch-tmp-" followed by
// 12 hex digits. --rm also moves an original to such a name for the instant
// between checking and unlinking it, after its output was made durable. Such
// files are never taken as input. One left by a crash is a partial output,
// except after a crash within that instant: then it is what the original's
// name held, the original (its output complete) or a file renamed over it
// just before.
const TempPrefix = ".pbatch-tmp-"

// bigFile is the size from which one file is compressed on several cores.
const bigFile = 64 << 20

// CompressOptions configure compress and decompress.
type CompressOptions struct {
	Cores    int    // cores one large file may use (the worker count)
	Format   string // gzip or zstd (compress)
	Level    int    // 0: the format's default
	Remove   bool   // --rm: remove the original once the output is durable
	Force    bool   // replace an existing output, by rename only
	DryRun   bool
	NoVerify bool // with --rm, skip decoding the output before removing the original
	Read     ReadOptions
}

// compressedSuffixes are skipped by compress.
var compressedSuffixes = []string{".gz", ".tgz", ".zst", ".xz", ".bz2", ".lz4", ".zip", ".7z"}

var (
	errCompressed    = skipError("skipped: already compressed")
	errTempFile      = skipError("skipped: a pbatch temporary file")
	errNotCompressed = skipError("skipped: no .gz, .tgz or .zst suffix")
	errHardlinkRm    = skipError("skipped: regular file with more than one hard link (--rm would unlink only this name)")
	errSetID         = skipError("skipped: setuid or setgid file (--rm)")
	errOutputExists  = errors.New("exists (use --force to replace it)")
	errNameTooLong   = errors.New("output name would be too long")
	errVerify        = errors.New("verification failed: the output does not decode to the input; original kept")
)

// errOutputCompressed: decompress never replaces a file it would itself take
// as an input (a.gz, the output of a.gz.gz): it is a compressed file, maybe an
// input of the same run.
var errOutputCompressed = errors.New("exists and has a suffix decompress takes (.gz, .tgz or .zst): kept, --force never replaces such a file")

// errAppeared: --force replaces only a file it checked (replaceable).
var errAppeared = errors.New("appeared while the input was being processed: kept, --force replaces only an output it found before")

// errOwnOutput: an output of this run met again by the walk.
var errOwnOutput = skipError("skipped: an output of this run")

// errWrittenThisRun: names that differ in the case of their suffix, or .tgz
// and .tar.gz, decompress to one name.
var errWrittenThisRun = errors.New("was written by this run from another input: kept, --force replaces only outputs that existed before the run")

// Compress compresses (or, Decompress, decompresses) each regular file next to
// itself, never leaving a partial file under the final name and never removing
// an original before its replacement is durable.
type Compress struct {
	opt        CompressOptions
	decompress bool
	bigSlot    chan struct{} // held by the worker using the multi-core encoder

	// The outputs this run published that it must know again, by inode:
	//   - with --force, every output, so that a later input with the same
	//     output name (f.gz and f.zst, t.tgz and t.tar.gz) fails instead of
	//     replacing one (rule 20); without --force the no-replace rename
	//     alone keeps that rule;
	//   - in decompress, every output whose own name decompress takes
	//     (a.gz from a.gz.gz), so that the walk, which may list it after it
	//     appeared, never decompresses it again in the same run. Compress
	//     needs none: its outputs all carry a suffix it skips.
	// An entry is added before the rename that makes the name visible, so a
	// worker that opens the output finds it. pubMu also makes each forced
	// check-and-rename one step as far as the other workers are concerned.
	// It grows by about 40 bytes per recorded output; any is set once the
	// first is, so that decompress looks up only then.
	pubMu     sync.Mutex
	published map[fileID]struct{}
	any       atomic.Bool
}

type fileID struct{ dev, ino uint64 }

// NewCompress validates the options of compress.
func NewCompress(opt CompressOptions) (*Compress, error) {
	switch opt.Format {
	case "gzip":
		if opt.Level == 0 {
			opt.Level = 6
		}
		if opt.Level < 1 || opt.Level > 9 {
			return nil, fmt.Errorf("invalid gzip level %d: 1 to 9", opt.Level)
		}
	case "zstd":
		if opt.Level == 0 {
			opt.Level = 3
		}
		if opt.Level < 1 || opt.Level > 22 {
			return nil, fmt.Errorf("invalid zstd level %d: 1 to 22", opt.Level)
		}
	default:
		return nil, fmt.Errorf("invalid format %q: gzip or zstd", opt.Format)
	}
	return &Compress{opt: opt, bigSlot: make(chan struct{}, 1), published: map[fileID]struct{}{}}, nil
}

// NewDecompress returns the decompress task; the format comes from each file.
func NewDecompress(opt CompressOptions) *Compress {
	return &Compress{opt: opt, decompress: true, bigSlot: make(chan struct{}, 1), published: map[fileID]struct{}{}}
}

// FDsPerWorker: the input, its directory, the temp file, and the temp file
// opened again to verify it.
func (t *Compress) FDsPerWorker() int { return 4 }

func (t *Compress) NewWorker() Worker {
	return &compressWorker{t: t, buf: make([]byte, ReadBufSize), rd: newReader(t.opt.Read)}
}

type compressWorker struct {
	t   *Compress
	buf []byte
	rd  reader // for the rate limit

	gzw *gzip.Writer
	zw  *zstd.Encoder
	// For one large file, encoders that split it into blocks compressed on
	// several cores: the other workers are idle when few large files remain.
	pgzw *pgzip.Writer
	bzw  *zstd.Encoder
	dec  decoders
	hash *xxhash.Digest

	xattrs []byte // the input's xattr names, reused
}

// zstdLevel maps 1–22 onto the encoder's four speeds (as zstd's CLI levels
// roughly correspond: 1 fastest, 3 default, 7 better, 11+ best).
func zstdLevel(l int) zstd.EncoderLevel {
	switch {
	case l <= 2:
		return zstd.SpeedFastest
	case l <= 6:
		return zstd.SpeedDefault
	case l <= 10:
		return zstd.SpeedBetterCompression
	}
	return zstd.SpeedBestCompression
}

func hasSuffixFold(name string, suffixes ...string) (string, bool) {
	lower := strings.ToLower(name)
	for _, s := range suffixes {
		if strings.HasSuffix(lower, s) && len(name) > len(s) {
			return s, true
		}
	}
	return "", false
}

// decompressSuffixes are the suffixes decompress takes.
var decompressSuffixes = []string{".gz", ".tgz", ".zst"}

// isInputName: out is a name decompress takes as input, so an output of that
// name could be met again by this run's walk, and an existing file of that name
// is a compressed file.
func (t *Compress) isInputName(out string) bool {
	if !t.decompress {
		return false
	}
	_, ok := hasSuffixFold(out, decompressSuffixes...)
	return ok
}

// record: whether publish must remember the output named out.
func (t *Compress) record(out string) bool { return t.opt.Force || t.isInputName(out) }

// outputName is the name compress or decompress writes for name.
func (t *Compress) outputName(name string) (string, string, error) {
	if !t.decompress {
		suf := ".gz"
		if t.opt.Format == "zstd" {
			suf = ".zst"
		}
		return name + suf, t.opt.Format, nil
	}
	suf, ok := hasSuffixFold(name, decompressSuffixes...)
	if !ok {
		return "", "", errNotCompressed
	}
	out := name[:len(name)-len(suf)]
	switch suf {
	case ".tgz":
		return out + ".tar", "gzip", nil
	case ".gz":
		return out, "gzip", nil
	}
	return out, "zstd", nil
}

func (w *compressWorker) Run(ctx context.Context, e *walker.Entry, r *Result) {
	if fromWalk(e, r) {
		return
	}
	t := w.t
	base := e.Rel
	if base == "" {
		base = e.Root.Path
	}
	base = base[strings.LastIndexByte(base, '/')+1:]
	if strings.HasPrefix(base, TempPrefix) {
		r.Status, r.Err = Skipped, errTempFile
		return
	}
	if _, ok := hasSuffixFold(base, compressedSuffixes...); ok && !t.decompress {
		r.Status, r.Err = Skipped, errCompressed
		return
	}
	out, format, err := t.outputName(base)
	if err != nil {
		r.Status, r.Err = Skipped, err
		return
	}
	r.Output = out
	if len(out) > 255 {
		r.Status, r.Err = Failed, errNameTooLong
		return
	}

	dirfd, name, err := e.OpenParent()
	if err != nil {
		if r.Status, r.Err = statusOf(e, err); r.Status == Failed {
			r.Err = fmt.Errorf("cannot open its directory: %w", r.Err)
		}
		return
	}
	defer unix.Close(dirfd)
	in, err := openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY)
	if err != nil {
		if r.Status, r.Err = statusOf(e, err); r.Status == Failed {
			r.Err = fmt.Errorf("cannot open it: %w", r.Err)
		}
		if err == unix.ELOOP {
			r.Status, r.Err = Skipped, skipReason(walker.Symlink)
		}
		return
	}
	defer unix.Close(in)
	var before unix.Stat_t
	if err := unix.Fstat(in, &before); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("cannot stat it: %w", err)
		return
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		r.Status, r.Err = Skipped, skipReason(typeOf(before.Mode))
		return
	}
	// What is compressed and, with --rm, removed is this inode, not the
	// one the walk selected under its name.
	if unselected(t.opt.Read.Select, &before, r) {
		return
	}
	r.Mtime = before.Mtim
	if t.decompress && t.any.Load() && t.publishedHere(&before) {
		r.Status, r.Err = Skipped, errOwnOutput
		return
	}
	if t.opt.Remove && before.Nlink > 1 {
		r.Status, r.Err = Skipped, errHardlinkRm
		return
	}
	if t.opt.Remove && before.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		r.Status, r.Err = Skipped, errSetID
		return
	}
	xattrs, err := listXattrs(in, w.xattrs[:0])
	if err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("cannot list its extended attributes: %w", err)
		return
	}
	w.xattrs = xattrs
	if t.opt.Remove {
		if x := uncarried(xattrs); x != "" {
			r.Status, r.Err = Skipped, skipError("skipped: carries "+x+", which the output would not (--rm would lose it)")
			return
		}
	}
	// An existing output (file, symlink, dangling symlink, directory) is never
	// opened or followed. The renames in publish are the real guard; this only
	// saves the work.
	var ost unix.Stat_t
	if err := unix.Fstatat(dirfd, out, &ost, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if err := t.replaceable(dirfd, dirPath(e), out, &ost, &before, false); err != nil {
			r.Status, r.Err = Failed, err
			return
		}
	}
	if t.decompress {
		if err := sniff(in, format); err != nil {
			r.Status, r.Err = Failed, err
			return
		}
	}
	dir := dirPath(e)
	if t.opt.DryRun {
		r.Size = before.Size
		return
	}
	if err := publishable(dirfd); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("cannot write in %s: %w", dir, err)
		return
	}

	tmp, tfd, err := createTemp(dirfd)
	if err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("cannot create a temporary file in %s: %w", dir, err)
		return
	}
	published := false
	defer func() {
		if !published {
			if err := unix.Unlinkat(dirfd, tmp, 0); err != nil && err != unix.ENOENT {
				// Left behind: say where, and free its space if it is still open.
				what := "left behind"
				if tfd >= 0 && unix.Ftruncate(tfd, 0) == nil {
					what = "left behind, emptied"
				}
				r.Err = fmt.Errorf("%v; temporary file %s %s: cannot remove it: %w", r.Err, joinPath(dir, tmp), what, err)
			}
		}
		if tfd >= 0 {
			unix.Close(tfd)
		}
	}()

	sum, n, outSize, err := w.transform(ctx, in, tfd, format)
	if err != nil {
		r.Status, r.Err = Failed, ioErr(err, dir)
		return
	}
	r.Size, r.OutSize = n, outSize
	var after unix.Stat_t
	if err := unix.Fstat(in, &after); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("cannot stat it after reading: %w", err)
		return
	}
	if before.Size != after.Size || before.Mtim != after.Mtim || before.Ctim != after.Ctim {
		r.Status, r.Err = Changed, errors.New("file changed while being read: kept, no output written")
		return
	}
	// st_size is not trusted to end the read (procfs says 0), but an unchanged
	// file that gave fewer bytes than it holds was cut short by the file system
	// (FUSE, a network share): its output would be a truncated copy.
	if n < before.Size {
		r.Status, r.Err = Failed, fmt.Errorf("read ended after %d of its %d bytes: kept, no output written", n, before.Size)
		return
	}
	if err := copyMetadata(in, tfd, &before, xattrs); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("cannot copy metadata to the temporary file %s: %w", joinPath(dir, tmp), err)
		return
	}
	if t.opt.Remove && !t.opt.NoVerify && !t.decompress {
		// Decode what is on disk and compare with what was read: only then may
		// the original go. (Decompress verifies as it decodes: CRC and size.)
		if err := w.verify(ctx, tfd, format, sum, n); err != nil {
			r.Status, r.Err = Failed, err
			return
		}
	}
	var tst unix.Stat_t // to know the output as this run's
	if t.record(out) {
		if err := unix.Fstat(tfd, &tst); err != nil {
			r.Status, r.Err = Failed, fmt.Errorf("cannot stat the temporary file %s: %w", joinPath(dir, tmp), err)
			return
		}
	}
	if err := fsync(tfd); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("cannot fsync the temporary file %s: %w", joinPath(dir, tmp), err)
		return
	}
	if err := unix.Close(tfd); err != nil {
		tfd = -1
		r.Status, r.Err = Failed, fmt.Errorf("cannot close the temporary file %s: %w", joinPath(dir, tmp), err)
		return
	}
	tfd = -1
	if err := t.publish(dirfd, dir, tmp, out, fileID{tst.Dev, tst.Ino}, &before); err != nil {
		r.Status, r.Err = Failed, err
		return
	}
	published = true
	if err := fsync(dirfd); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("cannot fsync the directory %s: %w", dir, err)
		return
	}
	if !t.opt.Remove {
		return
	}
	if r.Status, r.Err = removeOriginal(dirfd, name, in, &before, xattrs, dir); r.Err != nil {
		return
	}
	if err := fsync(dirfd); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("cannot fsync the directory %s: %w", dir, err)
	}
}

// dirPath is the directory of e as the user named it, for messages.
func dirPath(e *walker.Entry) string {
	p := e.Path()
	switch i := strings.LastIndexByte(p, '/'); i {
	case -1:
		return "."
	case 0:
		return "/"
	default:
		return p[:i]
	}
}

func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

const (
	fsImmutableFL = 0x10 // FS_IMMUTABLE_FL, chattr +i
	fsAppendFL    = 0x20 // FS_APPEND_FL, chattr +a
)

// publishable fails for a directory whose attributes forbid renaming a file
// into it (append-only, immutable), before a whole temporary file is written
// that could then be neither published nor removed. A filesystem without
// these attributes answers ENOTTY or EOPNOTSUPP: nothing to check there.
func publishable(dirfd int) error {
	flags, err := unix.IoctlGetUint32(dirfd, unix.FS_IOC_GETFLAGS)
	switch {
	case err != nil:
		return nil
	case flags&fsImmutableFL != 0:
		return errors.New("the directory is immutable (chattr +i)")
	case flags&fsAppendFL != 0:
		return errors.New("the directory is append-only (chattr +a): no file can be renamed into it or removed")
	}
	return nil
}

// readError and writeError tell which side of a transform failed, so that
// the message names it.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// ioErr names the operation of a failed transform: reading the input or
// writing the temporary file in dir. Decoder and encoder errors pass as they
// are.
func ioErr(err error, dir string) error {
	var re *readError
	var we *writeError
	switch {
	case errors.As(err, &we):
		return fmt.Errorf("cannot write the temporary file in %s: %w", dir, we.err)
	case errors.As(err, &re):
		return fmt.Errorf("cannot read it: %w", re.err)
	}
	return err
}

// publish renames the finished temporary file tmp, the inode id, to out, the
// output of the input in. The rename never replaces anything, except with
// --force an existing out that replaceable allows: the check and the rename
// are one step for the other workers (pubMu), and nothing but a worker of this
// run makes an output this run wrote, so the inode replaced is never one of
// those. When --force finds no out, there is nothing it was asked to replace:
// a file that appears meanwhile is kept too.
func (t *Compress) publish(dirfd int, dir, tmp, out string, id fileID, in *unix.Stat_t) error {
	renameErr := func(err error) error {
		switch {
		case err == unix.EEXIST && t.isInputName(out):
			return fmt.Errorf("output %s %w", quoteOut(out), errOutputCompressed)
		case err == unix.EEXIST && t.opt.Force:
			return fmt.Errorf("output %s %w", quoteOut(out), errAppeared)
		case err == unix.EEXIST:
			return fmt.Errorf("output %s %w", quoteOut(out), errOutputExists)
		}
		return fmt.Errorf("cannot rename the temporary file %s to %s: %w", joinPath(dir, tmp), quoteOut(out), err)
	}
	rec := t.record(out)
	if rec {
		t.pubMu.Lock()
		defer t.pubMu.Unlock()
	}
	flags := uint(unix.RENAME_NOREPLACE)
	if t.opt.Force {
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, out, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
			if err := t.replaceable(dirfd, dir, out, &st, in, true); err != nil {
				return err
			}
			flags = 0
		}
	}
	if rec {
		// Before the name is visible: a worker that opens it must know it.
		t.published[id] = struct{}{}
		t.any.Store(true)
	}
	if err := unix.Renameat2(dirfd, tmp, dirfd, out, flags); err != nil {
		if rec {
			delete(t.published, id)
		}
		return renameErr(err)
	}
	return nil
}

// replaceable says why the existing file st, named out, may not be replaced
// by the output of the input in, or returns nil. locked: pubMu is held.
func (t *Compress) replaceable(dirfd int, dir, out string, st, in *unix.Stat_t, locked bool) error {
	switch {
	case t.isInputName(out):
		return fmt.Errorf("output %s %w", quoteOut(out), errOutputCompressed)
	case !t.opt.Force:
		return fmt.Errorf("output %s %w", quoteOut(out), errOutputExists)
	case locked && t.publishedLocked(st), !locked && t.publishedHere(st):
		return fmt.Errorf("output %s %w", quoteOut(out), errWrittenThisRun)
	}
	return stickyRule(dirfd, dir, out, st, in)
}

// stickyRule applies the kernel's rule for a sticky directory (only the
// entry's owner, the directory's owner or root may remove or rename over an
// entry) on behalf of the input's owner. pbatch runs as root, which the kernel
// lets replace anything: without this, a user could have another user's file
// in /tmp replaced by content of theirs (their f.gz decompressed over f).
func stickyRule(dirfd int, dir, out string, st, in *unix.Stat_t) error {
	var d unix.Stat_t
	if err := unix.Fstat(dirfd, &d); err != nil {
		return fmt.Errorf("cannot stat the directory %s: %w", dir, err)
	}
	if d.Mode&unix.S_ISVTX == 0 || in.Uid == 0 || st.Uid == in.Uid || d.Uid == in.Uid {
		return nil
	}
	return fmt.Errorf("output %s belongs to uid %d in the sticky directory %s, where the input's owner (uid %d) may not replace it: kept",
		quoteOut(out), st.Uid, dir, in.Uid)
}

func (t *Compress) publishedHere(st *unix.Stat_t) bool {
	t.pubMu.Lock()
	defer t.pubMu.Unlock()
	return t.publishedLocked(st)
}

func (t *Compress) publishedLocked(st *unix.Stat_t) bool {
	_, ok := t.published[fileID{st.Dev, st.Ino}]
	return ok
}

// removeOriginal removes name, the input read through in with the metadata
// before, from dirfd, and only that inode: a file renamed over the name since
// (an editor's save, a log rotation) is kept. Checking the name and then
// unlinking it would delete whatever the name holds by then, so the name is
// first renamed to a private one (the temporary-file pattern, no-replace),
// the inode behind that checked, and only then unlinked; a different inode
// is put back (beside the name, KeptInfix, if the name was taken again). The
// rename changes the ctime, so the ctime is checked through the descriptor
// just before it, and the mode, owner, links and xattrs after it; xattrs
// lists the names read with the input.
func removeOriginal(dirfd int, name string, in int, before *unix.Stat_t, xattrs []byte, dir string) (Status, error) {
	// From the rename to the unlink or the rename back, the name is elsewhere:
	// a second signal, which ends the process at once, waits for this.
	removing.RLock()
	defer removing.RUnlock()
	var now unix.Stat_t
	if err := unix.Fstat(in, &now); err != nil || !sameContent(&now, before) || now.Ctim != before.Ctim {
		if err == nil && now.Nlink == 0 {
			return Changed, errors.New("file replaced or removed after it was read: nothing removed, output kept")
		}
		return Changed, errors.New("file changed after it was read: original kept next to the output")
	}
	var priv string
	for range 100 {
		priv = tempName()
		err := unix.Renameat2(dirfd, name, dirfd, priv, unix.RENAME_NOREPLACE)
		if err == nil {
			break
		}
		if err == unix.EEXIST {
			priv = ""
			continue
		}
		if err == unix.ENOENT {
			return Changed, errors.New("file vanished after it was read: nothing removed, output kept")
		}
		return Failed, fmt.Errorf("cannot remove it (output kept): cannot rename it to %s: %w", joinPath(dir, priv), err)
	}
	if priv == "" {
		return Failed, errors.New("cannot remove it (output kept): no free temporary name")
	}
	var got unix.Stat_t
	status := Changed
	err := unix.Fstatat(dirfd, priv, &got, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil || got.Dev != before.Dev || got.Ino != before.Ino || !sameContent(&got, before) {
		err = errors.New("file replaced after it was read: the new file is kept, and the output of the old one")
	} else if status, err = changedMeta(in, &got, before, xattrs); err == nil {
		if err = unix.Unlinkat(dirfd, priv, 0); err == nil {
			return OK, nil
		}
		status, err = Failed, fmt.Errorf("cannot remove it (output kept): %w", err)
	}
	return status, putBack(dirfd, dir, priv, name, err)
}

// changedMeta checks the original, now under its private name, against what
// was read. Our rename changed its ctime, so a chmod u+s, chown, link or
// setcap made since the descriptor's check shows only in the fields
// themselves; a file that became setuid, setgid or hard-linked is kept as
// --rm would have skipped it, and one given file capabilities as --rm would
// have refused it (uncarried).
func changedMeta(in int, got, before *unix.Stat_t, xattrs []byte) (Status, error) {
	const kept = " after it was read: original kept next to the output"
	switch {
	case got.Mode&(unix.S_ISUID|unix.S_ISGID) != 0:
		return Changed, errors.New("file became setuid or setgid" + kept)
	case got.Nlink > 1:
		return Changed, errors.New("file was given another hard link" + kept)
	case got.Mode != before.Mode || got.Uid != before.Uid || got.Gid != before.Gid || got.Nlink != before.Nlink:
		return Changed, errors.New("file's mode or owner changed" + kept)
	}
	list, err := listXattrs(in, nil)
	if err != nil {
		return Failed, fmt.Errorf("cannot list its extended attributes again (output kept, original kept): %w", err)
	}
	if x := uncarried(list); x != "" {
		return Changed, errors.New("file was given " + x + kept)
	}
	if !bytes.Equal(list, xattrs) {
		return Changed, errors.New("file's extended attributes changed" + kept)
	}
	return OK, nil
}

// KeptInfix names a file that removeOriginal took from the original's name
// and could not put back because the name was taken again meanwhile:
// NAME.pbatch-kept-XXXXXX. It is an ordinary file for later runs, unlike the
// TempPrefix pattern they skip.
const KeptInfix = ".pbatch-kept-"

// putBack renames priv back to name, the removal having been refused for
// why. If name was taken again meanwhile, priv goes to a visible name of its
// own beside it.
func putBack(dirfd int, dir, priv, name string, why error) error {
	err := unix.Renameat2(dirfd, priv, dirfd, name, unix.RENAME_NOREPLACE)
	if err == nil {
		return why
	}
	if err != unix.EEXIST {
		return fmt.Errorf("%v; it is now %s: cannot rename it back to its name: %w", why, joinPath(dir, priv), err)
	}
	var kerr error
	for range 100 {
		kept := keptName(name)
		kerr = unix.Renameat2(dirfd, priv, dirfd, kept, unix.RENAME_NOREPLACE)
		if kerr == nil {
			return fmt.Errorf("%v; its name was taken again meanwhile: it is now %s", why, quoteOut(joinPath(dir, kept)))
		}
		if kerr != unix.EEXIST {
			break
		}
	}
	return fmt.Errorf("%v; it is now %s: cannot rename it back to its name: %w, nor to %s*: %w",
		why, joinPath(dir, priv), err, name+KeptInfix, kerr)
}

// keptName is name + KeptInfix + 6 hex digits, name cut to fit 255 bytes.
func keptName(name string) string {
	var b [3]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	suffix := KeptInfix + hex.EncodeToString(b[:])
	if len(name)+len(suffix) > 255 {
		name = name[:255-len(suffix)]
	}
	return name + suffix
}

// removing is held (shared) by every removal in progress.
var removing sync.RWMutex

// HoldRemovals waits, at most timeout, for the removals of originals in
// progress to end, and keeps new ones from starting: the process is about to
// exit at once (a second signal), and must not leave an original, or a file
// renamed over it, under a temporary name.
func HoldRemovals(timeout time.Duration) {
	held := make(chan struct{})
	go func() {
		removing.Lock()
		close(held)
	}()
	select {
	case <-held:
	case <-time.After(timeout):
	}
}

func sameContent(a, b *unix.Stat_t) bool {
	return a.Size == b.Size && a.Mtim == b.Mtim
}

func statusOf(e *walker.Entry, err error) (Status, error) {
	err = walker.OpenErr(e, err, false)
	if err == walker.ErrVanished {
		return Vanished, err
	}
	return Failed, err
}

func openat(dirfd int, name string, flags int) (int, error) {
	return walker.RetryOpen(func() (int, error) { return unix.Openat(dirfd, name, flags, 0) })
}

func fsync(fd int) error {
	for {
		err := unix.Fsync(fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// createTemp creates TempPrefix + 12 hex digits in dirfd: O_EXCL so nothing
// existing is ever opened, O_NOFOLLOW, mode 0600 until the metadata is copied.
func createTemp(dirfd int) (string, int, error) {
	for range 100 {
		name := tempName()
		fd, err := walker.RetryOpen(func() (int, error) {
			return unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		})
		if err == unix.EEXIST {
			continue
		}
		return name, fd, err
	}
	return "", -1, errors.New("cannot create a temporary file")
}

// tempName is a fresh name of the TempPrefix pattern.
func tempName() string {
	var b [6]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return TempPrefix + hex.EncodeToString(b[:])
}

// fdWriter writes to a descriptor, checking every write (ENOSPC, EDQUOT, EFBIG,
// EIO all end the file).
type fdWriter struct {
	fd int
	n  int64
}

func (w *fdWriter) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		k, err := unix.Write(w.fd, p[done:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, &writeError{err}
		}
		done += k
		w.n += int64(k)
	}
	return done, nil
}

// fdReader reads a descriptor from its current offset.
type fdReader struct {
	ctx context.Context
	fd  int
	rd  *reader
	n   int64
}

func (r *fdReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	for {
		k, err := unix.Read(r.fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &readError{err}
		}
		if k == 0 {
			return 0, io.EOF
		}
		if r.rd != nil && r.rd.Limit != nil {
			if err := r.rd.Limit.WaitN(r.ctx, k); err != nil {
				return 0, err
			}
		}
		r.n += int64(k)
		return k, nil
	}
}

// transform writes the (de)compressed content of in to out and returns an xxh64
// of the uncompressed data, the bytes read and the bytes written.
func (w *compressWorker) transform(ctx context.Context, in, out int, format string) (uint64, int64, int64, error) {
	if w.hash == nil {
		w.hash = xxhash.New()
	}
	w.hash.Reset()
	src := &fdReader{ctx: ctx, fd: in, rd: &w.rd}
	dst := &fdWriter{fd: out}
	var err error
	if w.t.decompress {
		if _, err := w.dec.decode(src, dst, w.hash, format); err != nil {
			if err = decodeErr(err, format); !isIOErr(err) {
				err = fmt.Errorf("decompress: %w", err)
			}
			return 0, 0, 0, err
		}
		return w.hash.Sum64(), src.n, dst.n, nil
	}
	var enc io.WriteCloser
	var st unix.Stat_t
	big := w.t.opt.Cores > 1 && unix.Fstat(in, &st) == nil && st.Size >= bigFile
	if big {
		// One large file at a time gets the multi-core encoder: its buffers
		// are large, and a second would only compete for the same cores.
		select {
		case w.t.bigSlot <- struct{}{}:
			defer func() { <-w.t.bigSlot }()
		default:
			big = false
		}
	}
	switch {
	case big && format == "gzip":
		if w.pgzw == nil {
			w.pgzw, err = pgzip.NewWriterLevel(dst, w.t.opt.Level)
			if err == nil {
				err = w.pgzw.SetConcurrency(1<<20, 2*w.t.opt.Cores)
			}
		} else {
			w.pgzw.Reset(dst)
		}
		enc = w.pgzw
	case big:
		if w.bzw == nil {
			// The parallel encoder keeps about 3×Cores jobs of 4×window
			// bytes (input and output) in flight: a 2 MiB window took the
			// whole run to 150 MiB RSS. 256 KiB keeps it under 64 MiB with
			// the same speed and 0.8% smaller output on the log corpus
			// (bench/compress.sh).
			// Higher levels (-l 7 and up) keep the 2 MiB window: they are
			// asked for ratio, and may use more memory.
			window := 256 << 10
			if zstdLevel(w.t.opt.Level) > zstd.SpeedDefault {
				window = 2 << 20
			}
			w.bzw, err = zstd.NewWriter(dst, zstd.WithEncoderLevel(zstdLevel(w.t.opt.Level)),
				zstd.WithEncoderConcurrency(w.t.opt.Cores), zstd.WithConcurrentBlocks(true),
				zstd.WithWindowSize(window), zstd.WithLowerEncoderMem(true))
		} else {
			w.bzw.Reset(dst)
		}
		enc = w.bzw
	case format == "gzip":
		if w.gzw == nil {
			w.gzw, err = gzip.NewWriterLevel(dst, w.t.opt.Level)
		} else {
			w.gzw.Reset(dst)
		}
		enc = w.gzw
	default:
		if w.zw == nil {
			// Not WithLowerEncoderMem: it costs a third of the throughput.
			w.zw, err = zstd.NewWriter(dst, zstd.WithEncoderLevel(zstdLevel(w.t.opt.Level)),
				zstd.WithEncoderConcurrency(1))
		} else {
			w.zw.Reset(dst)
		}
		enc = w.zw
	}
	if err != nil {
		return 0, 0, 0, err
	}
	for {
		k, rerr := src.Read(w.buf)
		if k > 0 {
			w.hash.Write(w.buf[:k])
			if _, err := enc.Write(w.buf[:k]); err != nil {
				return 0, 0, 0, err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, 0, 0, rerr
		}
	}
	if err := enc.Close(); err != nil {
		return 0, 0, 0, err
	}
	return w.hash.Sum64(), src.n, dst.n, nil
}

// verify decodes the output file from its start and compares with the
// input's hash and size: what is checked is what was written to the file, not
// what the encoder was given.
func (w *compressWorker) verify(ctx context.Context, fd int, format string, want uint64, size int64) error {
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	src := &fdReader{ctx: ctx, fd: fd}
	h := xxhash.New()
	n, err := w.dec.decode(src, nil, h, format)
	if err != nil {
		if err = decodeErr(err, format); isIOErr(err) {
			return fmt.Errorf("verify: reading the output: %w", err)
		}
		return fmt.Errorf("%w (%v)", errVerify, err)
	}
	if n != size || h.Sum64() != want {
		return errVerify
	}
	return nil
}

// copyMetadata gives the output the input's owner, group, user xattrs, POSIX
// ACL, permission bits (special bits dropped), and atime and mtime to the
// nanosecond, all through descriptors; xattrs lists the input's xattr names.
// The output was created 0600 and stays so until owner, xattrs and ACL are in
// place, the mode last: before that, a mode such as 0640 would let the owning
// group read for a moment what the input's ACL (group::---) denies it.
// Setting an ACL also sets the permission bits it implies, and the input's
// bits are those, so the chmod after it leaves the ACL as the input's.
// Ownership first: a later chown would clear bits; times last: the other
// calls change ctime only.
func copyMetadata(in, out int, st *unix.Stat_t, xattrs []byte) error {
	if err := unix.Fchown(out, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("cannot set the owner: %w", err)
	}
	// A default ACL on the directory gave the new file an access ACL (inert
	// under mode 0600); the chmod below would widen its mask. Only the
	// input's own ACL may apply.
	if err := unix.Fremovexattr(out, aclAccess); err != nil &&
		err != unix.ENODATA && err != unix.ENOTSUP && err != unix.EOPNOTSUPP {
		return fmt.Errorf("cannot remove the inherited ACL: %w", err)
	}
	if err := copyXattrs(in, out, xattrs); err != nil {
		return err
	}
	if err := unix.Fchmod(out, st.Mode&0o777); err != nil {
		return fmt.Errorf("cannot set the mode: %w", err)
	}
	if err := futimens(out, &[2]unix.Timespec{st.Atim, st.Mtim}); err != nil {
		return fmt.Errorf("cannot set the times: %w", err)
	}
	return nil
}

const aclAccess = "system.posix_acl_access"

// listXattrs appends the NUL-terminated names of fd's extended attributes to
// buf. A filesystem without xattrs has none.
func listXattrs(fd int, buf []byte) ([]byte, error) {
	for range 10 { // then something keeps adding xattrs: give up
		size, err := unix.Flistxattr(fd, nil)
		if err == unix.ENOTSUP || err == unix.EOPNOTSUPP || size == 0 {
			return buf[:0], nil
		}
		if err != nil {
			return buf[:0], err
		}
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		size, err = unix.Flistxattr(fd, buf[:size])
		if err == unix.ERANGE {
			continue // one was added meanwhile
		}
		if err != nil {
			return buf[:0], err
		}
		return buf[:size], nil
	}
	return buf[:0], unix.ERANGE
}

func xattrNames(list []byte) iter.Seq[string] {
	return func(yield func(string) bool) {
		for len(list) > 0 {
			i := bytes.IndexByte(list, 0)
			if i < 0 {
				i = len(list)
			}
			if i > 0 && !yield(string(list[:i])) {
				return
			}
			list = list[min(i+1, len(list)):]
		}
	}
}

// carried: the xattrs the output gets (the input's user xattrs and ACL).
func carried(name string) bool {
	return strings.HasPrefix(name, "user.") || name == aclAccess
}

// uncarried names the first xattr of list that the output would not get and
// that --rm would therefore lose with the original: file capabilities and
// trusted.* (both grant or record privilege, as setuid bits do, which the
// output does not carry either), other security.* labels, NFSv4 ACLs. Not
// security.selinux: the kernel labels every new file by policy, as it does
// the output of cp or gzip; refusing it would refuse every file on an
// SELinux system.
func uncarried(list []byte) string {
	for name := range xattrNames(list) {
		if carried(name) || name == "security.selinux" {
			continue
		}
		if name == "security.capability" {
			return "file capabilities (security.capability)"
		}
		return "the extended attribute " + strconv.Quote(name)
	}
	return ""
}

func copyXattrs(in, out int, list []byte) error {
	var val []byte
	for name := range xattrNames(list) {
		if !carried(name) {
			continue
		}
		for try := 0; ; try++ {
			n, err := unix.Fgetxattr(in, name, nil)
			if err == unix.ENODATA {
				break // removed since it was listed
			}
			if err != nil {
				return fmt.Errorf("cannot read xattr %s: %w", name, err)
			}
			if cap(val) < n {
				val = make([]byte, n)
			}
			if n, err = unix.Fgetxattr(in, name, val[:n]); err == unix.ERANGE && try < 10 {
				continue // grown meanwhile
			} else if err != nil {
				return fmt.Errorf("cannot read xattr %s: %w", name, err)
			}
			if err := unix.Fsetxattr(out, name, val[:n], 0); err != nil {
				return fmt.Errorf("cannot set xattr %s: %w", name, err)
			}
			break
		}
	}
	return nil
}

// quoteOut quotes an output name for a message when it holds anything but
// printable ASCII.
func quoteOut(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f || s[i] == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}
