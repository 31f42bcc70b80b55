package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// limitsJSON is Limits as configuration files spell it: durations as Go duration text ("90s").
type limitsJSON struct {
	MaxHotend      float64     `json:"max_hotend"`
	MaxBed         float64     `json:"max_bed"`
	MaxChamber     float64     `json:"max_chamber"`
	Min            *[3]float64 `json:"min"`
	Max            *[3]float64 `json:"max"`
	Extruders      int         `json:"extruders"`
	MaxDwell       string      `json:"max_dwell"`
	MaxExtrude     float64     `json:"max_extrude"`
	MinExtrudeTemp float64     `json:"min_extrude_temp"`
}

// DecodeLimits reads one printer's limits from JSON strictly: unknown fields are an error,
// omitted fields take their defaults, max_dwell is a duration such as "90s". Example:
//
//	{"max_hotend": 240, "max_bed": 100, "min": [0, -5, 0], "max": [250, 210, 220], "extruders": 1}
func DecodeLimits(r io.Reader) (Limits, error) {
	var j limitsJSON
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return Limits{}, fmt.Errorf("policy limits: %w", err)
	}
	if dec.More() {
		return Limits{}, fmt.Errorf("policy limits: data after the object")
	}
	l := Limits{MaxHotend: j.MaxHotend, MaxBed: j.MaxBed, MaxChamber: j.MaxChamber,
		Extruders: j.Extruders, MaxExtrude: j.MaxExtrude, MinExtrudeTemp: j.MinExtrudeTemp}
	if (j.Min == nil) != (j.Max == nil) {
		return Limits{}, fmt.Errorf("policy limits: give both min and max, or neither")
	}
	if j.Min != nil {
		l.Min, l.Max = *j.Min, *j.Max
	}
	if j.MaxDwell != "" {
		d, err := time.ParseDuration(j.MaxDwell)
		if err != nil {
			return Limits{}, fmt.Errorf("policy limits: max_dwell: %w", err)
		}
		l.MaxDwell = d
	}
	if err := l.Validate(); err != nil {
		return Limits{}, err
	}
	return l.withDefaults(), nil
}

// MarshalJSON writes limits in the form DecodeLimits reads.
func (l Limits) MarshalJSON() ([]byte, error) {
	j := limitsJSON{MaxHotend: l.MaxHotend, MaxBed: l.MaxBed, MaxChamber: l.MaxChamber,
		Min: &l.Min, Max: &l.Max, Extruders: l.Extruders, MaxExtrude: l.MaxExtrude,
		MinExtrudeTemp: l.MinExtrudeTemp}
	if l.MaxDwell != 0 {
		j.MaxDwell = l.MaxDwell.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads limits strictly, as DecodeLimits does.
func (l *Limits) UnmarshalJSON(b []byte) error {
	v, err := DecodeLimits(bytes.NewReader(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
