package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// blockingReader never returns from Read until release is closed.
type blockingReader struct{ release chan struct{} }

func (b blockingReader) Read(p []byte) (int, error) {
	<-b.release
	return 0, io.EOF
}

func TestCtxReader(t *testing.T) {
	t.Run("passes data and EOF through", func(t *testing.T) {
		in := strings.Repeat("x", 200<<10) // more than one internal buffer
		got, err := io.ReadAll(&ctxReader{ctx: context.Background(), r: strings.NewReader(in)})
		if err != nil || string(got) != in {
			t.Errorf("got %d bytes, %v; want %d bytes, nil", len(got), err, len(in))
		}
	})
	t.Run("a blocked read gives way to ctx", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		br := blockingReader{make(chan struct{})}
		defer close(br.release)
		r := &ctxReader{ctx: ctx, r: br}
		time.AfterFunc(50*time.Millisecond, cancel)
		done := make(chan error, 1)
		go func() {
			_, err := r.Read(make([]byte, 10))
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Read still blocked after cancel")
		}
		if _, err := r.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
			t.Errorf("after cancel: got %v, want context.Canceled", err)
		}
	})
}
