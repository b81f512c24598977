package main

import (
	"os"
	"strings"

	"golang.org/x/term"
)

// colorFor reports whether output to f may use ANSI colours: f is a
// terminal, NO_COLOR is not set (https://no-color.org) and TERM is not dumb.
func colorFor(f *os.File) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}

// palette holds ANSI sequences, or empty strings without colour.
type palette struct {
	reset, bold, dim, red, green, yellow, blue, magenta, cyan string
}

func newPalette(on bool) palette {
	if !on {
		return palette{}
	}
	return palette{
		reset: "\x1b[0m", bold: "\x1b[1m", dim: "\x1b[2m", red: "\x1b[31m", green: "\x1b[32m",
		yellow: "\x1b[33m", blue: "\x1b[34m", magenta: "\x1b[35m", cyan: "\x1b[36m",
	}
}

// highlightJSON colours JSON text: strings green, numbers yellow, literals
// magenta, keys cyan.
func (p palette) highlightJSON(js []byte) string {
	if p.reset == "" {
		return string(js)
	}
	var b strings.Builder
	for i := 0; i < len(js); {
		c := js[i]
		switch {
		case c == '"':
			j := i + 1
			for j < len(js) && js[j] != '"' {
				if js[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(js))
			k := j
			for k < len(js) && (js[k] == ' ' || js[k] == '\n' || js[k] == '\t' || js[k] == '\r') {
				k++
			}
			col := p.green
			if k < len(js) && js[k] == ':' {
				col = p.cyan
			}
			b.WriteString(col)
			b.Write(js[i:j])
			b.WriteString(p.reset)
			i = j
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(js) && strings.IndexByte("0123456789.eE+-", js[j]) >= 0 {
				j++
			}
			b.WriteString(p.yellow)
			b.Write(js[i:j])
			b.WriteString(p.reset)
			i = j
		case c >= 'a' && c <= 'z':
			j := i + 1
			for j < len(js) && js[j] >= 'a' && js[j] <= 'z' {
				j++
			}
			b.WriteString(p.magenta)
			b.Write(js[i:j])
			b.WriteString(p.reset)
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}
