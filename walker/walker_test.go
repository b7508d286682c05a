package walker

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mktree builds a tree from path → content; content "->X" makes a symlink to X,
// "|fifo" a FIFO, and a path ending in "/" an empty directory.
func mktree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasPrefix(c, "->"):
			err = os.Symlink(c[2:], full)
		case c == "|fifo":
			err = unix.Mkfifo(full, 0o644)
		default:
			err = os.WriteFile(full, []byte(c), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func paths(ps ...string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		for _, p := range ps {
			if !yield(p, nil) {
				return
			}
		}
	}
}

// walkAll runs Walk and returns "rel:type[:err]" strings in emission order.
func walkAll(t *testing.T, opt Options, roots ...string) []string {
	t.Helper()
	out := make(chan []Entry, 4)
	errc := make(chan error, 1)
	go func() {
		errc <- Walk(context.Background(), paths(roots...), opt, out)
		close(out)
	}()
	var res []string
	for b := range out {
		for i := range b {
			e := &b[i]
			s := e.Rel + ":" + e.Type.String()
			if e.Rel == "" {
				s = filepath.Base(e.Root.Path) + ":" + e.Type.String()
			}
			if e.Err != nil {
				s += ":" + e.Err.Error()
			}
			res = append(res, s)
			e.Done()
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return res
}

func sorted(s []string) []string { slices.Sort(s); return s }

var basicTree = map[string]string{
	"a.txt":          "a",
	"b.log":          "b",
	"sub/c.txt":      "c",
	"sub/deep/d.go":  "d",
	"sub/deep/e.txt": "e",
	"skip/f.txt":     "f",
	"link":           "->a.txt",
	"pipe":           "|fifo",
	"empty/":         "",
}

func TestWalkTypesAndModes(t *testing.T) {
	root := mktree(t, basicTree)
	want := []string{
		"a.txt:file", "b.log:file", "link:symbolic link", "pipe:special file",
		"skip/f.txt:file", "sub/c.txt:file", "sub/deep/d.go:file", "sub/deep/e.txt:file",
	}
	for _, tc := range []struct {
		name string
		opt  Options
	}{
		{"parallel", Options{MaxDepth: -1}},
		{"parallel-one-reader", Options{MaxDepth: -1, Readers: 1}},
		{"sorted", Options{MaxDepth: -1, Sorted: true}},
		{"batch-of-one", Options{MaxDepth: -1, BatchSize: func() int { return 1 }}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if g := sorted(walkAll(t, tc.opt, root)); !slices.Equal(g, want) {
				t.Errorf("got %q\nwant %q", g, want)
			}
		})
	}
}

func TestWalkSortedOrderIsDepthFirstByName(t *testing.T) {
	root := mktree(t, basicTree)
	want := []string{
		"a.txt:file", "b.log:file", "link:symbolic link", "pipe:special file",
		"skip/f.txt:file", "sub/c.txt:file", "sub/deep/d.go:file", "sub/deep/e.txt:file",
	}
	for range 3 {
		if g := walkAll(t, Options{MaxDepth: -1, Sorted: true}, root); !slices.Equal(g, want) {
			t.Fatalf("got %q\nwant %q", g, want)
		}
	}
}

func TestWalkFilters(t *testing.T) {
	root := mktree(t, basicTree)
	for _, tc := range []struct {
		name             string
		include, exclude []string
		maxDepth         int
		want             []string
	}{
		{"include base name", []string{"*.txt"}, nil, -1,
			[]string{"a.txt:file", "skip/f.txt:file", "sub/c.txt:file", "sub/deep/e.txt:file"}},
		{"exclude prunes dir", nil, []string{"skip", "sub"}, -1,
			[]string{"a.txt:file", "b.log:file", "link:symbolic link", "pipe:special file"}},
		{"path glob with **", []string{"sub/**/*.txt"}, nil, -1,
			[]string{"sub/c.txt:file", "sub/deep/e.txt:file"}},
		{"path glob one level", []string{"sub/*"}, nil, -1, []string{"sub/c.txt:file"}},
		{"include and exclude", []string{"*.txt"}, []string{"sub/deep"}, -1,
			[]string{"a.txt:file", "skip/f.txt:file", "sub/c.txt:file"}},
		{"max-depth 1", nil, nil, 1,
			[]string{"a.txt:file", "b.log:file", "link:symbolic link", "pipe:special file"}},
		{"max-depth 2", []string{"*.txt"}, nil, 2,
			[]string{"a.txt:file", "skip/f.txt:file", "sub/c.txt:file"}},
		{"max-depth 0", nil, nil, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewFilter(tc.include, tc.exclude)
			if err != nil {
				t.Fatal(err)
			}
			g := sorted(walkAll(t, Options{MaxDepth: tc.maxDepth, Filter: f}, root))
			if !slices.Equal(g, tc.want) {
				t.Errorf("got %q\nwant %q", g, tc.want)
			}
		})
	}
}

func TestWalkDirsOption(t *testing.T) {
	root := mktree(t, map[string]string{"a": "a", "d/b": "b", "d/e/": ""})
	g := sorted(walkAll(t, Options{MaxDepth: -1, Dirs: true}, root))
	want := []string{filepath.Base(root) + ":directory", "a:file", "d/b:file", "d/e:directory", "d:directory"}
	if !slices.Equal(g, sorted(want)) {
		t.Errorf("got %q\nwant %q", g, want)
	}
}

func TestWalkFollowLoopTerminates(t *testing.T) {
	root := mktree(t, map[string]string{
		"a/f":       "f",
		"a/up":      "->..",
		"a/self":    "->.",
		"b/to-a":    "->../a",
		"dangling":  "->nowhere",
		"file-link": "->a/f",
	})
	g := sorted(walkAll(t, Options{MaxDepth: -1, Follow: true, Sorted: true}, root))
	// Every directory is read once; later arrivals are reported, not walked.
	files := 0
	for _, s := range g {
		if strings.HasSuffix(s, ":file") {
			files++
		}
	}
	if files != 2 { // a/f and file-link
		t.Errorf("files found: %d, want 2: %q", files, g)
	}
	if !slices.Contains(g, "dangling:symbolic link:"+ErrDangling.Error()) {
		t.Errorf("dangling link not reported: %q", g)
	}
	visited := 0
	for _, s := range g {
		if strings.HasSuffix(s, ErrVisited.Error()) {
			visited++
		}
	}
	if visited != 3 { // a/up, a/self, b/to-a (or a, whichever came second)
		t.Errorf("loop reports: %d, want 3: %q", visited, g)
	}
}

// Each file once per run however the PATHs overlap (SAFETY 6); hard links
// stay distinct paths. Named are the arguments; other roots come from stdin.
func TestWalkOverlappingRoots(t *testing.T) {
	root := mktree(t, map[string]string{"sub/f": "f", "g": "g", "x/h": "h"})
	if err := os.Link(filepath.Join(root, "g"), filepath.Join(root, "link-to-g")); err != nil {
		t.Fatal(err)
	}
	j := func(p string) string { return filepath.Join(root, p) }
	seen := ":" + ErrSeen.Error()
	base := filepath.Base(root)
	tests := []struct {
		name  string
		roots []string
		named int // how many of roots are arguments; the rest are from stdin
		want  []string
	}{
		{"directory inside another", []string{root, j("sub")}, 2,
			[]string{"g:file", "link-to-g:file", "x/h:file", "f:file"}},
		{"directory inside another, named first", []string{j("sub"), root}, 2,
			[]string{"f:file", "g:file", "link-to-g:file", "x/h:file"}},
		{"the same directory twice", []string{root, root + "/."}, 2,
			[]string{"g:file", "link-to-g:file", "sub/f:file", "x/h:file", ".:directory" + seen}},
		{"a file inside a directory, named twice", []string{root, j("g"), j("x/../g")}, 3,
			[]string{"link-to-g:file", "sub/f:file", "x/h:file", "g:file", "g:file" + seen}},
		{"a file named first", []string{j("sub/f"), root}, 2,
			[]string{"f:file", "g:file", "link-to-g:file", "x/h:file"}},
		{"stdin repeats", []string{j("g"), j("x"), j("g"), j("x"), j("link-to-g")}, 0,
			[]string{"g:file", "h:file", "g:file" + seen, "x:directory" + seen, "link-to-g:file"}},
		{"stdin repeats an argument", []string{j("x"), j("g"), j("x"), j("g")}, 2,
			[]string{"h:file", "g:file", "x:directory" + seen, "g:file" + seen}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := walkAll(t, Options{MaxDepth: -1, Sorted: true, Named: tt.roots[:tt.named]}, tt.roots...)
			for i := range g {
				g[i] = strings.TrimPrefix(g[i], base+"/")
			}
			// walkAll shows a root by its base name; the rest is below root.
			if !slices.Equal(g, tt.want) {
				t.Errorf("got %q\nwant %q", g, tt.want)
			}
		})
	}
}

func TestWalkRootErrorsAndFileRoots(t *testing.T) {
	root := mktree(t, map[string]string{"f": "f", "pipe": "|fifo"})
	g := walkAll(t, Options{MaxDepth: -1, Sorted: true},
		filepath.Join(root, "missing"), filepath.Join(root, "f"), filepath.Join(root, "pipe"))
	want := []string{"missing:file:no such file or directory", "f:file", "pipe:special file"}
	if !slices.Equal(g, want) {
		t.Errorf("got %q\nwant %q", g, want)
	}
}

func TestWalkVanishedDirectoryIsANote(t *testing.T) {
	root := mktree(t, map[string]string{"ok": "x", "vanish/x": "y"})
	// A directory removed between listing and reading: read it directly.
	out := make(chan []Entry, 16)
	opt := Options{MaxDepth: -1}
	opt.setDefaults()
	w := &walk{ctx: context.Background(), opt: opt, out: out, visited: map[devIno]struct{}{}}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &Root{Path: root, fd: fd}
	r.acquire()
	if err := os.RemoveAll(filepath.Join(root, "vanish")); err != nil {
		t.Fatal(err)
	}
	em := w.newEmitter()
	w.readDir(dirJob{root: r, rel: "vanish", depth: 1}, em, make([]byte, scratchSize))
	em.flush()
	b := <-out
	if len(b) != 1 || !errors.Is(b[0].Err, ErrVanished) || b[0].Rel != "vanish" {
		t.Fatalf("got %+v, want one vanished entry for vanish", b)
	}
	b[0].Done()
	r.release()
}

func countFds(t *testing.T) int {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(des)
}

func TestRootDescriptorsAreClosed(t *testing.T) {
	root := mktree(t, basicTree)
	before := countFds(t)
	for range 5 {
		walkAll(t, Options{MaxDepth: -1}, root, root+"/sub", root+"/a.txt")
	}
	if after := countFds(t); after != before {
		t.Errorf("open descriptors: %d before, %d after: root descriptors leak", before, after)
	}
}

// TestOpenNeverLeavesTheTree swaps a listed directory for a symlink to a directory
// outside the tree: opening entries below it must fail, with openat2 and with the
// os.Root fallback.
func TestOpenNeverLeavesTheTree(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		name := "openat2"
		if fallback {
			name = "os.Root"
		}
		t.Run(name, func(t *testing.T) {
			old := noOpenat2.Load()
			noOpenat2.Store(fallback)
			defer noOpenat2.Store(old)
			outside := mktree(t, map[string]string{"secret": "outside"})
			root := mktree(t, map[string]string{"d/secret": "inside", "f": "f"})
			out := make(chan []Entry, 16)
			errc := make(chan error, 1)
			go func() {
				errc <- Walk(context.Background(), paths(root), Options{MaxDepth: -1, Sorted: true}, out)
				close(out)
			}()
			var es []Entry
			for b := range out {
				es = append(es, b...)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			// The walk is over, the entries still hold the root open.
			if err := os.RemoveAll(filepath.Join(root, "d")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(root, "d")); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(root, "f")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "f")); err != nil {
				t.Fatal(err)
			}
			for i := range es {
				e := &es[i]
				fd, err := e.Open(false)
				if err == nil {
					buf := make([]byte, 64)
					n, _ := unix.Read(fd, buf)
					unix.Close(fd)
					if string(buf[:n]) == "outside" {
						t.Errorf("%s: read a file outside the tree through a swapped symlink", e.Rel)
					}
				} else if !errors.Is(err, syscall.ELOOP) && !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.ENOTDIR) && !errors.Is(err, syscall.ENOENT) {
					t.Errorf("%s: unexpected error %v", e.Rel, err)
				}
				e.Done()
			}
		})
	}
}

func TestFilterPatterns(t *testing.T) {
	for _, tc := range []struct {
		include, exclude []string
		rel              string
		want             bool
	}{
		{[]string{"*.txt"}, nil, "a/b/c.txt", true},
		{[]string{"*.txt"}, nil, "a/b/c.log", false},
		{[]string{"a/*.txt"}, nil, "a/b/c.txt", false},
		{[]string{"a/**/*.txt"}, nil, "a/b/c.txt", true},
		{[]string{"**/c.txt"}, nil, "c.txt", true},
		{[]string{"/a/*.txt"}, nil, "a/x.txt", true},
		{nil, []string{"c.*"}, "a/c.txt", false},
		{nil, []string{"{x,c}.txt"}, "a/c.txt", false},
		{[]string{"[ab].txt"}, nil, "b.txt", true},
		{[]string{"a,b.txt"}, nil, "a,b.txt", true},
	} {
		f, err := NewFilter(tc.include, tc.exclude)
		if err != nil {
			t.Fatalf("%v %v: %v", tc.include, tc.exclude, err)
		}
		if got := f.Selected(tc.rel); got != tc.want {
			t.Errorf("include %q exclude %q: Selected(%q) = %v, want %v", tc.include, tc.exclude, tc.rel, got, tc.want)
		}
	}
	for _, bad := range []string{"", "[", "a/[b"} {
		if _, err := NewFilter([]string{bad}, nil); err == nil {
			t.Errorf("NewFilter(%q): got nil error, want invalid pattern", bad)
		}
	}
}

func TestEntryPath(t *testing.T) {
	for _, tc := range []struct{ root, rel, want string }{
		{"tree", "a/b", "tree/a/b"},
		{"tree/", "a", "tree/a"},
		{".", "a", "./a"},
		{"/", "etc", "/etc"},
		{"f.txt", "", "f.txt"},
	} {
		e := Entry{Root: &Root{Path: tc.root}, Rel: tc.rel}
		if got := e.Path(); got != tc.want {
			t.Errorf("Path(%q, %q) = %q, want %q", tc.root, tc.rel, got, tc.want)
		}
		if got := string(e.AppendPath(nil)); got != tc.want {
			t.Errorf("AppendPath(%q, %q) = %q, want %q", tc.root, tc.rel, got, tc.want)
		}
	}
}

func TestWalkCancelReturns(t *testing.T) {
	root := mktree(t, basicTree)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := make(chan []Entry) // nobody reads: Walk must not block on it
	if err := Walk(ctx, paths(root, root), Options{MaxDepth: -1}, out); !errors.Is(err, context.Canceled) {
		t.Errorf("Walk after cancel: %v, want context.Canceled", err)
	}
}

// TestBatchSizeAfterRecycle: a recycled batch larger than the size asked for
// must not make batches larger (the engine asks for 1 when files are costly,
// to spread them over the workers).
func TestBatchSizeAfterRecycle(t *testing.T) {
	dir := t.TempDir()
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for range 8 {
		Recycle(make([]Entry, 0, 256))
	}
	out := make(chan []Entry, 64)
	opt := Options{MaxDepth: -1, Readers: 1, BatchSize: func() int { return 1 }}
	if err := Walk(context.Background(), paths(dir), opt, out); err != nil {
		t.Fatal(err)
	}
	close(out)
	n := 0
	for b := range out {
		if len(b) != 1 {
			t.Errorf("batch of %d entries, asked for 1", len(b))
		}
		n += len(b)
		DoneAll(b)
		Recycle(b)
	}
	if n != 20 {
		t.Errorf("%d entries, want 20", n)
	}
}

// A sorted walk holds one directory's names compactly: per name about its
// length and a word, not a string and an Entry each (which made -k over a
// directory of a million entries take 360 MB). The names span several chunks
// of the arena, and the order is still byte order, subdirectories included.
func TestWalkSortedLargeDirectory(t *testing.T) {
	root := t.TempDir()
	// tmpfs where there is one: creating files on this ext4 is slow.
	if shm, err := os.MkdirTemp("/dev/shm", "walker-test-"); err == nil {
		root = shm
		t.Cleanup(func() { os.RemoveAll(shm) })
	}
	const n = 5000
	var want []string
	for i := range n {
		// Lengths vary, so that names end anywhere in a chunk.
		name := fmt.Sprintf("%0*d", 1+i%50, i)
		want = append(want, name)
		if err := unix.Close(must(unix.Open(filepath.Join(root, name), unix.O_CREAT|unix.O_WRONLY, 0o644))); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"5", "6666", "zz"} {
		if err := os.Mkdir(filepath.Join(root, d+".d"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, d+".d", "f"), nil, 0o644)
		want = append(want, d+".d/f")
	}
	slices.Sort(want) // "X.d/f" sorts where "X.d" does: no other name starts "X."
	for i := range want {
		want[i] += ":file"
	}
	// Held in memory; spilled to a file in runs of 700 names, merged; and
	// held in memory after all where no temporary file can be made.
	for _, tc := range []struct {
		spill  int
		tmpdir string
	}{{spillNames, ""}, {700, ""}, {700, filepath.Join(root, "nowhere")}} {
		t.Run(fmt.Sprint("spill=", tc.spill, ",tmpdir=", tc.tmpdir), func(t *testing.T) {
			defer func(old int) { spillNames = old }(spillNames)
			spillNames = tc.spill
			if tc.tmpdir != "" {
				t.Setenv("TMPDIR", tc.tmpdir)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			g := walkAll(t, Options{MaxDepth: -1, Sorted: true}, root)
			runtime.ReadMemStats(&after)
			if !slices.Equal(g, want) {
				for i := range min(len(g), len(want)) {
					if g[i] != want[i] {
						t.Fatalf("entry %d: got %q, want %q (of %d, %d)", i, g[i], want[i], len(g), len(want))
					}
				}
				t.Fatalf("got %d entries, want %d", len(g), len(want))
			}
			// What walkAll keeps (its result strings) is counted too: the
			// bound leaves room for it, not for a string and an Entry held
			// per name.
			if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 400 {
				t.Errorf("allocated %d bytes per entry", per)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// PostOrder hands over a directory only once every entry below it is Done,
// sorted or not: the consumer here holds entries back and lets them go late.
func TestWalkPostOrder(t *testing.T) {
	files := map[string]string{"top": "t"}
	for _, d := range []string{"a", "a/b", "a/b/c", "d", "d/e"} {
		for i := range 5 {
			files[fmt.Sprintf("%s/f%d", d, i)] = "x"
		}
	}
	files["empty/"] = ""
	root := mktree(t, files)
	for _, sortedWalk := range []bool{false, true} {
		t.Run(fmt.Sprint("sorted=", sortedWalk), func(t *testing.T) {
			out := make(chan []Entry, 1)
			errc := make(chan error, 1)
			opt := Options{MaxDepth: -1, Dirs: true, PostOrder: true, Sorted: sortedWalk, Readers: 3,
				BatchSize: func() int { return 2 }}
			go func() {
				errc <- Walk(context.Background(), paths(root), opt, out)
				close(out)
			}()
			done := map[string]bool{}
			var held []Entry
			release := func() {
				for i := range held {
					done[held[i].Rel] = true
					held[i].Done()
				}
				held = held[:0]
			}
			dirs := 0
		loop:
			for {
				select {
				case b, ok := <-out:
					if !ok {
						break loop
					}
					for _, e := range b {
						if e.Err != nil {
							t.Errorf("%s: %v", e.Rel, e.Err)
						}
						if e.Type == Dir {
							dirs++
							for p := range files {
								p = strings.TrimSuffix(p, "/")
								if (e.Rel == "" || strings.HasPrefix(p, e.Rel+"/")) && !done[p] {
									t.Errorf("directory %q handed over before %q was done", e.Rel, p)
								}
							}
						}
						held = append(held, e)
					}
				case <-time.After(2 * time.Millisecond):
					release() // the walk waits for these
				}
			}
			release()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if dirs != 7 {
				t.Errorf("%d directories, want 7", dirs)
			}
		})
	}
}

// Past maxQueued directories waiting, a reader reads a subdirectory itself, at
// once: everything is still found once, in post-order too.
func TestWalkQueueFull(t *testing.T) {
	files := map[string]string{}
	var want []string
	for i := range 40 {
		for _, p := range []string{fmt.Sprintf("d%02d/f", i), fmt.Sprintf("d%02d/s/g", i)} {
			files[p] = "x"
			want = append(want, p+":file")
		}
	}
	root := mktree(t, files)
	defer func(old int) { maxQueued = old }(maxQueued)
	maxQueued = 2
	for _, post := range []bool{false, true} {
		g := sorted(walkAll(t, Options{MaxDepth: -1, Readers: 3, PostOrder: post}, root))
		if !slices.Equal(g, sorted(want)) {
			t.Errorf("PostOrder %v: got %d entries %q\nwant %d", post, len(g), g, len(want))
		}
	}
}

// TestOpenDirNoSymlinks: a symlink in any component of the name is refused,
// with openat2 and with the component-by-component fallback; a real
// directory opens, absolute or relative.
func TestOpenDirNoSymlinks(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "real", "sub"), 0o700)
	os.Symlink("real", filepath.Join(dir, "link"))
	t.Chdir(dir)
	for _, fallback := range []bool{false, true} {
		old := noOpenat2.Load()
		noOpenat2.Store(fallback)
		for _, tc := range []struct {
			dir string
			ok  bool
		}{
			{filepath.Join(dir, "link"), false},
			{filepath.Join(dir, "link") + "/", false},
			{filepath.Join(dir, "link") + "/.", false},
			{filepath.Join(dir, "link", "sub"), false},
			{"link/sub", false},
			{"real/../link/sub", false},
			{filepath.Join(dir, "real", "sub"), true},
			{"real/sub/", true},
			{"real/./sub/..", true},
			{".", true},
		} {
			fd, err := OpenDirNoSymlinks(tc.dir)
			if err == nil {
				unix.Close(fd)
			}
			if (err == nil) != tc.ok {
				t.Errorf("OpenDirNoSymlinks(%q) (fallback %v): %v, want ok %v", tc.dir, fallback, err, tc.ok)
			}
		}
		noOpenat2.Store(old)
	}
}

// TestWalkQueueFullDepth: with the queue full, a reader reads depth first
// only maxInline levels, so long chains of directories do not need a
// descriptor per level per reader: under an open-file limit that 3 readers ×
// 150 levels would pass, every file is still found (subtrees were lost to
// EMFILE).
func TestWalkQueueFullDepth(t *testing.T) {
	files := map[string]string{}
	var want []string
	for i := range 12 {
		p := fmt.Sprintf("c%02d/", i) + strings.Repeat("d/", 150) + "f"
		files[p] = "x"
		want = append(want, p+":file")
	}
	root := mktree(t, files)
	defer func(old int) { maxQueued = old }(maxQueued)
	maxQueued = 1
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	low := lim
	low.Cur = 100
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	g := sorted(walkAll(t, Options{MaxDepth: -1, Readers: 3, DirHandles: 8}, root))
	if !slices.Equal(g, sorted(want)) {
		t.Errorf("got %d entries %q\nwant %d", len(g), g, len(want))
	}
}
