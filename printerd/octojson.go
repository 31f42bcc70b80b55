package printerd

import (
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/marlin"
)

// This file renders the controller's status in OctoPrint's JSON shapes
// (reference/octoprint-api.md, section (a)). Every key a studied client indexes directly is
// always present.

// OctoPrint's version as reported to clients: PrusaSlicer needs "api" and a "text" starting
// with "OctoPrint"; Cura and FDM Monster compare "server".
const (
	octoAPIVersion    = "0.1"
	octoServerVersion = "1.11.8"
)

// octoStateText is OctoPrint's state string for a controller state.
func octoStateText(st marlin.State) string {
	switch st {
	case marlin.Operational:
		return "Operational"
	case marlin.Connecting:
		return "Connecting"
	case marlin.Printing:
		return "Printing"
	case marlin.Pausing:
		return "Pausing"
	case marlin.Paused:
		return "Paused"
	case marlin.Cancelling:
		return "Cancelling"
	case marlin.Error:
		return "Offline after error"
	case marlin.Halted:
		return "Error"
	}
	return "Offline"
}

// octoStateID is OctoPrint's state id for PrinterStateChanged events.
func octoStateID(st marlin.State) string {
	switch st {
	case marlin.Operational:
		return "OPERATIONAL"
	case marlin.Connecting:
		return "CONNECTING"
	case marlin.Printing:
		return "PRINTING"
	case marlin.Pausing:
		return "PAUSING"
	case marlin.Paused:
		return "PAUSED"
	case marlin.Cancelling:
		return "CANCELLING"
	case marlin.Error:
		return "CLOSED_WITH_ERROR"
	case marlin.Halted:
		return "ERROR"
	}
	return "OFFLINE"
}

// operational reports whether OctoPrint would call the printer operational: linked and
// answering, with or without a job.
func operational(st marlin.State) bool {
	switch st {
	case marlin.Operational, marlin.Printing, marlin.Pausing, marlin.Paused, marlin.Cancelling:
		return true
	}
	return false
}

// jobActive reports whether a job owns the printer.
func jobActive(st marlin.State) bool {
	switch st {
	case marlin.Printing, marlin.Pausing, marlin.Paused, marlin.Cancelling:
		return true
	}
	return false
}

type octoFlags struct {
	Operational   bool `json:"operational"`
	Paused        bool `json:"paused"`
	Printing      bool `json:"printing"`
	Cancelling    bool `json:"cancelling"`
	Pausing       bool `json:"pausing"`
	Resuming      bool `json:"resuming"`
	Finishing     bool `json:"finishing"`
	ClosedOrError bool `json:"closedOrError"`
	Error         bool `json:"error"`
	Ready         bool `json:"ready"`
	SDReady       bool `json:"sdReady"`
}

type octoState struct {
	Text  string    `json:"text"`
	Flags octoFlags `json:"flags"`
	Error string    `json:"error,omitempty"`
}

func stateOf(s marlin.Status) octoState {
	st := s.State
	return octoState{
		Text:  octoStateText(st),
		Error: s.Error,
		Flags: octoFlags{
			Operational:   operational(st),
			Paused:        st == marlin.Paused,
			Printing:      st == marlin.Printing,
			Cancelling:    st == marlin.Cancelling,
			Pausing:       st == marlin.Pausing,
			ClosedOrError: !operational(st) && st != marlin.Connecting,
			Error:         st == marlin.Error || st == marlin.Halted,
			Ready:         st == marlin.Operational,
		},
	}
}

type octoTemp struct {
	Actual float64  `json:"actual"`
	Target *float64 `json:"target"`
	Offset *float64 `json:"offset,omitempty"`
}

func octoTempOf(t marlin.Temp, withOffset bool) octoTemp {
	ot := octoTemp{Actual: round2(t.Actual), Target: ptr(round2(t.Target))}
	if withOffset {
		ot.Offset = ptr(0.0)
	}
	return ot
}

// tempsMap renders one report as {"tool0":{...},"bed":{...}}; extra adds "time" for history.
func tempsMap(t marlin.Temps, withOffset bool) map[string]any {
	m := map[string]any{}
	for i, tt := range t.Tools {
		m[fmt.Sprintf("tool%d", i)] = octoTempOf(tt, withOffset)
	}
	if t.Bed != nil {
		m["bed"] = octoTempOf(*t.Bed, withOffset)
	}
	if t.Chamber != nil {
		m["chamber"] = octoTempOf(*t.Chamber, withOffset)
	}
	return m
}

func historyEntry(t marlin.Temps) map[string]any {
	m := tempsMap(t, false)
	m["time"] = t.Time.Unix()
	return m
}

// octoJobFile is job.file.
type octoJobFile struct {
	Name    *string `json:"name"`
	Path    *string `json:"path"`
	Display *string `json:"display"`
	Origin  *string `json:"origin"`
	Size    *int64  `json:"size"`
	Date    *int64  `json:"date"`
}

type octoJob struct {
	File               octoJobFile `json:"file"`
	EstimatedPrintTime *float64    `json:"estimatedPrintTime"`
	LastPrintTime      *float64    `json:"lastPrintTime"`
	Filament           any         `json:"filament"`
	User               *string     `json:"user"`
}

type octoProgress struct {
	Completion          *float64 `json:"completion"`
	Filepos             *int64   `json:"filepos"`
	PrintTime           *int64   `json:"printTime"`
	PrintTimeLeft       *int64   `json:"printTimeLeft"`
	PrintTimeLeftOrigin *string  `json:"printTimeLeftOrigin"`
}

type octoJobResponse struct {
	Job      octoJob      `json:"job"`
	Progress octoProgress `json:"progress"`
	State    string       `json:"state"`
	Error    string       `json:"error,omitempty"`
}

// jobOf renders the job of a status, or the selected file when no job runs.
func (p *printer) jobOf(s marlin.Status) octoJobResponse {
	out := octoJobResponse{State: octoStateText(s.State), Error: s.Error}
	p.mu.Lock()
	selected := p.mu.selected
	p.mu.Unlock()
	j := s.Job
	name := selected
	if j != nil && (jobActive(s.State) || selected == "" || selected == j.File) {
		name = j.File
	} else {
		j = nil
	}
	if name == "" {
		return out
	}
	base := name[strings.LastIndexByte(name, '/')+1:]
	out.Job.File = octoJobFile{Name: ptr(base), Path: ptr(name), Display: ptr(base), Origin: ptr("local")}
	if fi, err := p.Files.Stat(name); err == nil {
		out.Job.File.Size = ptr(fi.Size)
		out.Job.File.Date = ptr(fi.Date.Unix())
		if fi.Estimate > 0 {
			out.Job.EstimatedPrintTime = ptr(fi.Estimate.Seconds())
		}
	}
	if j == nil {
		return out
	}
	if j.Estimate > 0 {
		out.Job.EstimatedPrintTime = ptr(j.Estimate.Seconds())
	}
	if j.Size > 0 {
		c := math.Min(100, 100*float64(j.Pos)/float64(j.Size))
		out.Progress.Completion = ptr(round2(c))
	}
	out.Progress.Filepos = ptr(j.Pos)
	out.Progress.PrintTime = ptr(int64(j.Elapsed / time.Second))
	if j.Left > 0 {
		out.Progress.PrintTimeLeft = ptr(int64(j.Left / time.Second))
		out.Progress.PrintTimeLeftOrigin = ptr("estimate")
	} else if j.Done {
		out.Progress.PrintTimeLeft = ptr(int64(0))
	}
	if j.Done || j.Cancelled || j.Failed != "" {
		out.Job.LastPrintTime = ptr(j.Elapsed.Seconds())
	}
	return out
}

// octoRefs are a file's links.
type octoRefs struct {
	Resource string `json:"resource"`
	Download string `json:"download,omitempty"`
}

// octoFile is one file or folder record of /api/files.
type octoFile struct {
	Name          string         `json:"name"`
	Display       string         `json:"display"`
	Path          string         `json:"path"`
	Type          string         `json:"type"`
	TypePath      []string       `json:"typePath"`
	Origin        string         `json:"origin"`
	Size          int64          `json:"size"`
	Date          int64          `json:"date"`
	Hash          string         `json:"hash,omitempty"`
	Refs          octoRefs       `json:"refs"`
	GcodeAnalysis map[string]any `json:"gcodeAnalysis,omitempty"`
	Children      []*octoFile    `json:"children,omitempty"`
}

// fileURLPath escapes a store path for a URL path.
func fileURLPath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

func octoFileOf(base func(string) string, fi files.FileInfo) *octoFile {
	f := &octoFile{Name: fi.Name, Display: fi.Name, Path: fi.Path, Origin: "local", Size: fi.Size, Date: fi.Date.Unix()}
	f.Refs.Resource = base("/api/files/local/" + fileURLPath(fi.Path))
	if fi.Folder {
		f.Type, f.TypePath = "folder", []string{"folder"}
		f.Children = []*octoFile{}
		return f
	}
	f.Type, f.TypePath = "machinecode", []string{"machinecode", "gcode"}
	f.Hash = fi.Hash
	f.Refs.Download = base("/downloads/files/local/" + fileURLPath(fi.Path))
	if fi.Estimate > 0 {
		f.GcodeAnalysis = map[string]any{"estimatedPrintTime": fi.Estimate.Seconds()}
	}
	return f
}

// octoTree nests a flat, path-sorted listing under folder: folders get their children.
func octoTree(base func(string) string, folder string, list []files.FileInfo) []*octoFile {
	top := []*octoFile{}
	folders := map[string]*octoFile{}
	for _, fi := range list {
		f := octoFileOf(base, fi)
		if fi.Folder {
			folders[fi.Path] = f
		}
		if parent := parentOf(fi.Path); parent != folder {
			if pf, ok := folders[parent]; ok {
				pf.Children = append(pf.Children, f)
				continue
			}
		}
		top = append(top, f)
	}
	return top
}

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func ptr[T any](v T) *T { return &v }
