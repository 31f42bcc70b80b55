package marlin

import (
	"slices"
	"strings"
	"testing"
)

func TestReadScript(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"", []string{}, false},
		{"; nothing but a comment\n\n", []string{}, false},
		{"M84 ; motors off\nG1 Z{Z} F600\n", []string{"M84", "G1 Z{Z} F600"}, false},
		{"N1 M84*12\n", nil, true},
	} {
		got, err := ReadScript(strings.NewReader(tc.in))
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("ReadScript(%q) = %q, %v, want %q (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
