package policy_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/policy"
)

// The named cases are refused on every path that uses this package: the API and
// terminal edge (CheckLine), the controller's filter (Check), and an upload (files.Put with
// CheckFile), where the refused file is not stored. That marlin.Controller.Send consults its
// Filter before queueing is the controller's own test.
func TestNamedCasesEveryPath(t *testing.T) {
	p, err := policy.New(policy.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var filter marlin.Filter = p
	store, err := files.New(files.Config{Dir: t.TempDir(), Check: p.CheckFile})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	st := marlin.Status{State: marlin.Operational}
	for _, line := range []string{"M104 S400", "M140 S200", "M303 S400", "M997", "M500", "M42",
		"M211 S0", "M302 P1", "M28", "M575"} {
		for _, r := range []policy.Role{policy.Operator, policy.Admin} {
			if _, err := p.CheckLine(r, line, st); !errors.Is(err, policy.ErrRefused) {
				t.Errorf("CheckLine(%s, %q) = %v, want a refusal", r, line, err)
			}
		}
		l, err := policy.Parse(line)
		if err != nil {
			t.Fatal(err)
		}
		if err := filter.Check(l, st); !errors.Is(err, policy.ErrRefused) {
			t.Errorf("Filter.Check(%q) = %v, want a refusal", line, err)
		}
		body := "G28\nG1 X10 Y10\n" + line + "\nG1 X20\n"
		_, err = store.Put(ctx, "", "named.gcode", strings.NewReader(body))
		var ref *policy.Refusal
		if !errors.As(err, &ref) || ref.Line != 3 {
			t.Errorf("Put(file with %q at line 3) = %v, want a refusal at line 3", line, err)
		}
	}
	if l, err := store.List("", true); err != nil || len(l) != 0 {
		t.Errorf("store holds %v, %v after refused uploads", l, err)
	}
}
