package cli

import (
	"regexp"
)

// Secrets never reach a log by mistake: anything that looks like a private or preshared key
// in wg-quick or UAPI form, or an API key announcement, is masked before it is written to
// standard error or the daemon's log. (Public keys are not secret and are logged.)
var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)((?:PrivateKey|PresharedKey)\s*=\s*)[A-Za-z0-9+/]{42,43}=`),
	regexp.MustCompile(`(?i)((?:private_key|preshared_key)=)[0-9a-f]{64}`),
	regexp.MustCompile(`(?i)((?:api[ _-]?key)\s*[:=]\s*)[A-Za-z0-9_-]{43}`),
}

// redact masks secrets in s.
func redact(s string) string {
	for _, re := range secretPatterns {
		s = re.ReplaceAllString(s, "${1}[redacted]")
	}
	return s
}
