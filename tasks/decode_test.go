package tasks

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/flate"
	stdgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// gzMember is one gzip member of data, its header built field by field.
type gzMember struct {
	flags          byte // beyond the FEXTRA, FNAME and FCOMMENT flags the fields set
	extra          []byte
	name, comment  string
	hcrc           bool
	badHCRC        bool
	method         byte // 0: deflate
	badCRC, badLen bool
}

func (m gzMember) bytes(data []byte) []byte {
	flags := m.flags
	if m.extra != nil {
		flags |= gzipFlagExtra
	}
	if m.name != "" {
		flags |= gzipFlagName
	}
	if m.comment != "" {
		flags |= gzipFlagComment
	}
	if m.hcrc {
		flags |= gzipFlagHdrCRC
	}
	method := m.method
	if method == 0 {
		method = gzipDeflate
	}
	b := []byte{gzipID1, gzipID2, method, flags, 0, 0, 0, 0, 0, 3}
	if m.extra != nil {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(m.extra)))
		b = append(b, m.extra...)
	}
	if m.name != "" {
		b = append(append(b, m.name...), 0)
	}
	if m.comment != "" {
		b = append(append(b, m.comment...), 0)
	}
	if m.hcrc {
		sum := uint16(crc32.ChecksumIEEE(b))
		if m.badHCRC {
			sum ^= 1
		}
		b = binary.LittleEndian.AppendUint16(b, sum)
	}
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, 6)
	fw.Write(data)
	fw.Close()
	b = append(b, buf.Bytes()...)
	sum, size := crc32.ChecksumIEEE(data), uint32(len(data))
	if m.badCRC {
		sum ^= 1
	}
	if m.badLen {
		size++
	}
	b = binary.LittleEndian.AppendUint32(b, sum)
	return binary.LittleEndian.AppendUint32(b, size)
}

func zstdFrame(t testing.TB, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// skippable is a zstd skippable frame (variant 0 to 15) holding payload.
func skippable(variant byte, payload string) []byte {
	b := []byte{0x50 | variant, 0x2a, 0x4d, 0x18}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// decompressBytes runs decompress's decoding (sniff, then transform) on data
// stored in a file, and returns what it wrote.
func decompressBytes(t testing.TB, ctx context.Context, data []byte, format string) ([]byte, error) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "in")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	if err := sniff(in, format); err != nil {
		return nil, err
	}
	outp := filepath.Join(dir, "out")
	out, err := unix.Open(outp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(out)
	w := NewDecompress(CompressOptions{}).NewWorker().(*compressWorker)
	sum, n, outSize, err := w.transform(ctx, in, out, format)
	if err != nil {
		return nil, err
	}
	got, rerr := os.ReadFile(outp)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if n != int64(len(data)) || outSize != int64(len(got)) || sum != xxhash.Sum64(got) {
		t.Errorf("transform: read %d (want %d), wrote %d (file has %d), hash %x (want %x)",
			n, len(data), outSize, len(got), sum, xxhash.Sum64(got))
	}
	return got, nil
}

// TestDecompressVerdicts: decompress accepts exactly the streams the real
// gzip -t and zstd -t accept (gzip's "trailing garbage ignored" warning, exit
// 2, is a failure here on purpose: the file is kept), decodes them to what
// gzip -dc and zstd -dc give, and names each fault. The verdict of the real
// tool in each row is checked too when the tool is installed.
func TestDecompressVerdicts(t *testing.T) {
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog 0123456789\n"), 3000)
	other := []byte("a second member\n")
	gz := gzMember{}.bytes(text)
	gz2 := gzMember{name: "second.txt"}.bytes(other)
	zs := zstdFrame(t, text)
	zs2 := zstdFrame(t, other)
	zeros := make([]byte, 10240)
	// A frame of one empty raw block, its window given by the descriptor byte:
	// 0x88 is 128 MiB (zstd -d's default limit), 0x90 256 MiB.
	window := func(desc byte) []byte { return []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, desc, 0x01, 0x00, 0x00} }
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 0x55; return b }

	cases := []struct {
		name   string
		format string
		data   []byte
		tool   int    // exit status of gzip -t or zstd -t
		want   []byte // the content, when accepted
		err    string // the error, when not
	}{
		{"gzip/one member", "gzip", gz, 0, text, ""},
		{"gzip/two members", "gzip", cat(gz, gz2), 0, cat(text, other), ""},
		{"gzip/empty member", "gzip", gzMember{}.bytes(nil), 0, []byte{}, ""},
		{"gzip/zero padding", "gzip", cat(gz, zeros), 0, text, ""},
		{"gzip/one zero byte", "gzip", cat(gz, []byte{0}), 0, text, ""},
		{"gzip/members then padding", "gzip", cat(gz, gz2, zeros), 0, cat(text, other), ""},
		{"gzip/all header fields", "gzip", gzMember{extra: bytes.Repeat([]byte{7}, 65535), name: "caf\xe9.txt",
			comment: strings.Repeat("a comment longer than compress/gzip's 511 bytes ", 40), hcrc: true}.bytes(text), 0, text, ""},
		{"gzip/long name", "gzip", gzMember{name: strings.Repeat("n", 1000)}.bytes(text), 0, text, ""},
		{"gzip/trailing garbage", "gzip", cat(gz, []byte("garbage\n")), 2, nil, "decompress: trailing garbage after gzip data"},
		{"gzip/garbage after padding", "gzip", cat(gz, zeros, []byte("xy")), 2, nil, "decompress: trailing garbage after gzip data"},
		{"gzip/garbage after second member", "gzip", cat(gz, gz2, []byte{0x1f, 0x00}), 2, nil, "decompress: trailing garbage after gzip data"},
		{"gzip/lone 0x1f after member", "gzip", cat(gz, []byte{0x1f}), 1, nil, "decompress: truncated gzip data (unexpected end of file)"},
		{"gzip/magic only after member", "gzip", cat(gz, []byte{0x1f, 0x8b}), 1, nil, "decompress: truncated gzip data (unexpected end of file)"},
		{"gzip/truncated in deflate data", "gzip", gz[:len(gz)/2], 1, nil, "decompress: truncated gzip data (unexpected end of file)"},
		{"gzip/truncated trailer", "gzip", gz[:len(gz)-3], 1, nil, "decompress: truncated gzip data (unexpected end of file)"},
		{"gzip/truncated header", "gzip", gz[:6], 1, nil, "decompress: truncated gzip data (unexpected end of file)"},
		{"gzip/truncated name", "gzip", gzMember{name: "abc"}.bytes(text)[:12], 1, nil, "decompress: truncated gzip data (unexpected end of file)"},
		{"gzip/magic byte only", "gzip", []byte{0x1f}, 1, nil, "decompress: truncated gzip data (unexpected end of file)"},
		{"gzip/empty file", "gzip", nil, 1, nil, "decompress: empty file, not in gzip format"},
		{"gzip/not gzip", "gzip", []byte("plain text\n"), 1, nil, "decompress: not in gzip format"},
		{"gzip/crc", "gzip", gzMember{badCRC: true}.bytes(text), 1, nil, "decompress: corrupt gzip data: CRC-32 mismatch"},
		{"gzip/length", "gzip", gzMember{badLen: true}.bytes(text), 1, nil, "decompress: corrupt gzip data: length mismatch"},
		{"gzip/crc of a second member", "gzip", cat(gz, gzMember{badCRC: true}.bytes(other)), 1, nil, "decompress: corrupt gzip data: CRC-32 mismatch"},
		{"gzip/header crc", "gzip", gzMember{hcrc: true, badHCRC: true}.bytes(text), 1, nil, "decompress: corrupt gzip data: header checksum mismatch"},
		{"gzip/method", "gzip", gzMember{method: 7}.bytes(text), 1, nil, "decompress: corrupt gzip data: unknown compression method 7"},
		{"gzip/method of a second member", "gzip", cat(gz, gzMember{method: 7}.bytes(other)), 1, nil, "decompress: corrupt gzip data: unknown compression method 7"},
		{"gzip/encrypted flag", "gzip", gzMember{flags: 0x20}.bytes(text), 1, nil, "decompress: corrupt gzip data: reserved header flags 0x20"},
		{"gzip/reserved flag", "gzip", gzMember{flags: 0x80}.bytes(text), 1, nil, "decompress: corrupt gzip data: reserved header flags 0x80"},
		{"gzip/deflate data", "gzip", flip(gz, 10), 1, nil, "decompress: corrupt gzip data: "},

		{"zstd/one frame", "zstd", zs, 0, text, ""},
		{"zstd/two frames", "zstd", cat(zs, zs2), 0, cat(text, other), ""},
		{"zstd/empty frame", "zstd", zstdFrame(t, nil), 0, []byte{}, ""},
		{"zstd/leading skippable frame", "zstd", cat(skippable(0, "pzstd"), zs), 0, text, ""},
		{"zstd/skippable frames everywhere", "zstd", cat(skippable(15, "a"), zs, skippable(3, ""), zs2, skippable(9, "end")), 0, cat(text, other), ""},
		{"zstd/skippable frames only", "zstd", cat(skippable(0, "x"), skippable(1, "")), 0, []byte{}, ""},
		{"zstd/window of 128 MiB", "zstd", window(0x88), 0, []byte{}, ""},
		{"zstd/window of 256 MiB", "zstd", window(0x90), 1, nil, "decompress: zstd frame needs a window larger than 128 MiB"},
		{"zstd/dictionary", "zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x01, 0x48, 0x07, 0x01, 0x00, 0x00}, 1, nil, "decompress: zstd frame compressed with a dictionary (zstd -D), not supported"},
		{"zstd/trailing garbage", "zstd", cat(zs, []byte("garbage\n")), 1, nil, "decompress: trailing garbage after zstd data"},
		{"zstd/zero padding", "zstd", cat(zs, zeros), 1, nil, "decompress: trailing garbage after zstd data"},
		{"zstd/garbage after skippable frame", "zstd", cat(skippable(0, "x"), []byte("garbage\n")), 1, nil, "decompress: trailing garbage after zstd data"},
		{"zstd/stray byte", "zstd", cat(zs, []byte{0}), 1, nil, "decompress: truncated zstd data (unexpected end of file)"},
		{"zstd/truncated frame", "zstd", zs[:len(zs)/2], 1, nil, "decompress: truncated zstd data (unexpected end of file)"},
		{"zstd/truncated checksum", "zstd", zs[:len(zs)-2], 1, nil, "decompress: truncated zstd data (unexpected end of file)"},
		{"zstd/truncated skippable frame", "zstd", cat(zs, skippable(0, "abcdef")[:10]), 1, nil, "decompress: truncated zstd data (unexpected end of file)"},
		{"zstd/truncated magic", "zstd", zs[:3], 1, nil, "decompress: truncated zstd data (unexpected end of file)"},
		{"zstd/checksum", "zstd", flip(zs, len(zs)-1), 1, nil, "decompress: corrupt zstd data: checksum mismatch"},
		{"zstd/reserved bit", "zstd", func() []byte { b := bytes.Clone(zs); b[4] |= 0x08; return b }(), 1, nil, "decompress: corrupt zstd data: "},
		{"zstd/empty file", "zstd", nil, 1, nil, "decompress: empty file, not in zstd format"},
		{"zstd/not zstd", "zstd", []byte("plain text\n"), 1, nil, "decompress: not in zstd format"},
		{"zstd/gzip data", "zstd", gz, 1, nil, "decompress: not in zstd format"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := decompressBytes(t, context.Background(), c.data, c.format)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("got %v, want the data", err)
			case c.err == "" && !bytes.Equal(got, c.want):
				t.Fatalf("got %d bytes, want %d (%q...)", len(got), len(c.want), c.want[:min(len(c.want), 20)])
			case c.err != "" && err == nil:
				t.Fatalf("got %d bytes, want %q", len(got), c.err)
			case c.err != "" && !strings.HasPrefix(err.Error(), c.err):
				t.Fatalf("got %q, want %q", err, c.err)
			}
			tool := map[string]string{"gzip": "gzip", "zstd": "zstd"}[c.format]
			if c.format == "zstd" && c.name == "zstd/gzip data" {
				return // zstd -t may decode gzip itself (built with zlib)
			}
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("%s not installed: the verdict of the real tool is not compared", tool)
			}
			p := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(p, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd := exec.Command(tool, "-t", "-q", p)
			cmd.Stderr = &stderr
			code := 0
			if err := cmd.Run(); err != nil {
				var ee *exec.ExitError
				if !errors.As(err, &ee) {
					t.Fatal(err)
				}
				code = ee.ExitCode()
			}
			if code != c.tool {
				t.Errorf("%s -t: exit %d, want %d (%s)", tool, code, c.tool, strings.TrimSpace(stderr.String()))
			}
			if c.err == "" {
				out, err := exec.Command(tool, "-d", "-c", "-q", p).Output()
				if err != nil || !bytes.Equal(out, c.want) {
					t.Errorf("%s -dc: %d bytes (%v), differ from pbatch's %d", tool, len(out), err, len(got))
				}
			}
		})
	}
}

// TestDecompressInterrupted: an interrupted decode returns the
// context's error, not a verdict on the data.
func TestDecompressInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct{ format, data string }{
		{"gzip", string(gzMember{}.bytes([]byte("x")))},
		{"zstd", string(zstdFrame(t, []byte("x")))},
	} {
		if _, err := decompressBytes(t, ctx, []byte(c.data), c.format); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: got %v, want context.Canceled", c.format, err)
		}
	}
}

// TestCompressVerifyRereads: compress's verification decodes the file as it
// is on disk, from its start, and compares content and size: a byte changed
// in the file after the encoder wrote it, a truncated or extended file, or
// another content all fail it, with the reason; an interruption is returned
// as such.
func TestCompressVerifyRereads(t *testing.T) {
	data := bytes.Repeat([]byte("verify me, verify me again\n"), 5000)
	for _, format := range []string{"gzip", "zstd"} {
		t.Run(format, func(t *testing.T) {
			c, err := NewCompress(CompressOptions{Format: format})
			if err != nil {
				t.Fatal(err)
			}
			w := c.NewWorker().(*compressWorker)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "in"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			in, err := unix.Open(filepath.Join(dir, "in"), unix.O_RDONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(in)
			out, err := unix.Open(filepath.Join(dir, "out"), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(out)
			sum, n, size, err := w.transform(context.Background(), in, out, format)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := w.verify(ctx, out, format, sum, n); err != nil {
				t.Fatalf("verify of the intact output: %v", err)
			}
			if err := w.verify(ctx, out, format, xxhash.Sum64([]byte("other")), n); !errors.Is(err, errVerify) {
				t.Errorf("verify against another content: got %v, want errVerify", err)
			}
			if err := w.verify(ctx, out, format, sum, n+1); !errors.Is(err, errVerify) {
				t.Errorf("verify against another size: got %v, want errVerify", err)
			}
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if err := w.verify(cancelled, out, format, sum, n); !errors.Is(err, context.Canceled) {
				t.Errorf("verify when interrupted: got %v, want context.Canceled", err)
			}

			orig := make([]byte, size)
			if _, err := unix.Pread(out, orig, 0); err != nil {
				t.Fatal(err)
			}
			damage := []struct {
				name string
				do   func() error
				want string
			}{
				{"byte changed", func() error { _, err := unix.Pwrite(out, []byte{orig[size/2] ^ 0x40}, size/2); return err }, "corrupt"},
				{"truncated", func() error { return unix.Ftruncate(out, size-5) }, "truncated"},
				{"extended", func() error { _, err := unix.Pwrite(out, []byte("junk"), size); return err }, "trailing garbage"},
			}
			for _, d := range damage {
				if err := d.do(); err != nil {
					t.Fatal(err)
				}
				err := w.verify(ctx, out, format, sum, n)
				if !errors.Is(err, errVerify) || !strings.Contains(err.Error(), d.want) {
					t.Errorf("verify, %s: got %v, want errVerify (%s)", d.name, err, d.want)
				}
				// Put the output back as the encoder wrote it.
				if _, err := unix.Pwrite(out, orig, 0); err != nil {
					t.Fatal(err)
				}
				if err := unix.Ftruncate(out, size); err != nil {
					t.Fatal(err)
				}
				if err := w.verify(ctx, out, format, sum, n); err != nil {
					t.Fatalf("verify after restoring: %v", err)
				}
			}
		})
	}
}

// countReader counts what it returns, as fdReader does.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}

// refGunzip is the reference for FuzzGunzip: the library's gzip reader, one
// member at a time, with the same rule for what may follow a member.
func refGunzip(data []byte) ([]byte, error) {
	br := bytes.NewReader(data)
	var out bytes.Buffer
	zr := new(stdgzip.Reader)
	for member := 0; ; member++ {
		if member > 0 {
			rest := data[len(data)-br.Len():]
			if len(rest) == 0 || len(bytes.TrimLeft(rest, "\x00")) == 0 {
				return out.Bytes(), nil
			}
			if rest[0] != gzipID1 || len(rest) > 1 && rest[1] != gzipID2 {
				return nil, errGzipTrailing
			}
		}
		if err := zr.Reset(br); err != nil {
			return nil, err
		}
		zr.Multistream(false)
		if _, err := io.Copy(&out, zr); err != nil {
			return nil, err
		}
	}
}

// FuzzGunzip: gunzip never panics, and agrees with the library's reader on
// what a gzip stream holds: the same content when both accept, and a
// rejection when the library rejects, save for the header strings longer than
// the library takes.
func FuzzGunzip(f *testing.F) {
	text := []byte("fuzzing the gzip framing, fuzzing the gzip framing\n")
	gz := gzMember{}.bytes(text)
	f.Add(gz)
	f.Add(cat(gz, gzMember{name: "n", comment: "c", extra: []byte("ex"), hcrc: true}.bytes(text[:9])))
	f.Add(cat(gz, make([]byte, 9)))
	f.Add(cat(gz, []byte("junk")))
	f.Add(cat(gz, []byte{0x1f}))
	f.Add(gzMember{}.bytes(nil))
	f.Add(gzMember{badCRC: true}.bytes(text))
	f.Add(gz[:len(gz)-1])
	f.Fuzz(func(t *testing.T, data []byte) {
		var d decoders
		h := xxhash.New()
		var out bytes.Buffer
		d.out = sink{w: &out, h: h}
		src := &countReader{r: bytes.NewReader(data)}
		err := d.gunzip(src, &src.n)
		if err == nil && (d.out.n != int64(out.Len()) || h.Sum64() != xxhash.Sum64(out.Bytes())) {
			t.Fatalf("sink counted %d bytes, hash %x; wrote %d", d.out.n, h.Sum64(), out.Len())
		}
		want, werr := refGunzip(data)
		switch {
		case err == nil && werr == nil:
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("gunzip %q: %q, library %q", data, out.Bytes(), want)
			}
		case err == nil && errors.Is(werr, stdgzip.ErrHeader):
			// The library refuses a name or comment of 512 bytes or more.
			if len(data) < 512 {
				t.Fatalf("gunzip accepts %q, library: %v", data, werr)
			}
		case err == nil:
			t.Fatalf("gunzip accepts %q, library: %v", data, werr)
		case werr == nil:
			t.Fatalf("gunzip %q: %v, library accepts it (%q)", data, err, want)
		}
	})
}

// TestSniff: the first bytes that may start each format, and what a file
// that cannot is called.
func TestSniff(t *testing.T) {
	for _, c := range []struct {
		format, data, want string
	}{
		{"gzip", "\x1f\x8b", ""},
		{"gzip", "\x1f\x8b\x08\x00", ""},
		{"gzip", "", "empty file, not in gzip format"},
		{"gzip", "\x1f", "truncated gzip data (unexpected end of file)"},
		{"gzip", "\x1f\x9d\x90", "not in gzip format"}, // compress(1), which gzip -d also reads
		{"gzip", "\x8b\x1f", "not in gzip format"},
		{"zstd", "\x28\xb5\x2f\xfd", ""},
		{"zstd", "\x50\x2a\x4d\x18", ""},
		{"zstd", "\x5f\x2a\x4d\x18", ""},
		{"zstd", "\x4f\x2a\x4d\x18", "not in zstd format"},
		{"zstd", "\x60\x2a\x4d\x18", "not in zstd format"},
		{"zstd", "\x28\xb5\x2f", "truncated zstd data (unexpected end of file)"},
		{"zstd", "\x28", "truncated zstd data (unexpected end of file)"},
		{"zstd", "\x5a\x2a", "truncated zstd data (unexpected end of file)"},
		{"zstd", "\x5a\x2b", "not in zstd format"},
		{"zstd", "\x27\xb5\x2f\xfd", "zstd legacy format (before zstd 0.8), not supported"},
		{"zstd", "\x22\xb5\x2f\xfd", "zstd legacy format (before zstd 0.8), not supported"},
		{"zstd", "\x21\xb5\x2f\xfd", "not in zstd format"},
		{"zstd", "", "empty file, not in zstd format"},
	} {
		err := sniffBytes([]byte(c.data), c.format)
		if got := fmt.Sprint(err); c.want == "" && err != nil || c.want != "" && got != c.want {
			t.Errorf("%s %q: got %v, want %q", c.format, c.data, err, c.want)
		}
	}
}
