package pool

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunProcessesEveryItemOnceWithBoundedConcurrency(t *testing.T) {
	for _, tc := range []struct{ workers, items int }{{1, 100}, {2, 1000}, {8, 5000}, {16, 3}} {
		in := make(chan int)
		out := make(chan int, 4)
		var inFlight, peak, created atomic.Int64
		go func() {
			defer close(in)
			for i := range tc.items {
				in <- i
			}
		}()
		errc := make(chan error, 1)
		go func() {
			errc <- Run(context.Background(), tc.workers, in, out, func() func(context.Context, int) int {
				created.Add(1)
				return func(_ context.Context, i int) int {
					n := inFlight.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					time.Sleep(time.Microsecond)
					inFlight.Add(-1)
					return i
				}
			})
			close(out)
		}()
		seen := make([]int, tc.items)
		for i := range out {
			seen[i]++
		}
		if err := <-errc; err != nil {
			t.Fatalf("workers=%d: Run returned %v, want nil", tc.workers, err)
		}
		for i, n := range seen {
			if n != 1 {
				t.Fatalf("workers=%d: item %d processed %d times, want 1", tc.workers, i, n)
			}
		}
		if got := peak.Load(); got > int64(tc.workers) {
			t.Errorf("workers=%d: peak in flight %d, want ≤ %d", tc.workers, got, tc.workers)
		}
		if got := created.Load(); got != int64(tc.workers) {
			t.Errorf("workers=%d: newWorker called %d times, want %d (workers are reused)", tc.workers, got, tc.workers)
		}
	}
}

func TestRunCancellationIsPrompt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan int) // never closed: only cancellation can end Run
	out := make(chan int, 100)
	var started sync.WaitGroup
	started.Add(2)
	go func() {
		in <- 1
		in <- 2
	}()
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, 2, in, out, func() func(context.Context, int) int {
			return func(ctx context.Context, i int) int {
				started.Done()
				<-ctx.Done() // a long task that honours ctx
				return i
			}
		})
	}()
	started.Wait()
	cancel()
	select {
	case err := <-errc:
		if err != context.Canceled {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancellation")
	}
	if got := len(out); got != 2 {
		t.Errorf("results of in-flight items: got %d, want 2 (they are finished and sent)", got)
	}
}

func TestRunStopsDispatchingAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan int, 100)
	for i := range 100 {
		in <- i
	}
	close(in)
	out := make(chan int, 100)
	var ran atomic.Int64
	Run(ctx, 1, in, out, func() func(context.Context, int) int {
		return func(_ context.Context, i int) int {
			if ran.Add(1) == 3 {
				cancel()
			}
			return i
		}
	})
	if got := ran.Load(); got != 3 {
		t.Errorf("items run: got %d, want 3 (nothing dispatched after cancel)", got)
	}
}
