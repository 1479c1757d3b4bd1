package postgres

import (
	"sort"
	"strings"
)

// redactMinLen is the shortest secret redact replaces: a shorter one would
// blank out ordinary words of the message and hide little.
const redactMinLen = 4

// redact replaces secrets in a message meant for Vault or the log. The SDK's
// sanitizer only replaces the exact root password; a server error can quote
// a piece of a statement, and with it a new user's password or verifier,
// escaped for the literal it was rendered into. Callers pass every secret
// the statement held: the password and its verifier.
func redact(msg string, secrets ...string) string {
	var forms []string
	for _, s := range secrets {
		if len(s) >= redactMinLen {
			forms = append(forms, secretForms(s)...)
		}
	}
	// Longest first, so a doubled form is replaced whole before a shorter
	// form could match inside it and leave part of it behind.
	sort.Slice(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	for _, f := range forms {
		msg = strings.ReplaceAll(msg, f, "[redacted]")
	}
	return msg
}

// secretForms returns s as it can appear in a server message: as is (an
// error quoting a value, a dollar-quoted body), with ' doubled (a '…'
// string, as a syntax error quotes its token), with \ doubled (E'…' and
// U&'…' strings), with both doubled (E'…' as the renderer writes it), with
// \' for ' (E'…' as an operator may write it), and with " doubled (a
// quoted identifier).
func secretForms(s string) []string {
	forms := []string{
		s,
		strings.ReplaceAll(s, `'`, `''`),
		strings.ReplaceAll(s, `\`, `\\`),
		strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `''`),
		strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `\'`),
		strings.ReplaceAll(s, `"`, `""`),
	}
	seen := make(map[string]bool, len(forms))
	out := forms[:0]
	for _, f := range forms {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}
