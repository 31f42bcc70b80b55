// Package marlin drives one printer running Marlin firmware over a serial link: connecting,
// line numbering and resends, streaming jobs, temperatures, and the halt states.
package marlin

import (
	"context"
	"errors"
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
	Line   string // for "log": a line sent (prefixed "Send: ") or received ("Recv: ")
}

// Filter is the safety policy as the controller sees it: every line, whatever its path, is
// checked before it is queued. A non-nil error refuses the line and changes nothing.
type Filter interface {
	Check(l gcode.Line, s Status) error
}

// Config configures a Controller.
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
	PauseScript  []string
	ResumeScript []string
	CancelScript []string
	// Logf logs at verbose level; nil discards.
	Logf func(format string, args ...any)
}

// Controller owns one printer link.
type Controller struct{}

var errUnbuilt = errors.New("marlin: not built yet")

// New returns a controller; Run drives it.
func New(cfg Config) *Controller { return &Controller{} }

// Run connects and keeps the link up (reconnecting with back-off) until ctx is done, then turns
// heaters off and disconnects. The caller runs it in a goroutine.
func (c *Controller) Run(ctx context.Context) error { return errUnbuilt }

// Status returns a snapshot.
func (c *Controller) Status() Status { return Status{} }

// History returns recent temperature reports, oldest first.
func (c *Controller) History() []Temps { return nil }

// Subscribe returns a channel of events and a function that ends the subscription. Slow
// subscribers miss events rather than block the controller.
func (c *Controller) Subscribe() (<-chan Event, func()) { return nil, func() {} }

// Connect asks for the link to be opened; Disconnect closes it (heaters off first).
func (c *Controller) Connect() error    { return errUnbuilt }
func (c *Controller) Disconnect() error { return errUnbuilt }

// Send queues one command line (terminal or API) after the Filter allows it.
func (c *Controller) Send(ctx context.Context, line string) error { return errUnbuilt }

// Emergency sends M112 ahead of everything queued.
func (c *Controller) Emergency() error { return errUnbuilt }

// Start starts printing a job read from r (size bytes, named name). Each line passes the Filter
// again as it is sent.
func (c *Controller) Start(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	return errUnbuilt
}

// Pause, Resume and Cancel act on the running job.
func (c *Controller) Pause() error  { return errUnbuilt }
func (c *Controller) Resume() error { return errUnbuilt }
func (c *Controller) Cancel() error { return errUnbuilt }
