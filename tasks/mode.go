package tasks

import (
	"fmt"
	"strings"
)

// Mode bits as chmod(1) knows them.
const (
	sISUID   = 0o4000
	sISGID   = 0o2000
	sISVTX   = 0o1000
	sIRWXU   = 0o700
	sIRWXG   = 0o070
	sIRWXO   = 0o007
	sIRUGO   = 0o444
	sIWUGO   = 0o222
	sIXUGO   = 0o111
	modeBits = 0o7777
)

type modeFlag uint8

const (
	flagOrdinary modeFlag = iota
	flagCopy              // g=u: copy existing bits of another class
	flagXIfAnyX           // X: execute if a directory or already executable
)

type modeChange struct {
	op        byte // '=', '+', '-'
	flag      modeFlag
	affected  uint32 // bits of the classes named (0: none named, umask applies)
	value     uint32
	mentioned uint32 // bits the clause mentions; setuid/setgid of directories are kept otherwise
}

// Mode is a parsed chmod(1) mode: octal or symbolic, applied exactly as GNU
// chmod applies it (gnulib's mode_compile and mode_adjust).
type Mode struct {
	text    string
	changes []modeChange
}

func (m *Mode) String() string { return m.text }

// ParseMode parses an octal ("644", "2775") or symbolic ("u+rwX,go-w", "a=r",
// "g=u") mode.
func ParseMode(s string) (*Mode, error) {
	m := &Mode{text: s}
	if s == "" {
		return nil, fmt.Errorf("invalid mode %q", s)
	}
	if s[0] >= '0' && s[0] <= '7' {
		var v uint32
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c < '0' || c > '7' {
				return nil, fmt.Errorf("invalid mode %q", s)
			}
			v = v*8 + uint32(c-'0')
			if v > modeBits {
				return nil, fmt.Errorf("invalid mode %q", s)
			}
		}
		// With fewer than 5 digits, chmod keeps a directory's setuid and setgid
		// bits unless the mode sets them; "02755" or "00755" say it outright.
		mentioned := uint32(modeBits)
		if len(s) < 5 {
			mentioned = v&(sISUID|sISGID) | sISVTX | 0o777
		}
		m.changes = []modeChange{{op: '=', affected: modeBits, value: v, mentioned: mentioned}}
		return m, nil
	}
	for _, clause := range strings.Split(s, ",") {
		var affected uint32
		i := 0
	who:
		for ; i < len(clause); i++ {
			switch clause[i] {
			case 'u':
				affected |= sISUID | sIRWXU
			case 'g':
				affected |= sISGID | sIRWXG
			case 'o':
				affected |= sISVTX | sIRWXO
			case 'a':
				affected |= modeBits
			default:
				break who
			}
		}
		if i == len(clause) {
			return nil, fmt.Errorf("invalid mode %q", s)
		}
		for i < len(clause) {
			op := clause[i]
			if op != '=' && op != '+' && op != '-' {
				return nil, fmt.Errorf("invalid mode %q", s)
			}
			i++
			var value uint32
			flag := flagOrdinary
			if i < len(clause) && strings.IndexByte("ugo", clause[i]) >= 0 {
				switch clause[i] {
				case 'u':
					value = sIRWXU
				case 'g':
					value = sIRWXG
				case 'o':
					value = sIRWXO
				}
				flag = flagCopy
				i++
			} else {
			perms:
				for ; i < len(clause); i++ {
					switch clause[i] {
					case 'r':
						value |= sIRUGO
					case 'w':
						value |= sIWUGO
					case 'x':
						value |= sIXUGO
					case 'X':
						flag = flagXIfAnyX
					case 's':
						value |= sISUID | sISGID
					case 't':
						value |= sISVTX
					default:
						break perms
					}
				}
			}
			mentioned := value
			if affected != 0 {
				mentioned = affected & value
			}
			m.changes = append(m.changes, modeChange{op: op, flag: flag, affected: affected, value: value, mentioned: mentioned})
		}
	}
	return m, nil
}

// Apply returns the new permission bits for a file with mode old (permission bits
// only), given the process umask, as chmod(1) computes them.
func (m *Mode) Apply(old uint32, dir bool, umask uint32) uint32 {
	newmode := old & modeBits
	for _, c := range m.changes {
		var omit uint32
		if dir {
			omit = (sISUID | sISGID) &^ c.mentioned
		}
		value := c.value
		switch c.flag {
		case flagCopy:
			value &= newmode
			var v uint32
			if value&sIRUGO != 0 {
				v |= sIRUGO
			}
			if value&sIWUGO != 0 {
				v |= sIWUGO
			}
			if value&sIXUGO != 0 {
				v |= sIXUGO
			}
			value |= v
		case flagXIfAnyX:
			if newmode&sIXUGO != 0 || dir {
				value |= sIXUGO
			}
		}
		if c.affected != 0 {
			value &= c.affected &^ omit
		} else {
			value &= ^umask &^ omit
		}
		switch c.op {
		case '=':
			// Without a class, "=" still clears the bits the umask hides from
			// value (coreutils: "=r" under umask 022 gives 0444).
			preserved := omit
			if c.affected != 0 {
				preserved |= ^c.affected
			}
			newmode = newmode&preserved | value
		case '+':
			newmode |= value
		case '-':
			newmode &^= value
		}
	}
	return newmode & modeBits
}
