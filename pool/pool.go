// Package pool runs a function over a stream with a fixed number of reused
// goroutines. It knows nothing about files.
package pool

import (
	"context"
	"sync"
)

// Run starts n workers. Each calls newWorker once, so it can keep private state
// (buffers, hash states) for its whole life, then applies the returned function to
// items received from in and sends each result to out, until in is closed or ctx
// is done. An item being processed when ctx is cancelled is still finished (fn
// should watch ctx) and its result sent, so the consumer must keep receiving from
// out until Run returns. Run returns ctx.Err() if it was cancelled, after every
// goroutine it started has returned. It never closes out.
func Run[T, R any](ctx context.Context, n int, in <-chan T, out chan<- R, newWorker func() func(context.Context, T) R) error {
	if n < 1 {
		n = 1
	}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			fn := newWorker()
			for {
				// A cancelled ctx wins over a ready item: stop dispatching at once.
				if ctx.Err() != nil {
					return
				}
				select {
				case <-ctx.Done():
					return
				case item, ok := <-in:
					if !ok {
						return
					}
					out <- fn(ctx, item)
				}
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}
