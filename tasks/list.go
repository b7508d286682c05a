package tasks

import (
	"context"

	"pbatch/walker"
)

// List does no I/O: every entry the walk yields is a result, so `pbatch list`
// shows exactly what a task would receive.
type List struct{}

func (List) NewWorker() Worker { return List{} }

func (List) Run(_ context.Context, e *walker.Entry, r *Result) {
	if e.Err == nil {
		return // OK, whatever the type: a task would receive it
	}
	fromWalk(e, r)
}
