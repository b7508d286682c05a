package main

import (
	"testing"
	"time"
)

func TestParseAge(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"7d", now.Add(-7 * 24 * time.Hour), true},
		{"12h", now.Add(-12 * time.Hour), true},
		{"1w2d", now.Add(-9 * 24 * time.Hour), true},
		{"1.5h", now.Add(-90 * time.Minute), true},
		{"1h30m", now.Add(-90 * time.Minute), true},
		{"90s", now.Add(-90 * time.Second), true},
		{"2026-11-01T14:00:00Z", time.Date(2026, 11, 1, 14, 0, 0, 0, time.UTC), true},
		{"2026-11-01", time.Date(2026, 11, 1, 0, 0, 0, 0, time.Local), true},
		{"2026-11-01 14:00", time.Date(2026, 11, 1, 14, 0, 0, 0, time.Local), true},
		{"", time.Time{}, false},
		{"7", time.Time{}, false},
		{"d", time.Time{}, false},
		{"7y", time.Time{}, false},
		{"-7d", time.Time{}, false},
		{"2026-13-01", time.Time{}, false},
		{"99999999999999999w", time.Time{}, false},
		// 2^63 ns exactly, which float64(math.MaxInt64) equals: would wrap.
		{"9223372036.854775808s", time.Time{}, false},
		{"2400-01-01", time.Date(2400, 1, 1, 0, 0, 0, 0, time.Local), true},
		{"1900-01-01T00:00:00Z", time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), true},
	} {
		got, err := parseAge(tc.in, now)
		if (err == nil) != tc.ok {
			t.Errorf("parseAge(%q): err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && !got.Equal(tc.want) {
			t.Errorf("parseAge(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true}, {"10MB", 10_000_000, true}, {"1.5GiB", 1610612736, true},
		{"1k", 1000, true}, {"1KiB", 1024, true}, {"", 0, false}, {"-1", 0, false}, {"ten", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseRateShardIonice(t *testing.T) {
	if n, err := parseRate("50MB/s"); err != nil || n != 50_000_000 {
		t.Errorf("parseRate(50MB/s) = %d, %v", n, err)
	}
	if _, err := parseRate("0"); err == nil {
		t.Error("parseRate(0): want an error")
	}
	for _, tc := range []struct {
		in   string
		k, n uint64
		ok   bool
	}{{"0/4", 0, 4, true}, {"3/4", 3, 4, true}, {"4/4", 0, 0, false}, {"1/0", 0, 0, false}, {"a/b", 0, 0, false}, {"1", 0, 0, false}, {"-1/4", 0, 0, false}} {
		k, n, err := parseShard(tc.in)
		if (err == nil) != tc.ok || k != tc.k || n != tc.n {
			t.Errorf("parseShard(%q) = %d/%d, %v", tc.in, k, n, err)
		}
	}
	for _, tc := range []struct {
		in           string
		class, level int
		ok           bool
	}{{"idle", 3, 0, true}, {"best-effort", 2, 4, true}, {"best-effort:7", 2, 7, true}, {"be:0", 2, 0, true}, {"idle:3", 0, 0, false}, {"best-effort:8", 0, 0, false}, {"fast", 0, 0, false}} {
		c, l, err := parseIonice(tc.in)
		if (err == nil) != tc.ok || c != tc.class || l != tc.level {
			t.Errorf("parseIonice(%q) = %d:%d, %v", tc.in, c, l, err)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "1w2d3h", "1.5h", "0s", ".5m", "1e9h", "9999999999w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDuration(s)
		if err == nil && d < 0 {
			t.Fatalf("parseDuration(%q) = %v: negative", s, d)
		}
		// Whatever Go accepts without our units, we accept the same.
		if gd, gerr := time.ParseDuration(s); gerr == nil && gd >= 0 && err == nil && d != gd {
			diff := d - gd
			if diff < -time.Microsecond || diff > time.Microsecond {
				t.Fatalf("parseDuration(%q) = %v, time.ParseDuration = %v", s, d, gd)
			}
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"10MB", "1.5GiB", "0", "1e3", "18446744073709551615", "5 kB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := parseSize(s); err == nil && n < 0 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
		if n, err := parseRate(s); err == nil && n <= 0 {
			t.Fatalf("parseRate(%q) = %d", s, n)
		}
	})
}

func FuzzParseAge(f *testing.F) {
	for _, s := range []string{"7d", "2026-11-01", "2026-11-01T14:00:00Z", "12h30m"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if got, err := parseAge(s, now); err == nil && got.After(now) && got.Year() < 1000 {
			t.Fatalf("parseAge(%q) = %v", s, got)
		}
	})
}
