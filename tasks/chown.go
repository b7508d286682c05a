package tasks

import (
	"context"
	"fmt"
	"os/user"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"pbatch/walker"
)

// Owner is a user and group; -1 leaves that part alone.
type Owner struct{ UID, GID int }

// ParseOwner parses chown(1)'s OWNER[:GROUP]: names or numeric ids, ":GROUP" for
// the group alone, "OWNER:" for the owner's login group.
func ParseOwner(s string) (Owner, error) {
	o := Owner{-1, -1}
	if s == "" {
		return o, fmt.Errorf("invalid owner %q", s)
	}
	name, group, hasColon := strings.Cut(s, ":")
	if name != "" {
		u, err := lookupUser(name)
		if err != nil {
			return o, err
		}
		o.UID = u.uid
		if hasColon && group == "" {
			if u.gid < 0 {
				return o, fmt.Errorf("invalid spec %q: user %s has no login group", s, name)
			}
			o.GID = u.gid // "OWNER:" means the owner's login group
		}
	}
	if group != "" {
		gid, err := lookupGroup(group)
		if err != nil {
			return o, err
		}
		o.GID = gid
	}
	if o.UID < 0 && o.GID < 0 && s != ":" {
		return o, fmt.Errorf("invalid owner %q", s)
	}
	return o, nil
}

type userIDs struct{ uid, gid int }

// lookupUser tries the name first, then a number, as chown does; "+N" is always
// a number.
func lookupUser(name string) (userIDs, error) {
	if n, ok := strings.CutPrefix(name, "+"); ok {
		return numericUser(n, name)
	}
	if u, err := user.Lookup(name); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return userIDs{uid, gid}, nil
	}
	return numericUser(name, name)
}

func numericUser(n, name string) (userIDs, error) {
	id, err := strconv.ParseUint(n, 10, 32)
	if err != nil || id == 1<<32-1 {
		return userIDs{}, fmt.Errorf("invalid user %q", name)
	}
	ids := userIDs{int(id), -1}
	if u, err := user.LookupId(n); err == nil {
		ids.gid, _ = strconv.Atoi(u.Gid)
	}
	return ids, nil
}

func lookupGroup(name string) (int, error) {
	n, forced := strings.CutPrefix(name, "+")
	if !forced {
		if g, err := user.LookupGroup(name); err == nil {
			gid, _ := strconv.Atoi(g.Gid)
			return gid, nil
		}
	}
	id, err := strconv.ParseUint(n, 10, 32)
	if err != nil || id == 1<<32-1 {
		return -1, fmt.Errorf("invalid group %q", name)
	}
	return int(id), nil
}

// Chown sets owner and group, writing only where they differ, through a
// descriptor of the inode it examined.
type Chown struct {
	to, from Owner
	noDeref  bool // -h: change symlinks themselves instead of skipping them
	opt      MetaOptions
}

// NewChown returns the chown task; from (--from) limits it to entries whose
// current owner and group match (-1 matches any).
func NewChown(to, from Owner, noDeref bool, opt MetaOptions) *Chown {
	if protectedHardlinks() {
		opt.AllowHardlinks = true
	}
	return &Chown{to: to, from: from, noDeref: noDeref, opt: opt}
}

func (t *Chown) NewWorker() Worker { return t }

func (t *Chown) Run(_ context.Context, e *walker.Entry, r *Result) {
	if e.Type == walker.Symlink && e.Err == nil && !t.noDeref {
		r.Status, r.Err = Skipped, skipReason(walker.Symlink)
		return
	}
	fd, st, ok := openMeta(e, r, !t.noDeref)
	if !ok {
		return
	}
	defer unix.Close(fd)
	if !(t.noDeref && st.Mode&unix.S_IFMT == unix.S_IFLNK) && skipMetaType(&st, r) {
		return
	}
	if unselected(t.opt.Select, &st, r) {
		return
	}
	if !t.opt.AllowHardlinks && isHardlinked(&st) {
		r.Status, r.Err = Skipped, errHardlink
		return
	}
	r.Old = [2]uint32{st.Uid, st.Gid}
	r.New = r.Old
	if (t.from.UID >= 0 && st.Uid != uint32(t.from.UID)) || (t.from.GID >= 0 && st.Gid != uint32(t.from.GID)) {
		return // --from does not match: unchanged
	}
	uid, gid := st.Uid, st.Gid
	if t.to.UID >= 0 {
		uid = uint32(t.to.UID)
	}
	if t.to.GID >= 0 {
		gid = uint32(t.to.GID)
	}
	r.New = [2]uint32{uid, gid}
	if uid == st.Uid && gid == st.Gid {
		return // no write: ctime stays as it is
	}
	r.Modified = true
	if t.opt.DryRun {
		return
	}
	// The kernel clears setuid/setgid of a file whose owner changes; they are
	// deliberately not restored.
	for {
		err := unix.Fchownat(fd, "", int(uid), int(gid), unix.AT_EMPTY_PATH)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			r.Status, r.Err = Failed, err
		}
		return
	}
}
