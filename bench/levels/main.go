// Command levels prints, for a sample of a corpus, the compression ratio and the
// single-core in-memory speed of every gzip level of klauspost/compress (what
// pbatch compress uses) next to the ratio of the real gzip(1) at the same level,
// and the zstd encoder levels next to zstd(1) -1 and -3. It answers "which pbatch
// level matches gzip -6's ratio" and shows the encoder's ceiling: pbatch cannot
// compress faster than this times the number of cores.
//
//	go run ./bench/levels [-mb 64] DIR
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func main() {
	mb := flag.Int("mb", 64, "sample size in MiB (files in walk order until this much is read)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: levels [-mb N] DIR")
		os.Exit(2)
	}
	var files [][]byte
	total := 0
	err := filepath.WalkDir(flag.Arg(0), func(p string, d fs.DirEntry, err error) error {
		if err != nil || total >= *mb<<20 || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		files = append(files, b)
		total += len(b)
		return err
	})
	if err != nil || total == 0 {
		fmt.Fprintln(os.Stderr, "levels: no sample:", err)
		os.Exit(1)
	}
	fmt.Printf("sample: %d files, %d bytes; ratio = output/input, speed = one core, in memory\n", len(files), total)
	// cli returns the total output size of a real compressor run on each file.
	// Not its speed: one process per file would understate it (compress.sh
	// times the real tools).
	cli := func(name string, args ...string) int {
		n := 0
		for _, f := range files {
			cmd := exec.Command(name, args...)
			cmd.Stdin = bytes.NewReader(f)
			out, err := cmd.Output()
			if err != nil {
				fmt.Fprintf(os.Stderr, "levels: %s %v: %v\n", name, args, err)
				os.Exit(1)
			}
			n += len(out)
		}
		return n
	}
	// run returns the total output size and the speed of one encoder over the sample.
	run := func(enc func(w io.Writer) io.WriteCloser) (int, float64) {
		var buf bytes.Buffer
		n := 0
		start := time.Now()
		for _, f := range files {
			buf.Reset()
			w := enc(&buf)
			if _, err := w.Write(f); err != nil {
				panic(err)
			}
			if err := w.Close(); err != nil {
				panic(err)
			}
			n += buf.Len()
		}
		return n, float64(total) / time.Since(start).Seconds() / 1e6
	}
	gz6 := cli("gzip", "-6", "-c")
	fmt.Printf("\n%-8s %-24s %s\n", "level", "pbatch (klauspost)", "gzip(1)")
	for l := 1; l <= 9; l++ {
		var gw *gzip.Writer
		n, speed := run(func(w io.Writer) io.WriteCloser {
			if gw == nil {
				gw, _ = gzip.NewWriterLevel(w, l)
			} else {
				gw.Reset(w)
			}
			return gw
		})
		g := gz6
		if l != 6 {
			g = cli("gzip", fmt.Sprintf("-%d", l), "-c")
		}
		match := ""
		switch d := float64(n)/float64(gz6) - 1; {
		case d >= -0.02 && d <= 0.02:
			match = fmt.Sprintf("  ratio within 2%% of gzip -6 (%+.1f%%)", 100*d)
		case d < 0:
			match = fmt.Sprintf("  smaller than gzip -6 (%+.1f%%)", 100*d)
		}
		fmt.Printf("gzip -%d  %.4f %6.0f MB/s      %.4f%s\n", l, float64(n)/float64(total), speed, float64(g)/float64(total), match)
	}
	fmt.Println()
	for _, l := range []int{1, 3, 7, 11} {
		var zw *zstd.Encoder
		n, speed := run(func(w io.Writer) io.WriteCloser {
			if zw == nil {
				zw, _ = zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(l)), zstd.WithEncoderConcurrency(1))
			} else {
				zw.Reset(w)
			}
			return zw
		})
		z := cli("zstd", fmt.Sprintf("-%d", l), "-c", "-q")
		fmt.Printf("zstd -%-2d %.4f %6.0f MB/s      %.4f  (klauspost level %v)\n", l, float64(n)/float64(total), speed, float64(z)/float64(total), zstd.EncoderLevelFromZstd(l))
	}
}
