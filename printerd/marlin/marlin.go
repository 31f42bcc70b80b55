// Package marlin drives one printer running Marlin firmware over a serial link: connecting,
// line numbering and resends, streaming jobs, temperatures, and the halt states.
//
// The files follow the pipeline: link.go opens the port and reads lines; protocol.go parses
// what the firmware says, numbers and checksums what is sent, keeps the window of lines in
// flight and handles resends; stream.go feeds jobs (dwell.go splits their long G4s);
// watchdog.go guards the heaters; session.go is one connection from open to close (connect
// sequence, timeouts, halts); controller.go holds the state machine, the API and Run;
// spec.go parses --printer values.
// BENCH.md has the streaming measurements and how to repeat them.
package marlin

import (
	"context"
	"io"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

// State is the controller's state.
type State string

// Controller states.
const (
	Disconnected State = "disconnected"
	Connecting   State = "connecting"
	Operational  State = "operational" // connected, no job running
	Printing     State = "printing"
	Pausing      State = "pausing"
	Paused       State = "paused"
	Cancelling   State = "cancelling"
	Error        State = "error"  // link or protocol failure; reconnect possible
	Halted       State = "halted" // firmware kill(): needs a reset (reconnect) by a person
)

// Temp is one heater's reading.
type Temp struct {
	Actual float64 `json:"actual"`
	Target float64 `json:"target"`
}

// Temps is one temperature report. Tools are indexed by extruder; Bed and Chamber are nil when
// the printer has none.
type Temps struct {
	Time    time.Time `json:"time"`
	Tools   []Temp    `json:"tools"`
	Bed     *Temp     `json:"bed,omitempty"`
	Chamber *Temp     `json:"chamber,omitempty"`
}

// Job is the progress of the current or last job.
type Job struct {
	File      string        `json:"file"`     // name in the file store
	Size      int64         `json:"size"`     // bytes
	Pos       int64         `json:"pos"`      // bytes acknowledged by the firmware
	Lines     int64         `json:"lines"`    // command lines acknowledged
	Started   time.Time     `json:"started"`  // zero until started
	Elapsed   time.Duration `json:"elapsed"`  // printing time, pauses excluded
	Estimate  time.Duration `json:"estimate"` // total estimate from slicer comments; 0 unknown
	Left      time.Duration `json:"left"`     // estimated time left; 0 unknown
	Done      bool          `json:"done"`     // completed successfully
	Failed    string        `json:"failed"`   // failure reason; empty if none
	Cancelled bool          `json:"cancelled"`
}

// Status is a snapshot of the controller.
type Status struct {
	Name     string          `json:"name"`
	State    State           `json:"state"`
	Error    string          `json:"error,omitempty"` // why Error or Halted
	Port     string          `json:"port"`
	Baud     int             `json:"baud"`
	Firmware string          `json:"firmware,omitempty"` // FIRMWARE_NAME from M115
	Caps     map[string]bool `json:"caps,omitempty"`     // Cap: lines from M115
	Temps    Temps           `json:"temps"`
	Job      *Job            `json:"job,omitempty"` // nil when no job was ever selected
}

// Event is pushed to subscribers when something changes.
type Event struct {
	Kind   string // "state", "temps", "job", "log", "alarm"
	Status Status
	Line   string // for "log": a line sent (prefixed "Send: ") or received ("Recv: "); for "alarm": the reason
}

// Filter is the safety policy as the controller sees it: every line, whatever its path, is
// checked before it is queued. A non-nil error refuses the line and changes nothing.
type Filter interface {
	Check(l gcode.Line, s Status) error
}

// Config configures a Controller. The zero value of every field but Name and Port means the
// documented default.
type Config struct {
	// Name is the printer's name (unique per gateway).
	Name string
	// Port is the serial device path (a /dev/serial/by-id name or a pty).
	Port string
	// Baud is the link speed; zero means 250000.
	Baud int
	// Open opens the link; nil means go.bug.st/serial on Port at Baud. Tests pass a pipe.
	Open func(ctx context.Context) (io.ReadWriteCloser, error)
	// Filter checks every line; nil allows everything (tests only).
	Filter Filter
	// PauseScript and CancelScript run on pause and cancel; nil means the documented defaults.
	// ResumeScript runs on resume. See DefaultPauseScript, DefaultResumeScript and
	// DefaultCancelScript for the defaults and the {X} {Y} {Z} {E} {F} placeholders.
	PauseScript  []string
	ResumeScript []string
	CancelScript []string
	// Logf logs verbose detail (state changes, the firmware's chatter); nil discards.
	Logf func(format string, args ...any)
	// Errorf logs what an operator must see, each with its cause: a link that cannot be
	// opened or fails (once per distinct error while it keeps failing), firmware errors,
	// watchdog alarms. Nil discards.
	Errorf func(format string, args ...any)

	// Extruders is the number of hotends to turn off on connect (M104 T<n> S0 each); zero
	// means 1. More are turned off once M115 reports a higher EXTRUDER_COUNT.
	Extruders int
	// Chamber says the printer has a heated chamber: M141 S0 is part of every heaters-off.
	// A chamber seen in a temperature report counts too.
	Chamber bool

	// MaxInFlight caps the lines in flight with ADVANCED_OK; zero means the firmware's command
	// buffer as learned from its B field (BUFSIZE, 4 by default), never more than 16.
	// Without ADVANCED_OK the controller always waits for each ok (ping-pong).
	MaxInFlight int
	// Timeout is how long the controller waits for any answer before it pokes the firmware
	// (M105); zero means 30 s (OctoPrint's "communication"). BusyTimeout replaces it once
	// the firmware has sent echo:busy: keepalives; zero means 3 s beyond the 2 s keepalive.
	Timeout     time.Duration
	BusyTimeout time.Duration
	// PollInterval is the temperature report interval (M155 S<n> or M105 polling); zero
	// means 2 s.
	PollInterval time.Duration
	// BootWait is how long to wait for "start" (or silence) after opening the port; zero
	// means 2 s.
	BootWait time.Duration
	// ReconnectMin and ReconnectMax bound the reconnect back-off after a link loss; zero
	// means 1 s and 30 s.
	ReconnectMin, ReconnectMax time.Duration
	// HistorySize is the number of temperature reports History keeps; zero means 900
	// (30 minutes at 2 s).
	HistorySize int

	// Watchdog configures the thermal watchdog; see WatchdogConfig.
	Watchdog WatchdogConfig
}
