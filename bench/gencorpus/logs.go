package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// makeLogs writes the compression corpus (see the package comment): n small log
// files, big files of bigSize each, and one file of single bytes. Each is a set
// with its own stamp, so changing one flag rewrites only that set.
func makeLogs(out string, n, big int, bigSize, single int64, jobs int, logf func(string, ...any)) error {
	const minSize, maxSize = 1 << 10, 2 << 20
	sets := []set{}
	if n > 0 {
		smallPath := smallPathFunc(n)
		sets = append(sets, set{
			dir:   filepath.Join(out, "logs", "small"),
			stamp: filepath.Join(out, ".stamp-logs-small"),
			params: fmt.Sprintf("gencorpus v1 logs-small n=%d min=%d max=%d per-dir=%d seed=%#x",
				n, minSize, maxSize, filesPerDir, uint64(seed)),
			n:    n,
			jobs: jobs,
			path: func(i int) string { return strings.TrimSuffix(smallPath(i), ".bin") + ".log" },
			// Log-uniform: many small files, a few large ones (mean about 270 KiB).
			size: func(r *rand.Rand) int64 {
				return int64(math.Exp(math.Log(minSize) + r.Float64()*(math.Log(maxSize)-math.Log(minSize))))
			},
			write: writeLogFile,
		})
	}
	if big > 0 {
		sets = append(sets, set{
			dir:    filepath.Join(out, "logs", "big"),
			stamp:  filepath.Join(out, ".stamp-logs-big"),
			params: fmt.Sprintf("gencorpus v1 logs-big n=%d size=%d seed=%#x", big, bigSize, uint64(seed)),
			n:      big,
			jobs:   max(2, runtime.NumCPU()),
			path:   func(i int) string { return fmt.Sprintf("f%03d.log", i) },
			size:   func(*rand.Rand) int64 { return bigSize },
			write:  writeLogFile,
		})
	}
	if single > 0 {
		sets = append(sets, set{
			dir:    filepath.Join(out, "single"),
			stamp:  filepath.Join(out, ".stamp-single"),
			params: fmt.Sprintf("gencorpus v1 single size=%d seed=%#x", single, uint64(seed)),
			n:      1,
			jobs:   1,
			path:   func(int) string { return "f000.log" },
			size:   func(*rand.Rand) int64 { return single },
			write:  writeLogFile,
		})
	}
	for i := range sets {
		if err := sets[i].make(logf); err != nil {
			return err
		}
	}
	return nil
}

var (
	logLevels     = []string{"INFO ", "INFO ", "INFO ", "INFO ", "INFO ", "DEBUG", "DEBUG", "WARN ", "ERROR", "INFO "}
	logComponents = []string{"http", "db-pool", "scheduler", "auth", "cache", "queue-consumer", "billing", "mailer"}
	logMethods    = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	logStatuses   = []int{200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 403, 404, 500, 503}
	logResources  = []string{"users", "orders", "invoices", "sessions", "products", "carts", "search", "reports"}
	logAgents     = []string{"Mozilla/5.0 (X11; Linux x86_64)", "curl/7.88.1", "Go-http-client/2.0",
		"python-requests/2.31.0", "Mozilla/5.0 (Macintosh; Intel Mac OS X 13_4)", "okhttp/4.11.0"}
	logEvents = []string{"connection acquired", "connection released", "cache miss", "cache hit",
		"job started", "job finished", "token refreshed", "retrying after timeout", "message acknowledged",
		"slow query detected"}
)

// writeLogFile writes size bytes of log lines generated from r: the text shapes
// of a web service's log, with enough random ids and numbers that gzip -6 gets
// about 3-4x, as on real application logs. The last line is cut at size.
func writeLogFile(p string, size int64, r *rand.Rand, buf []byte) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return buf, err
	}
	if cap(buf) < chunk+4096 {
		buf = make([]byte, 0, chunk+4096)
	}
	// Seconds since 2026-01-01, advancing a little per line.
	ts := int64(1767225600) + r.Int64N(180*86400)
	usec := r.Int64N(1e6)
	for left := size; left > 0; {
		b := buf[:0]
		for len(b) < chunk && int64(len(b)) < left {
			usec += r.Int64N(40000)
			ts += usec / 1e6
			usec %= 1e6
			b = appendLogLine(b, r, ts, usec)
		}
		n := int(min(int64(len(b)), left))
		if _, err := f.Write(b[:n]); err != nil {
			f.Close()
			return buf, err
		}
		left -= int64(n)
	}
	return buf, f.Close()
}

func appendLogLine(b []byte, r *rand.Rand, ts, usec int64) []byte {
	b = appendTime(b, ts, usec)
	b = append(b, ' ')
	b = append(b, logLevels[r.IntN(len(logLevels))]...)
	b = append(b, " ["...)
	b = append(b, logComponents[r.IntN(len(logComponents))]...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(r.IntN(16)), 10)
	b = append(b, "] "...)
	if r.IntN(4) != 0 {
		b = append(b, "request method="...)
		b = append(b, logMethods[r.IntN(len(logMethods))]...)
		b = append(b, " path=/api/v"...)
		b = strconv.AppendInt(b, int64(1+r.IntN(2)), 10)
		b = append(b, '/')
		b = append(b, logResources[r.IntN(len(logResources))]...)
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(r.IntN(1e6)), 10)
		b = append(b, " status="...)
		b = strconv.AppendInt(b, int64(logStatuses[r.IntN(len(logStatuses))]), 10)
		b = append(b, " bytes="...)
		b = strconv.AppendInt(b, int64(r.IntN(64<<10)), 10)
		b = append(b, " duration_ms="...)
		b = strconv.AppendFloat(b, float64(r.IntN(200000))/100, 'f', 2, 64)
		b = append(b, " client="...)
		b = append(b, "10."...)
		b = strconv.AppendInt(b, int64(r.IntN(4)), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(r.IntN(256)), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(r.IntN(256)), 10)
		b = append(b, " ua=\""...)
		b = append(b, logAgents[r.IntN(len(logAgents))]...)
		b = append(b, '"')
	} else {
		b = append(b, logEvents[r.IntN(len(logEvents))]...)
		b = append(b, " id="...)
		b = strconv.AppendInt(b, int64(r.IntN(1e5)), 10)
		b = append(b, " elapsed="...)
		b = strconv.AppendInt(b, int64(r.IntN(5000)), 10)
		b = append(b, "ms"...)
	}
	b = append(b, " trace="...)
	b = appendHex(b, r.Uint64())
	b = appendHex(b, r.Uint64()>>16)
	b = append(b, '\n')
	return b
}

// appendTime appends ts (Unix seconds, UTC) and usec as 2026-01-02T03:04:05.123456Z.
func appendTime(b []byte, ts, usec int64) []byte {
	days, secs := ts/86400, ts%86400
	// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
	z := days + 719468
	era := z / 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if m > 12 {
		m -= 12
		y++
	}
	b = appendPad(b, y, 4)
	b = append(b, '-')
	b = appendPad(b, m, 2)
	b = append(b, '-')
	b = appendPad(b, d, 2)
	b = append(b, 'T')
	b = appendPad(b, secs/3600, 2)
	b = append(b, ':')
	b = appendPad(b, secs/60%60, 2)
	b = append(b, ':')
	b = appendPad(b, secs%60, 2)
	b = append(b, '.')
	b = appendPad(b, usec, 6)
	return append(b, 'Z')
}

func appendPad(b []byte, v int64, width int) []byte {
	var tmp [20]byte
	s := strconv.AppendInt(tmp[:0], v, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

func appendHex(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>uint(shift)&0xf])
	}
	return b
}
