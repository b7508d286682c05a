package walker

import (
	"fmt"
	"path"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// Filter selects entries by glob. A pattern without '/' matches the base name; a
// pattern with '/' matches the path relative to the root, with ** for any depth.
type Filter struct {
	include, exclude []pattern
}

type pattern struct {
	glob     string
	wantPath bool // match against the path below the root, not the base name
}

// empty reports whether f selects everything.
func (f *Filter) empty() bool { return f == nil || len(f.include) == 0 && len(f.exclude) == 0 }

// NewFilter validates the patterns; an invalid one is a usage error for the caller.
func NewFilter(include, exclude []string) (*Filter, error) {
	f := &Filter{}
	for _, l := range []struct {
		globs []string
		dst   *[]pattern
	}{{include, &f.include}, {exclude, &f.exclude}} {
		for _, g := range l.globs {
			if g == "" {
				return nil, fmt.Errorf("empty glob pattern")
			}
			p := pattern{glob: strings.TrimPrefix(g, "/"), wantPath: strings.Contains(g, "/")}
			if !doublestar.ValidatePattern(p.glob) {
				return nil, fmt.Errorf("invalid glob pattern %q", g)
			}
			*l.dst = append(*l.dst, p)
		}
	}
	return f, nil
}

func (p pattern) match(rel string) bool {
	name := rel
	if !p.wantPath {
		name = path.Base(rel)
	}
	ok, _ := doublestar.Match(p.glob, name)
	return ok
}

// Excluded reports whether rel (a path below the root) matches an exclude pattern.
// An excluded directory is pruned, not walked.
func (f *Filter) Excluded(rel string) bool {
	if f == nil {
		return false
	}
	for _, p := range f.exclude {
		if p.match(rel) {
			return true
		}
	}
	return false
}

// Selected reports whether a non-directory entry passes the filter: not excluded,
// and matching an include pattern when there are any.
func (f *Filter) Selected(rel string) bool {
	if f == nil {
		return true
	}
	if f.Excluded(rel) {
		return false
	}
	if len(f.include) == 0 {
		return true
	}
	for _, p := range f.include {
		if p.match(rel) {
			return true
		}
	}
	return false
}
