package marlin

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Spec is one printer as given on the command line: --printer NAME=PATH[,baud=N] or
// --printer NAME=sim.
type Spec struct {
	Name string // printer name: letters, digits, '-' and '_', at most 32, starting with a letter or digit
	Path string // serial device path; empty when Sim
	Baud int    // link speed; 0 when not given (the controller then uses 250000)
	Sim  bool   // use the built-in simulator
}

// bauds are the link speeds Marlin's BAUDRATE allows.
var bauds = []int{2400, 9600, 19200, 38400, 57600, 115200, 250000, 500000, 1000000}

// ParsePrinterSpec parses the value of a --printer flag.
func ParsePrinterSpec(s string) (Spec, error) {
	var sp Spec
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Spec{}, fmt.Errorf("printer %q: want NAME=PATH[,baud=N] or NAME=sim", s)
	}
	if err := checkName(name); err != nil {
		return Spec{}, fmt.Errorf("printer %q: %w", s, err)
	}
	sp.Name = name
	fields := strings.Split(rest, ",")
	target := fields[0]
	switch {
	case target == "sim":
		sp.Sim = true
	case target == "":
		return Spec{}, fmt.Errorf("printer %q: no serial port path", s)
	default:
		for i := 0; i < len(target); i++ {
			if c := target[i]; c < 0x20 || c == 0x7f {
				return Spec{}, fmt.Errorf("printer %q: control character in the port path", s)
			}
		}
		if !strings.HasPrefix(target, "/") {
			return Spec{}, fmt.Errorf("printer %q: port path %q is not absolute (want /dev/serial/by-id/... or a pty)", s, target)
		}
		sp.Path = target
	}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return Spec{}, fmt.Errorf("printer %q: option %q: want key=value", s, f)
		}
		if seen[k] {
			return Spec{}, fmt.Errorf("printer %q: option %q given twice", s, k)
		}
		seen[k] = true
		switch k {
		case "baud":
			n, err := strconv.Atoi(v)
			if err != nil || !validBaud(n) {
				return Spec{}, fmt.Errorf("printer %q: baud %q: want one of %v", s, v, bauds)
			}
			sp.Baud = n
		default:
			return Spec{}, fmt.Errorf("printer %q: unknown option %q", s, k)
		}
	}
	return sp, nil
}

func validBaud(n int) bool {
	for _, b := range bauds {
		if n == b {
			return true
		}
	}
	return false
}

func checkName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 32 {
		return errors.New("name longer than 32 characters")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '-' && c != '_')) {
			return fmt.Errorf("name %q: use letters, digits, '-' and '_', starting with a letter or digit", name)
		}
	}
	return nil
}

// String formats the spec as the flag value it came from.
func (sp Spec) String() string {
	t := sp.Path
	if sp.Sim {
		t = "sim"
	}
	s := sp.Name + "=" + t
	if sp.Baud != 0 {
		s += ",baud=" + strconv.Itoa(sp.Baud)
	}
	return s
}
