package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// parseAge reads --older-than/--newer-than: a duration back from now ("7d",
// "12h", "1w2d", "90m", "1.5h", Go's "1h30m") or a point in time ("2026-11-01",
// "2026-11-01 14:00", "2026-11-01T14:00:00Z", RFC 3339). It returns the instant
// the file time is compared with.
func parseAge(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("empty age")
	}
	if d, err := parseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid age %q: want a duration such as 7d, 12h, 1w2d, 90m, or a date such as 2026-11-01 or 2026-11-01T14:00:00Z", s)
}

// parseDuration extends time.ParseDuration with d (24h) and w (7d) units.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty duration")
	}
	var total float64
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		n, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		j := i
		for j < len(rest) && (rest[j] < '0' || rest[j] > '9') && rest[j] != '.' {
			j++
		}
		var unit float64
		switch rest[i:j] {
		case "ns":
			unit = float64(time.Nanosecond)
		case "us", "µs":
			unit = float64(time.Microsecond)
		case "ms":
			unit = float64(time.Millisecond)
		case "s":
			unit = float64(time.Second)
		case "m":
			unit = float64(time.Minute)
		case "h":
			unit = float64(time.Hour)
		case "d":
			unit = float64(24 * time.Hour)
		case "w":
			unit = float64(7 * 24 * time.Hour)
		default:
			return 0, fmt.Errorf("invalid duration %q: unknown unit %q", s, rest[i:j])
		}
		total += n * unit
		// float64(math.MaxInt64) is 2^63, one past the largest Duration.
		if total >= math.MaxInt64 || math.IsNaN(total) {
			return 0, fmt.Errorf("invalid duration %q: too long", s)
		}
		rest = rest[j:]
	}
	return time.Duration(total), nil
}

// parseSize reads --min-size/--max-size: "10MB" (SI), "1.5GiB" (IEC), "4096".
func parseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil || n > math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: want e.g. 4096, 10MB, 1.5GiB", s)
	}
	return int64(n), nil
}

// parseRate reads --bwlimit: a size per second, "50MB/s", "50M", "1GiB/s".
func parseRate(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	n, err := humanize.ParseBytes(t)
	if err != nil || n == 0 || n > math.MaxInt64 {
		return 0, fmt.Errorf("invalid rate %q: want e.g. 50MB/s, 1GiB/s", s)
	}
	return int64(n), nil
}

// parseShard reads --shard K/N with 0 ≤ K < N (Slurm array ids, Kubernetes
// JOB_COMPLETION_INDEX).
func parseShard(s string) (k, n uint64, err error) {
	a, b, ok := strings.Cut(s, "/")
	if ok {
		k, err = strconv.ParseUint(a, 10, 32)
		if err == nil {
			n, err = strconv.ParseUint(b, 10, 32)
		}
	}
	if !ok || err != nil || n == 0 || k >= n {
		return 0, 0, fmt.Errorf("invalid shard %q: want K/N with 0 <= K < N, e.g. 0/4", s)
	}
	return k, n, nil
}

// parseIonice reads --ionice: idle, best-effort[:0-7], realtime[:0-7].
func parseIonice(s string) (class, level int, err error) {
	name, lv, hasLevel := strings.Cut(s, ":")
	switch name {
	case "realtime", "rt":
		class = 1
	case "best-effort", "be":
		class = 2
	case "idle":
		class = 3
	default:
		return 0, 0, fmt.Errorf("invalid --ionice %q: want idle, best-effort[:0-7] or realtime[:0-7]", s)
	}
	level = 4
	if hasLevel {
		if class == 3 {
			return 0, 0, fmt.Errorf("invalid --ionice %q: idle takes no level", s)
		}
		n, err := strconv.Atoi(lv)
		if err != nil || n < 0 || n > 7 {
			return 0, 0, fmt.Errorf("invalid --ionice %q: level 0 (highest) to 7", s)
		}
		level = n
	}
	if class == 3 {
		level = 0
	}
	return class, level, nil
}
