package tasks

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// TempPrefix starts the name of every temporary file compress and decompress
// create, in the directory of the file they work on: ".pbatch-tmp-" followed by
// 12 hex digits. Such files are never taken as input, and one left by a crash
// can be removed safely.
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

// Compress compresses (or, Decompress, decompresses) each regular file next to
// itself, never leaving a partial file under the final name and never removing
// an original before its replacement is durable.
type Compress struct {
	opt        CompressOptions
	decompress bool
	bigSlot    chan struct{} // held by the worker using the multi-core encoder
}

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
	return &Compress{opt: opt, bigSlot: make(chan struct{}, 1)}, nil
}

// NewDecompress returns the decompress task; the format comes from each file.
func NewDecompress(opt CompressOptions) *Compress {
	return &Compress{opt: opt, decompress: true, bigSlot: make(chan struct{}, 1)}
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

// outputName is the name compress or decompress writes for name.
func (t *Compress) outputName(name string) (string, string, error) {
	if !t.decompress {
		suf := ".gz"
		if t.opt.Format == "zstd" {
			suf = ".zst"
		}
		return name + suf, t.opt.Format, nil
	}
	suf, ok := hasSuffixFold(name, ".gz", ".tgz", ".zst")
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
		r.Status, r.Err = statusOf(e, err)
		return
	}
	defer unix.Close(dirfd)
	in, err := openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY)
	if err != nil {
		r.Status, r.Err = statusOf(e, err)
		if err == unix.ELOOP {
			r.Status, r.Err = Skipped, skipReason(walker.Symlink)
		}
		return
	}
	defer unix.Close(in)
	var before unix.Stat_t
	if err := unix.Fstat(in, &before); err != nil {
		r.Status, r.Err = Failed, err
		return
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		r.Status, r.Err = Skipped, skipReason(typeOf(before.Mode))
		return
	}
	r.Mtime = before.Mtim
	if t.opt.Remove && before.Nlink > 1 {
		r.Status, r.Err = Skipped, errHardlinkRm
		return
	}
	if t.opt.Remove && before.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		r.Status, r.Err = Skipped, errSetID
		return
	}
	if !t.opt.Force {
		// An existing output (file, symlink, dangling symlink, directory) is never
		// opened or followed. The no-replace rename below is the real guard; this
		// only saves the work.
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, out, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
			r.Status, r.Err = Failed, fmt.Errorf("output %s %w", quoteOut(out), errOutputExists)
			return
		}
	}
	if t.decompress {
		if err := sniff(in, format); err != nil {
			r.Status, r.Err = Failed, err
			return
		}
	}
	if t.opt.DryRun {
		r.Size = before.Size
		return
	}

	tmp, tfd, err := createTemp(dirfd)
	if err != nil {
		r.Status, r.Err = Failed, err
		return
	}
	published := false
	defer func() {
		if tfd >= 0 {
			unix.Close(tfd)
		}
		if !published {
			unix.Unlinkat(dirfd, tmp, 0)
		}
	}()

	sum, n, outSize, err := w.transform(ctx, in, tfd, format)
	if err != nil {
		r.Status, r.Err = Failed, err
		return
	}
	r.Size, r.OutSize = n, outSize
	var after unix.Stat_t
	if err := unix.Fstat(in, &after); err != nil {
		r.Status, r.Err = Failed, err
		return
	}
	if before.Size != after.Size || before.Mtim != after.Mtim || before.Ctim != after.Ctim {
		r.Status, r.Err = Changed, errors.New("file changed while being read: kept, no output written")
		return
	}
	if err := copyMetadata(in, tfd, &before); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("copying metadata: %w", err)
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
	if err := fsync(tfd); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("fsync: %w", err)
		return
	}
	if err := unix.Close(tfd); err != nil {
		tfd = -1
		r.Status, r.Err = Failed, fmt.Errorf("close: %w", err)
		return
	}
	tfd = -1
	if t.opt.Force {
		err = unix.Renameat(dirfd, tmp, dirfd, out)
	} else {
		err = unix.Renameat2(dirfd, tmp, dirfd, out, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		if err == unix.EEXIST {
			err = fmt.Errorf("output %s %w", quoteOut(out), errOutputExists)
		}
		r.Status, r.Err = Failed, err
		return
	}
	published = true
	if err := fsync(dirfd); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("fsync of the directory: %w", err)
		return
	}
	if !t.opt.Remove {
		return
	}
	// Remove the original only if its name still holds the inode that was read,
	// unchanged since.
	var now unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &now, unix.AT_SYMLINK_NOFOLLOW); err != nil ||
		now.Dev != before.Dev || now.Ino != before.Ino || now.Size != before.Size ||
		now.Mtim != before.Mtim || now.Ctim != before.Ctim {
		r.Status, r.Err = Changed, errors.New("file changed after it was read: original kept next to the output")
		return
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("removing the original (output kept): %w", err)
		return
	}
	if err := fsync(dirfd); err != nil {
		r.Status, r.Err = Failed, fmt.Errorf("fsync of the directory: %w", err)
	}
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
		var b [6]byte
		for i := range b {
			b[i] = byte(rand.Uint32())
		}
		name := TempPrefix + hex.EncodeToString(b[:])
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
			return done, err
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
			return 0, err
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

// copyMetadata gives the output the input's owner, group, permission bits
// (special bits dropped), user xattrs, POSIX ACL, and atime and mtime to the
// nanosecond, all through descriptors. Ownership first: a later chown would
// clear bits; times last: the other calls change ctime only.
func copyMetadata(in, out int, st *unix.Stat_t) error {
	if err := unix.Fchown(out, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	// A default ACL on the directory gave the new file an access ACL; the
	// chmod below would widen its mask. Only the input's own ACL may apply.
	if err := unix.Fremovexattr(out, "system.posix_acl_access"); err != nil &&
		err != unix.ENODATA && err != unix.ENOTSUP && err != unix.EOPNOTSUPP {
		return err
	}
	if err := unix.Fchmod(out, st.Mode&0o777); err != nil {
		return err
	}
	if err := copyXattrs(in, out); err != nil {
		return err
	}
	return futimens(out, &[2]unix.Timespec{st.Atim, st.Mtim})
}

func copyXattrs(in, out int) error {
	size, err := unix.Flistxattr(in, nil)
	if err == unix.ENOTSUP || size == 0 {
		return nil
	}
	if err != nil {
		return err
	}
	list := make([]byte, size)
	if size, err = unix.Flistxattr(in, list); err != nil {
		return err
	}
	var val []byte
	for _, name := range strings.Split(string(list[:size]), "\x00") {
		if !strings.HasPrefix(name, "user.") && name != "system.posix_acl_access" {
			continue
		}
		n, err := unix.Fgetxattr(in, name, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if cap(val) < n {
			val = make([]byte, n)
		}
		if n, err = unix.Fgetxattr(in, name, val[:n]); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := unix.Fsetxattr(out, name, val[:n], 0); err != nil {
			return fmt.Errorf("%s: %w", name, err)
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
