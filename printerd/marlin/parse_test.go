package marlin

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/gcode"
)

func TestParseReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Reply
	}{
		{"ok", Reply{Kind: ReplyOK}},
		{"ok N12 P15 B3", Reply{Kind: ReplyOK, N: 12, HasN: true, P: 15, HasP: true, B: 3, HasB: true}},
		{"ok P15 B3", Reply{Kind: ReplyOK, P: 15, HasP: true, B: 3, HasB: true}},
		{"Resend: 42", Reply{Kind: ReplyResend, Line: 42}},
		{"Resend:42", Reply{Kind: ReplyResend, Line: 42}},
		{"rs N42", Reply{Kind: ReplyResend, Line: 42}},
		{"Error:Line Number is not Last Line Number+1, Last Line: 41", Reply{Kind: ReplyError, Text: "Line Number is not Last Line Number+1, Last Line: 41"}},
		{"Error:Printer halted. kill() called!", Reply{Kind: ReplyError, Text: "Printer halted. kill() called!", Halt: Killed, Reason: "printer halted: kill() called"}},
		{"Error:Thermal Runaway, system stopped! Heater_ID: 0", Reply{Kind: ReplyError, Text: "Thermal Runaway, system stopped! Heater_ID: 0", Halt: Killed, Reason: "Thermal Runaway, heater 0"}},
		{"Error:Heating failed, system stopped! Heater_ID: bed", Reply{Kind: ReplyError, Text: "Heating failed, system stopped! Heater_ID: bed", Halt: Killed, Reason: "Heating failed, heater bed"}},
		{"Error:MAXTEMP triggered, system stopped! Heater_ID: 0", Reply{Kind: ReplyError, Text: "MAXTEMP triggered, system stopped! Heater_ID: 0", Halt: Killed, Reason: "MAXTEMP triggered, heater 0"}},
		{"Error:Printer stopped due to errors. Fix the error and use M999 to restart. (Temperature is reset. Set it after restarting)", Reply{Kind: ReplyError, Text: "Printer stopped due to errors. Fix the error and use M999 to restart. (Temperature is reset. Set it after restarting)", Halt: Stopped, Reason: "printer stopped due to errors (M999 restarts)"}},
		{"echo:busy: processing", Reply{Kind: ReplyBusy, Text: "processing"}},
		{"busy: paused for user", Reply{Kind: ReplyBusy, Text: "paused for user"}},
		{"echo:Unknown command: \"G999\"", Reply{Kind: ReplyEcho, Text: "Unknown command: \"G999\""}},
		{"start", Reply{Kind: ReplyStart}},
		{"wait", Reply{Kind: ReplyWait}},
		{"Cap:AUTOREPORT_TEMP:1", Reply{Kind: ReplyCap, Cap: "AUTOREPORT_TEMP", CapOn: true}},
		{"Cap:EEPROM:0", Reply{Kind: ReplyCap, Cap: "EEPROM"}},
		{"//action:pause", Reply{Kind: ReplyAction, Text: "pause"}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := ParseReply(tc.in)
			tc.want.Raw = tc.in
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseReply(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseReplyTemps(t *testing.T) {
	p := func(a, b float64) *Temp { return &Temp{a, b} }
	for _, tc := range []struct {
		in    string
		kind  ReplyKind
		tools []Temp
		bed   *Temp
		ch    *Temp
	}{
		{"ok T:201.35 /200.00 B:60.12 /60.00 @:80 B@:0", ReplyOK, []Temp{{201.35, 200}}, p(60.12, 60), nil},
		{" T:192.60 /200.00 B:60.21 /60.00 @:113 B@:22", ReplyTemp, []Temp{{192.6, 200}}, p(60.21, 60), nil},
		{" T:192.60 /200.00 B:60.21 /60.00 @:113 B@:22 W:5", ReplyTemp, []Temp{{192.6, 200}}, p(60.21, 60), nil},
		{"T:20.0 /0.0 B:21.5 /0.0 C:30.1 /35.0 T0:20.0 /0.0 T1:150.5 /200.0 @:0 B@:0", ReplyTemp, []Temp{{20, 0}, {150.5, 200}}, p(21.5, 0), p(30.1, 35)},
		{"T:20 B:21", ReplyTemp, []Temp{{20, 0}}, p(21, 0), nil},
		{"ok T:20.0/0.0 B:21.0/ 0.0", ReplyOK, []Temp{{20, 0}}, p(21, 0), nil},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r := ParseReply(tc.in)
			if r.Kind != tc.kind || r.Temps == nil {
				t.Fatalf("ParseReply(%q) = kind %v temps %v, want kind %v with temps", tc.in, r.Kind, r.Temps, tc.kind)
			}
			if !reflect.DeepEqual(r.Temps.Tools, tc.tools) || !reflect.DeepEqual(r.Temps.Bed, tc.bed) || !reflect.DeepEqual(r.Temps.Chamber, tc.ch) {
				t.Errorf("ParseReply(%q) temps = %+v bed %v chamber %v, want %+v %v %v", tc.in, r.Temps.Tools, r.Temps.Bed, r.Temps.Chamber, tc.tools, tc.bed, tc.ch)
			}
		})
	}
}

func TestParseReplyFirmware(t *testing.T) {
	r := ParseReply("FIRMWARE_NAME:Marlin 2.1.3 (Aug  1 2024 12:00:00) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin PROTOCOL_VERSION:1.0 MACHINE_TYPE:3D Printer KINEMATICS:Cartesian EXTRUDER_COUNT:2 UUID:cede2a2f")
	want := map[string]string{
		"FIRMWARE_NAME": "Marlin 2.1.3 (Aug  1 2024 12:00:00)", "SOURCE_CODE_URL": "github.com/MarlinFirmware/Marlin",
		"PROTOCOL_VERSION": "1.0", "MACHINE_TYPE": "3D Printer", "KINEMATICS": "Cartesian", "EXTRUDER_COUNT": "2", "UUID": "cede2a2f",
	}
	if r.Kind != ReplyFirmware || !reflect.DeepEqual(r.Fields, want) {
		t.Errorf("ParseReply(M115) = %v %v, want %v", r.Kind, r.Fields, want)
	}
}

func TestPrepare(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"G1 X10 ; move", "G1 X10", false},
		{"  G28  ", "G28", false},
		{"; only a comment", "", false},
		{"", "", false},
		{"M117 Hello (world)", "M117 Hello", false},
		{"N10 G28*18", "", true},
		{"G28*18", "", true},
		{"G1 X1\x00", "", true},
		{"G1 X\xff", "", true},
		{"G1 X1\nG1 X2", "", true},
		{"G1 " + strings.Repeat("X1 ", 30), "", true},
		{"G1 " + strings.Repeat("X", MaxCommandBytes-3), "G1 " + strings.Repeat("X", MaxCommandBytes-3), false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			l, err := Prepare(tc.in)
			if (err != nil) != tc.wantErr || l.Raw != tc.want {
				t.Errorf("Prepare(%q) = %q, %v; want %q, error %v", tc.in, l.Raw, err, tc.want, tc.wantErr)
			}
			if err == nil && !l.Empty() {
				if n := len(gcode.Number(999999999, l.Raw)); n > gcode.MaxLineBytes {
					t.Errorf("Prepare(%q): numbered line is %d bytes, over %d", tc.in, n, gcode.MaxLineBytes)
				}
			}
		})
	}
}

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"ok", "ok N12 P15 B3", "Resend: 4", "rs N4", "Error:Thermal Runaway, system stopped! Heater_ID: 0",
		" T:192.60 /200.00 B:60.21 /60.00 @:113 B@:22", "FIRMWARE_NAME:Marlin 2.1 EXTRUDER_COUNT:1", "Cap:EEPROM:1", "echo:busy: processing",
		"ok T:20.0/0.0 B:21.0/ 0.0 T0:1 T1:2 T9:3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r := ParseReply(s)
		if r.Temps != nil && len(r.Temps.Tools) > maxTools {
			t.Fatalf("ParseReply(%q): %d tools", s, len(r.Temps.Tools))
		}
		if r.Kind == ReplyResend && !strings.Contains(strings.ToLower(s), "rs") && !strings.Contains(strings.ToLower(s), "resend") {
			t.Fatalf("ParseReply(%q) = resend", s)
		}
		if r.HasB && r.B < 0 {
			t.Fatalf("ParseReply(%q): B = %d", s, r.B)
		}
	})
}

func FuzzPrepare(f *testing.F) {
	for _, s := range []string{"G1 X10 ; move", "N10 G28*18", "M117 Hello (x)", "", "G1 X1\n", "T0", "M104 S200"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Prepare(s)
		if err != nil {
			return
		}
		if l.Empty() {
			return
		}
		line := gcode.Number(999999999, l.Raw)
		if len(line) > gcode.MaxLineBytes {
			t.Fatalf("Prepare(%q) = %q: numbered %d bytes, over %d", s, l.Raw, len(line), gcode.MaxLineBytes)
		}
		if strings.ContainsAny(l.Raw, "\r\n;*") {
			t.Fatalf("Prepare(%q) = %q: holds a line break, comment or checksum mark", s, l.Raw)
		}
		back, err := gcode.Parse(line)
		if err != nil || back.Raw != l.Raw || back.Number != 999999999 {
			t.Fatalf("Prepare(%q) = %q: numbered line %q parses to %q, %v", s, l.Raw, line, back.Raw, err)
		}
	})
}

func TestJobClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	k := jobClock{started: t0}
	if got := k.elapsed(t0.Add(10 * time.Second)); got != 10*time.Second {
		t.Errorf("elapsed after 10 s = %v", got)
	}
	k.pausedAt = t0.Add(10 * time.Second)
	if got := k.elapsed(t0.Add(70 * time.Second)); got != 10*time.Second {
		t.Errorf("elapsed while paused for 60 s = %v, want 10s", got)
	}
	k.paused, k.pausedAt = 60*time.Second, time.Time{}
	if got := k.elapsed(t0.Add(75 * time.Second)); got != 15*time.Second {
		t.Errorf("elapsed after resuming = %v, want 15s", got)
	}
	k.ended = t0.Add(80 * time.Second)
	if got := k.elapsed(t0.Add(time.Hour)); got != 20*time.Second {
		t.Errorf("elapsed after the end = %v, want 20s", got)
	}
}

func TestScanEstimate(t *testing.T) {
	tail := strings.Repeat("G1 X1 Y1\n", 20000) + "; estimated printing time (normal mode) = 1h 2m 3s\n"
	for _, tc := range []struct {
		name, text string
		want       time.Duration
	}{
		{"cura head", ";FLAVOR:Marlin\n;TIME:3723\nG28\n", 3723 * time.Second},
		{"prusaslicer tail", tail, time.Hour + 2*time.Minute + 3*time.Second},
		{"none", "G28\nG1 X1\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scanEstimate(strings.NewReader(tc.text), int64(len(tc.text)))
			if err != nil || got != tc.want {
				t.Errorf("scanEstimate(%s) = %v, %v; want %v", tc.name, got, err, tc.want)
			}
		})
	}
}
