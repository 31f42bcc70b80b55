package enroll

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// DecodeStrict decodes exactly one JSON value from data into v and refuses what
// encoding/json would silently let through: unknown fields, trailing data, and duplicate
// object keys. encoding/json keeps the last of duplicate keys and matches field names without
// regard to case, so {"role":"viewer","Role":"admin"} would read as admin while a reviewer,
// a proxy or a log reads viewer; DecodeStrict refuses it, at any depth. The state files, the
// control protocol and every write endpoint of the web API decode with it.
func DecodeStrict(data []byte, v any) error {
	if err := checkKeys(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// checkKeys walks data's tokens and fails on the first object that has two keys that
// encoding/json would match to the same field.
func checkKeys(data []byte) error {
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool            // in an object, the next string is a key
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.keys != nil && top.wantKey {
			k := foldKey(s)
			if top.keys[k] {
				return fmt.Errorf("duplicate key %q", s)
			}
			top.keys[k], top.wantKey = true, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if n := len(stack); n > 0 {
				top = stack[n-1]
			} else {
				top = nil
			}
		}
		// A value ended: in an object, a key comes next.
		if top != nil && top.keys != nil {
			top.wantKey = true
		}
	}
}

// foldKey folds a key the way encoding/json matches keys to field names: Unicode simple
// case folding, so "role", "ROLE" and "Role" are one key (and so are "k" and the Kelvin sign).
func foldKey(s string) string {
	return strings.Map(func(r rune) rune { return unicode.ToLower(unicode.ToUpper(r)) }, s)
}
