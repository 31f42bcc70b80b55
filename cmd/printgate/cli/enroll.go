package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/printgate/printgate/cmd/printgate/gateway"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/enroll/qr"
	"github.com/printgate/printgate/printerd/audit"
)

// pngScale is the PNG QR's pixels per module: a version-14 symbol with its quiet zone is
// 81 modules, 648 pixels, sharp on a phone screen and for zbarimg.
const pngScale = 8

func enrollCmd() *command {
	return &command{
		name:     "enroll",
		synopsis: "--state DIR NAME [--role viewer|operator|admin] [--pubkey KEY] [--qr ansi|none] [--png FILE] [--conf FILE] [--ttl DURATION]",
		short:    "enroll a device: its QR code or .conf, and its API key, shown once",
		long: `Adds the device NAME to the roster as pending, with addresses of its own (a /32 and a /128), and
shows what the device needs, once:

  - the QR code in the terminal (--qr ansi, the default) for the stock WireGuard app to scan;
  - the wg-quick config in FILE with --conf, and the QR as a PNG in FILE with --png (both
    mode 0600, never inside the state directory, never overwriting a file);
  - the API key (43 characters) for slicers and apps that ask for one.

The device's key pair and preshared key are made in memory; the private key is never written
to the state directory. With --pubkey KEY the device keeps its own key: no private key exists on
the gateway and the config's PrivateKey line is left for the owner to fill in. With --qr none
and neither --conf nor --png, standard output carries the config and nothing else (everything
else goes to standard error), so 'printgate enroll NAME --qr none > laptop.conf' makes a file
wg-quick accepts.

The terminal QR code is about 80 columns wide: in a narrower terminal (the width from $COLUMNS
or the terminal itself; 80 when unknown) it is drawn with a narrower border if that fits, and
otherwise not drawn at all, with a hint: widen the terminal, or use --png FILE.

The peer stays pending until its first handshake; if none happens within --ttl (15 minutes by
default, at most 7 days) it is removed from the device and its QR is dead. The running gateway
is asked over its control socket; without one the state directory is changed directly.`,
		flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			state := fs.String("state", "", "state `DIR`")
			role := fs.String("role", string(enroll.Viewer), "the device's `role`: viewer, operator or admin")
			pubkey := fs.String("pubkey", "", "the device's own public `KEY` (base64); no private key is made")
			qrMode := fs.String("qr", "ansi", "QR code in the terminal: `ansi` or none")
			pngPath := fs.String("png", "", "write the QR code as a PNG to `FILE` (mode 0600)")
			confPath := fs.String("conf", "", "write the wg-quick config to `FILE` (mode 0600)")
			ttl := enroll.DefaultTTL
			fs.Func("ttl", "how long the enrollment waits for its first handshake (`DURATION`: 15m, 2h, 7d, 1d12h; at most 7d; default 15m)", func(s string) error {
				d, err := enroll.ParseTTL(s)
				ttl = d
				return err
			})
			return func(ctx context.Context, e *env, args []string) error {
				if err := needState("enroll", *state); err != nil {
					return err
				}
				if err := exactArgs("enroll", args, 1, "one device NAME"); err != nil {
					return err
				}
				if *qrMode != "ansi" && *qrMode != "none" {
					return usagef("enroll", "--qr %q: want ansi or none", *qrMode)
				}
				if err := enroll.ValidateName(args[0]); err != nil {
					return usagef("enroll", "%v", err)
				}
				req := control.Request{Op: control.OpEnroll, Name: args[0], Role: *role, PublicKey: *pubkey, TTL: ttl.String()}
				if _, err := req.EnrollRequest(); err != nil {
					return usagef("enroll", "%v", err)
				}
				for _, p := range []struct{ flag, path string }{{"--conf", *confPath}, {"--png", *pngPath}} {
					if err := checkOutputPath(*state, p.flag, p.path); err != nil {
						return err
					}
				}
				res, err := doEnroll(ctx, e, *state, req)
				if err != nil {
					return err
				}
				return showEnrollment(e, res, *qrMode, *confPath, *pngPath)
			}
		},
	}
}

// doEnroll asks the running gateway, or opens the state directory when none runs.
func doEnroll(ctx context.Context, e *env, state string, req control.Request) (*control.EnrollResult, error) {
	var res *control.EnrollResult
	resp, err := callDaemon(ctx, e, state, req, func(reg *enroll.Registry) error {
		r, err := req.EnrollRequest()
		if err != nil {
			return err
		}
		off, err := gateway.OpenOffline(reg, nil)
		if err != nil {
			return err
		}
		defer off.Close()
		return writeAhead(ctx, e, state, audit.ActionEnroll, map[string]string{"name": r.Name, "role": string(r.Role)}, func() (map[string]string, error) {
			en, err := off.Enroll(r)
			if err != nil {
				return nil, err
			}
			er := control.EnrollResultFrom(en, time.Now())
			en.Forget()
			res = &er
			p := en.Peer
			return map[string]string{"address": p.IPv4.String(), "public_key": p.PublicKey.String()}, nil
		})
	})
	if err != nil {
		return nil, err
	}
	if resp != nil {
		return resp.Enrollment, nil
	}
	return res, nil
}

// checkOutputPath refuses, before anything is enrolled, a file that exists, a directory that
// does not, and any path inside the state directory (which never holds a device's key).
func checkOutputPath(state, flagName, path string) error {
	if path == "" {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return usagef("enroll", "%s %s: %v", flagName, path, err)
	}
	sabs, err := filepath.Abs(state)
	if err != nil {
		return usagef("enroll", "--state %s: %v", state, err)
	}
	if real, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(real, filepath.Base(abs))
	}
	if real, err := filepath.EvalSymlinks(sabs); err == nil {
		sabs = real
	}
	if rel, err := filepath.Rel(sabs, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return usagef("enroll", "%s %s is inside the state directory, which never holds a device's private key", flagName, path)
	}
	if _, err := os.Lstat(path); err == nil {
		return usagef("enroll", "%s %s already exists; not overwriting it", flagName, path)
	}
	if fi, err := os.Stat(filepath.Dir(abs)); err != nil || !fi.IsDir() {
		return usagef("enroll", "%s %s: directory %s does not exist", flagName, path, filepath.Dir(abs))
	}
	return nil
}

// writeSecretFile creates path with mode 0600, failing if it exists.
func writeSecretFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// showEnrollment shows what the device needs. When the config goes to standard output (--qr
// none, no --conf, no --png), standard output carries it alone and everything else goes to
// standard error, so the output redirected to a file is a config wg-quick accepts.
func showEnrollment(e *env, res *control.EnrollResult, qrMode, confPath, pngPath string) error {
	p := res.Peer
	configOut := qrMode == "none" && confPath == "" && pngPath == ""
	info := e.stdout
	if configOut {
		info = e.stderr
	}
	code, qerr := qr.Encode(res.Config)
	fmt.Fprintf(info, "enrolled %s: role %s, address %s", p.Name, p.Role, p.Address)
	if p.Address6 != "" {
		fmt.Fprintf(info, ", %s", p.Address6)
	}
	fmt.Fprintln(info)
	if p.ExpiresAt != nil {
		fmt.Fprintf(info, "pending until its first handshake; the enrollment dies unused at %s\n", localTime(*p.ExpiresAt))
	}
	var errs []error
	if confPath != "" {
		if err := writeSecretFile(confPath, []byte(res.Config)); err != nil {
			errs = append(errs, fmt.Errorf("write --conf: %w", err))
		} else {
			fmt.Fprintf(info, "config written to %s (mode 0600)\n", confPath)
		}
	}
	if pngPath != "" {
		if qerr != nil {
			errs = append(errs, fmt.Errorf("write --png: %w", qerr))
		} else if png, err := code.PNG(pngScale); err != nil {
			errs = append(errs, fmt.Errorf("write --png: %w", err))
		} else if err := writeSecretFile(pngPath, png); err != nil {
			errs = append(errs, fmt.Errorf("write --png: %w", err))
		} else {
			fmt.Fprintf(info, "QR code written to %s (mode 0600)\n", pngPath)
		}
	}
	if qrMode == "ansi" {
		if qerr != nil {
			errs = append(errs, fmt.Errorf("QR code: %w", qerr))
		} else if fit, ok := fitQR(code, e.width()); ok {
			fmt.Fprintf(info, "\nScan with the WireGuard app (+ → Scan from QR code):\n\n%s\n", fit.ANSI())
		} else {
			fmt.Fprintf(e.stderr, "\nThe QR code needs at least %d columns and this terminal has %d: it would not scan, so it is not drawn.\n", fit.Size(), e.width())
			fmt.Fprintf(e.stderr, "Widen the terminal (or make its font smaller), revoke %s and enroll again; or enroll with --png FILE and show the picture.\n", p.Name)
		}
	}
	if configOut {
		fmt.Fprintf(e.stdout, "%s\n", strings.TrimRight(res.Config, "\n"))
	}
	if strings.Contains(res.Config, enroll.PrivateKeyPlaceholder) {
		fmt.Fprintf(info, "the device brought its own key: replace %s with its private key\n", enroll.PrivateKeyPlaceholder)
	}
	fmt.Fprintf(info, "API key (shown once; for slicers and apps that ask): %s\n", res.APIKey)
	res.Config, res.APIKey = "", ""
	if len(errs) > 0 {
		return fmt.Errorf("%w (the enrollment exists; revoke it with `printgate revoke` if it cannot be used)", errors.Join(errs...))
	}
	return nil
}

// minQuietZone is the narrowest border fitQR draws: phone scanners read a QR code with 2
// modules of quiet zone (ISO/IEC 18004 asks for 4).
const minQuietZone = 2

// fitQR returns the code drawn to fit width terminal columns: with its full quiet zone, or a
// narrower one down to minQuietZone modules. ok is false when even that is too wide; the
// code returned is then the narrowest one.
func fitQR(c *qr.Code, width int) (*qr.Code, bool) {
	for q := qr.QuietZone; q >= minQuietZone; q-- {
		fit := c.WithQuietZone(q)
		if fit.Size() <= width || q == minQuietZone {
			return fit, fit.Size() <= width
		}
	}
	return c, c.Size() <= width
}

// localTime formats t in the local time zone, with the zone: "2026-12-03 09:15:00 CET".
func localTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }
