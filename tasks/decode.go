package tasks

// Decoding for decompress, and for compress's verification of its own output.
//
// What is accepted follows what the reference tools accept, since a file the
// real gzip or zstd decodes must not be called corrupt (and one they reject
// must not be decoded and its original removed):
//
//   - gzip: one or more members (RFC 1952), any header field of any length,
//     and zero bytes after the last member (tape and dd padding; gzip -t
//     accepts them silently). Anything else after a member is "trailing
//     garbage": gzip -d ignores it with a warning (exit 2), pbatch fails the
//     file and keeps it, since with --rm the only copy of whatever the tail
//     is (a damaged member, another file) would go.
//   - zstd: any sequence of frames and skippable frames (pzstd writes one
//     before each frame), a file of skippable frames only, empty frames; a
//     window up to 128 MiB, zstd -d's default limit (larger ones need
//     zstd -d --long=31 too, and would cost that much memory per worker).
//     Trailing zero bytes are garbage to zstd, and so here.
//
// The gzip framing is parsed here rather than by compress/gzip: that reader
// rejects a name or comment longer than 511 bytes, calls trailing zeros an
// invalid header and a short tail "unexpected EOF", and tells a CRC error from
// a length error in one message. The deflate data is still the library's.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

const (
	gzipID1, gzipID2 = 0x1f, 0x8b
	gzipDeflate      = 8

	gzipFlagHdrCRC   = 1 << 1
	gzipFlagExtra    = 1 << 2
	gzipFlagName     = 1 << 3
	gzipFlagComment  = 1 << 4
	gzipFlagReserved = 0xe0 // 0x20 is "encrypted" to gzip

	// zstdMaxWindow is zstd -d's default memory limit for one frame.
	zstdMaxWindow = 128 << 20
)

var (
	errTruncated        = errors.New("unexpected end of file")
	errGzipTrailing     = errors.New("trailing garbage after gzip data")
	errZstdTrailing     = errors.New("trailing garbage after zstd data")
	errGzipCRC          = errors.New("corrupt gzip data: CRC-32 mismatch")
	errGzipLength       = errors.New("corrupt gzip data: length mismatch")
	errGzipHeaderCRC    = errors.New("corrupt gzip data: header checksum mismatch")
	errZstdWindowTooBig = errors.New("zstd frame needs a window larger than 128 MiB (zstd -d --long=31 decodes it)")
)

// zstdMagic starts a zstd frame; a skippable frame starts with 0x50 to 0x5f
// and then zstdSkippable.
var (
	zstdMagic     = [4]byte{0x28, 0xb5, 0x2f, 0xfd}
	zstdSkippable = [3]byte{0x2a, 0x4d, 0x18}
)

// sniff checks that in starts like data in format, so that a file that is
// not compressed at all is named as such before a temporary file is made.
func sniff(in int, format string) error {
	var b [4]byte
	n, err := preadFull(in, b[:], 0)
	if err != nil {
		return err
	}
	if err := sniffBytes(b[:n], format); err != nil {
		return fmt.Errorf("decompress: %w", err)
	}
	return nil
}

func sniffBytes(b []byte, format string) error {
	if len(b) == 0 {
		return fmt.Errorf("empty file, not in %s format", format)
	}
	var want []byte
	switch format {
	case "gzip":
		if len(b) >= 2 && b[0] == gzipID1 && b[1] == gzipID2 {
			return nil
		}
		want = []byte{gzipID1, gzipID2}
	default:
		if len(b) >= 4 && ([4]byte(b) == zstdMagic || b[0]&0xf0 == 0x50 && [3]byte(b[1:4]) == zstdSkippable) {
			return nil
		}
		if len(b) >= 4 && b[0] >= 0x22 && b[0] <= 0x27 && [3]byte(b[1:4]) == [3]byte(zstdMagic[1:]) {
			return errors.New("zstd legacy format (before zstd 0.8), not supported")
		}
		want = zstdMagic[:]
		if b[0]&0xf0 == 0x50 {
			want = append([]byte{b[0]}, zstdSkippable[:]...)
		}
	}
	if len(b) < len(want) && string(b) == string(want[:len(b)]) {
		return fmt.Errorf("truncated %s data (%w)", format, errTruncated)
	}
	return fmt.Errorf("not in %s format", format)
}

func preadFull(fd int, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		k, err := unix.Pread(fd, b[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			break
		}
		n += k
	}
	return n, nil
}

// decoders is one worker's reusable decoding state.
type decoders struct {
	br *bufio.Reader
	fl io.ReadCloser // the deflate decoder, also a flate.Resetter
	zr *zstd.Decoder
	// The gzip member being decoded: CRC-32 and size (mod 2³²) of its output.
	crc  uint32
	size uint32
	out  sink
}

// sink takes the decoded data: to w (nil when only verifying), to the hash,
// and counted.
type sink struct {
	w io.Writer
	h *xxhash.Digest
	n int64
}

func (s *sink) Write(p []byte) (int, error) {
	var err error
	if s.w != nil {
		var k int
		k, err = s.w.Write(p)
		p = p[:k]
	}
	s.h.Write(p)
	s.n += int64(len(p))
	return len(p), err
}

// decode writes the content of the compressed stream src to dst (if not nil)
// and h, and returns its size. Errors from src and dst come back as they are;
// decodeErr names the stream's own faults.
func (d *decoders) decode(src *fdReader, dst io.Writer, h *xxhash.Digest, format string) (int64, error) {
	d.out = sink{w: dst, h: h}
	defer func() { d.out = sink{} }()
	if format == "gzip" {
		err := d.gunzip(src, &src.n)
		return d.out.n, err
	}
	if d.zr == nil {
		zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return 0, err
		}
		d.zr = zr
	}
	if err := d.zr.Reset(src); err != nil {
		return 0, err
	}
	_, err := d.zr.WriteTo(&d.out)
	return d.out.n, err
}

// Write passes the decoded data of a gzip member on, adding it to its CRC.
func (d *decoders) Write(p []byte) (int, error) {
	d.crc = crc32.Update(d.crc, crc32.IEEETable, p)
	d.size += uint32(len(p))
	return d.out.Write(p)
}

// gunzip decodes every gzip member of src to d.out; *nread counts the bytes
// src returned, for the offsets in messages.
func (d *decoders) gunzip(src io.Reader, nread *int64) error {
	if d.br == nil {
		d.br = bufio.NewReaderSize(src, 64<<10)
	} else {
		d.br.Reset(src)
	}
	// offset is where the reader is in the file, for messages.
	offset := func() int64 { return *nread - int64(d.br.Buffered()) }
	for member := 0; ; member++ {
		if member > 0 {
			more, err := gzipMore(d.br)
			if !more || err != nil {
				return err
			}
		}
		if err := gzipHeader(d.br); err != nil {
			return err
		}
		start := offset()
		if d.fl == nil {
			d.fl = flate.NewReader(d.br)
		} else if err := d.fl.(flate.Resetter).Reset(d.br, nil); err != nil {
			return err
		}
		d.crc, d.size = 0, 0
		// The flate reader reads d.br byte by byte (it is an io.ByteReader):
		// it stops exactly at the end of the deflate data.
		if _, err := d.fl.(io.WriterTo).WriteTo(d); err != nil {
			if e, ok := errors.AsType[flate.CorruptInputError](err); ok {
				return fmt.Errorf("corrupt gzip data: invalid deflate data at byte %d", start+int64(e))
			}
			return err
		}
		var tr [8]byte
		if _, err := io.ReadFull(d.br, tr[:]); err != nil {
			return noEOF(err)
		}
		if binary.LittleEndian.Uint32(tr[:4]) != d.crc {
			return errGzipCRC
		}
		if binary.LittleEndian.Uint32(tr[4:]) != d.size {
			return errGzipLength
		}
	}
}

// gzipMore says whether another member follows one that just ended: at the
// end of the file, or of zero bytes that run to it, no. Anything else but the
// start of a member is trailing garbage (gzip's rule, gzip.c get_method,
// except that gzip only warns).
func gzipMore(br *bufio.Reader) (bool, error) {
	b, err := br.Peek(2)
	switch {
	case len(b) == 0 && err == io.EOF:
		return false, nil
	case len(b) == 2 && b[0] == gzipID1 && b[1] == gzipID2:
		return true, nil
	case len(b) == 1 && b[0] == gzipID1 && err == io.EOF:
		return false, noEOF(io.EOF)
	case len(b) == 0 || b[0] != 0:
		if err != nil && err != io.EOF {
			return false, err
		}
		return false, errGzipTrailing
	}
	for {
		b, err := br.Peek(max(br.Buffered(), 1))
		if len(bytes.TrimLeft(b, "\x00")) > 0 {
			return false, errGzipTrailing
		}
		br.Discard(len(b))
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// gzipHeader reads and checks one member's header (RFC 1952 2.3), leaving br
// at the start of its deflate data.
func gzipHeader(br *bufio.Reader) error {
	var h [10]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return noEOF(err)
	}
	if h[0] != gzipID1 || h[1] != gzipID2 {
		return errors.New("not in gzip format")
	}
	if h[2] != gzipDeflate {
		return fmt.Errorf("corrupt gzip data: unknown compression method %d", h[2])
	}
	flags := h[3]
	if flags&gzipFlagReserved != 0 {
		return fmt.Errorf("corrupt gzip data: reserved header flags 0x%02x set (encrypted or from a newer gzip)", flags&gzipFlagReserved)
	}
	crc := crc32.Update(0, crc32.IEEETable, h[:])
	if flags&gzipFlagExtra != 0 {
		var xlen [2]byte
		if _, err := io.ReadFull(br, xlen[:]); err != nil {
			return noEOF(err)
		}
		crc = crc32.Update(crc, crc32.IEEETable, xlen[:])
		n := int(binary.LittleEndian.Uint16(xlen[:]))
		for n > 0 {
			b, err := br.Peek(min(n, br.Size()))
			crc = crc32.Update(crc, crc32.IEEETable, b)
			br.Discard(len(b))
			n -= len(b)
			if err != nil && n > 0 {
				return noEOF(err)
			}
		}
	}
	for _, f := range []byte{gzipFlagName, gzipFlagComment} {
		if flags&f == 0 {
			continue
		}
		// A zero-terminated string of any length.
		for {
			b, err := br.ReadSlice(0)
			crc = crc32.Update(crc, crc32.IEEETable, b)
			if err == nil {
				break
			}
			if err != bufio.ErrBufferFull {
				return noEOF(err)
			}
		}
	}
	if flags&gzipFlagHdrCRC != 0 {
		var sum [2]byte
		if _, err := io.ReadFull(br, sum[:]); err != nil {
			return noEOF(err)
		}
		if binary.LittleEndian.Uint16(sum[:]) != uint16(crc) {
			return errGzipHeaderCRC
		}
	}
	return nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decodeErr names what went wrong decoding format data: the stream's own
// faults in the words gzip -t and zstd -t use where they fit; interruption
// and I/O errors as they are.
func decodeErr(err error, format string) error {
	if isIOErr(err) {
		return err
	}
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("truncated %s data (%w)", format, errTruncated)
	case format == "gzip":
		return err // gunzip's own errors say it all
	case errors.Is(err, zstd.ErrCRCMismatch):
		return errors.New("corrupt zstd data: checksum mismatch")
	case errors.Is(err, zstd.ErrMagicMismatch):
		// The file starts with a frame (sniff checked): what follows the
		// frames is no frame.
		return errZstdTrailing
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return errZstdWindowTooBig
	case errors.Is(err, zstd.ErrUnknownDictionary):
		// Not damage: zstd -D made it, and only that dictionary reads it.
		return errors.New("zstd frame compressed with a dictionary (zstd -D), not supported")
	}
	return fmt.Errorf("corrupt zstd data: %v", err)
}

// isIOErr says whether err is about reading or writing (or interruption)
// rather than about the compressed data.
func isIOErr(err error) bool {
	_, ok := errors.AsType[unix.Errno](err)
	return ok || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
