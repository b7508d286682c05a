package walker

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// bindDevices returns the devices that are mounted more than once, or that
// have a mount of one of their subdirectories (a bind mount): on them one
// directory can be reached by two paths that are not a loop (a bind mount of
// a sibling), so the walk remembers the directories it reads there to read
// each once (SAFETY 6). Elsewhere it remembers only those it is inside. It
// reads /proc/self/mountinfo and stats nothing, so a hung network mount
// cannot stop the run here; without /proc the set is empty. ok is false when
// mountinfo could not be read to its end: then no device can be ruled out.
func bindDevices() (map[uint64]struct{}, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, true
	}
	defer f.Close()
	return parseBinds(f)
}

// parseBinds reads mountinfo(5) lines for bindDevices.
func parseBinds(r io.Reader) (map[uint64]struct{}, bool) {
	seen := make(map[uint64]bool) // a device's first mount
	var binds map[uint64]struct{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJOR:MINOR ROOT MOUNTPOINT …
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		maj, min, ok := strings.Cut(fields[2], ":")
		if !ok {
			continue
		}
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		dev := unix.Mkdev(uint32(ma), uint32(mi))
		if fields[3] != "/" || seen[dev] {
			if binds == nil {
				binds = make(map[uint64]struct{})
			}
			binds[dev] = struct{}{}
		}
		seen[dev] = true
	}
	if sc.Err() != nil {
		return nil, false // not known: the caller remembers every directory
	}
	return binds, true
}
