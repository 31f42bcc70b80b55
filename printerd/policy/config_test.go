package policy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDecodeLimits(t *testing.T) {
	l, err := DecodeLimits(strings.NewReader(`{"max_hotend": 240, "min": [0, -5, 0], "max": [250, 210, 220], "max_dwell": "90s"}`))
	if err != nil {
		t.Fatal(err)
	}
	if l.MaxHotend != 240 || l.MaxBed != 110 || l.Min[1] != -5 || l.Max[2] != 220 || l.MaxDwell != 90*time.Second {
		t.Errorf("DecodeLimits = %+v", l)
	}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var back Limits
	if err := json.Unmarshal(b, &back); err != nil || back != l {
		t.Errorf("round trip %s = %+v, %v, want %+v", b, back, err, l)
	}
	for _, bad := range []string{
		`{"max_hotend": 240, "max_hotnd": 300}`, // unknown field
		`{"max_hotend": 900}`,                   // above the ceiling
		`{"min": [0, 0, 0]}`,                    // min without max
		`{"max_dwell": "forever"}`,
		`{"max_hotend": "hot"}`,
		`{} {}`,
		``,
	} {
		if _, err := DecodeLimits(strings.NewReader(bad)); err == nil {
			t.Errorf("DecodeLimits(%s) accepted it", bad)
		}
	}
}
