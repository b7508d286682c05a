package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// usr1 receives SIGUSR1 from the moment run starts, so that `kill -USR1` never
// kills pbatch; the run loop answers with a status line, as dd does.
var usr1 = make(chan os.Signal, 1)

// progress is the live display on a terminal. The collector drives it from a
// ticker (10 updates a second whatever the file rate), so its cost does not grow
// with the number of files; it is erased before any other output reaches the
// terminal and before the summary.
type progress struct {
	bar   *progressbar.ProgressBar
	known bool // the walk has finished: the total is known, ETA is shown
	shown bool
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newProgress(w io.Writer) *progress {
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetSpinnerChangeInterval(0), // no goroutine of its own
		progressbar.OptionThrottle(0),                 // the collector's ticker throttles
		progressbar.OptionSetItsString("files"),
		progressbar.OptionShowIts(),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionFullWidth(),
		progressbar.OptionUseANSICodes(true),
	)
	return &progress{bar: bar}
}

func (p *progress) update(c *collector, found int64, walkDone bool) {
	// The total grows while the walk runs (progressbar ignores counts while
	// the total is unknown); once the walk is done it is final and the ETA holds.
	p.bar.ChangeMax64(max(found, c.done, 1))
	p.known = walkDone
	el := time.Since(c.start).Seconds()
	desc := ""
	if !c.noBytes && !c.meta {
		desc = humanize.Bytes(uint64(c.bytes))
		if el > 0 {
			desc += ", " + humanize.Bytes(uint64(float64(c.bytes)/el)) + "/s"
		}
	}
	var parts []string
	if desc != "" {
		parts = append(parts, desc)
	}
	if !walkDone {
		parts = append(parts, humanize.Comma(found)+" found so far")
	}
	if c.failed > 0 {
		parts = append(parts, humanize.Comma(c.failed)+" failed")
	}
	desc = strings.Join(parts, ", ")
	p.bar.Describe(desc)
	p.bar.Set64(c.done)
	p.shown = true
}

func (p *progress) clear() {
	if p != nil && p.shown {
		p.bar.Clear()
		p.shown = false
	}
}

// statusLine is the answer to SIGUSR1.
func (c *collector) statusLine(found int64, walkDone bool) string {
	walk := "walk running"
	if walkDone {
		walk = "walk done"
	}
	el := time.Since(c.start)
	rate := ""
	if s := el.Seconds(); s > 0 {
		rate = ", " + humanize.Bytes(uint64(float64(c.bytes)/s)) + "/s"
	}
	return fmt.Sprintf("pbatch: status: %s of %s entries done (%s), %s%s, %s failed, %s skipped, %s elapsed\n",
		humanize.Comma(c.done), humanize.Comma(found), walk, humanize.Bytes(uint64(c.bytes)), rate,
		humanize.Comma(c.failed), humanize.Comma(c.skipped), roundDuration(el))
}
