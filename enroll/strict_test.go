package enroll

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	type inner struct {
		A int `json:"a"`
	}
	type msg struct {
		Role  string           `json:"role"`
		Inner inner            `json:"inner"`
		List  []inner          `json:"list"`
		Map   map[string]int   `json:"map"`
		Any   map[string]any   `json:"any"`
		Raw   []map[string]int `json:"raw"`
	}
	tests := []struct {
		in      string
		wantErr string // "" for success
	}{
		{`{"role":"viewer"}`, ""},
		{`{"role":"viewer","inner":{"a":1},"list":[{"a":1},{"a":2}],"map":{"x":1,"y":2}}`, ""},
		{`{"role":"a","map":{"role":1}}`, ""}, // the same key in two objects
		{`{"list":[{"a":1},{"a":1}]}`, ""},
		{`{"any":{"k":["role","role"]}}`, ""}, // strings as values are not keys
		{`{"any":{"x":{"y":1},"z":2}}`, ""},
		{`{"role":"viewer","role":"admin"}`, "duplicate key"},
		{`{"role":"viewer","Role":"admin"}`, "duplicate key"},
		{`{"role":"viewer","ROLE":"admin"}`, "duplicate key"},
		{`{"inner":{"a":1,"a":2}}`, "duplicate key"},
		{`{"list":[{"a":1,"A":2}]}`, "duplicate key"},
		{`{"map":{"x":1,"x":2}}`, "duplicate key"},
		{`{"raw":[{"b":1},{"c":[1,{"d":1,"d":2}]}]}`, "duplicate key"},
		{`{"any":{"k":1,"\u212a":2}}`, "duplicate key"}, // Kelvin sign folds to k
		{`{"role":"viewer","admin":true}`, "unknown field"},
		{`{"role":"viewer"} {"role":"admin"}`, "trailing data"},
		{`{"role":"viewer"`, "unexpected EOF"},
	}
	for _, tt := range tests {
		var m msg
		err := DecodeStrict([]byte(tt.in), &m)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("DecodeStrict(%s) = %v, want success", tt.in, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("DecodeStrict(%s) = %v, want an error with %q", tt.in, err, tt.wantErr)
		}
	}
}

func FuzzDecodeStrict(f *testing.F) {
	f.Add([]byte(`{"role":"viewer","inner":{"a":[1,{"b":2}]}}`))
	f.Add([]byte(`{"a":1,"A":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Whatever DecodeStrict takes, encoding/json takes too, to the same value.
		var strict, loose any
		if DecodeStrict(data, &strict) != nil {
			return
		}
		if err := json.Unmarshal(data, &loose); err != nil {
			t.Fatalf("DecodeStrict(%q) succeeded, json.Unmarshal: %v", data, err)
		}
		if !reflect.DeepEqual(strict, loose) {
			t.Fatalf("DecodeStrict(%q) = %v, json.Unmarshal = %v", data, strict, loose)
		}
	})
}
