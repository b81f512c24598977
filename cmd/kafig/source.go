package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kafig-dev/kafig/kafig"
)

// source is JavaScript ready for the sandbox: a script as it was written, or
// a bundle made by esbuild.
type source struct {
	name string     // the file as given ("-" for stdin); "" for -e
	code string     // what the sandbox evaluates
	smap *sourceMap // bundles: maps code back to the files
}

// bundledExtensions are the entries that are always bundled.
var bundledExtensions = map[string]bool{".ts": true, ".mts": true, ".cts": true, ".mjs": true}

// moduleSyntax finds an import or export statement at the start of a line
// (import(...) and import.meta are not statements).
var moduleSyntax = regexp.MustCompile(`(?m)^[ \t]*(import(?:[ \t]+[\w{*"'$]|[ \t]*[{*"'])|export(?:[ \t]+[\w{*$]|[ \t]*[{*]))`)

// needsBundle reports whether a file is an ES module or TypeScript entry.
func needsBundle(name, code string) bool {
	return bundledExtensions[strings.ToLower(filepath.Ext(name))] || moduleSyntax.MatchString(code)
}

// loadFile reads a script (name "-" is stdin) and bundles it if it needs
// it. A file that cannot be read is a *usageError; a bundling failure a
// *bundleError.
func loadFile(name string, stdin io.Reader) (*source, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		var fi os.FileInfo
		if fi, err = os.Stat(name); err == nil && fi.IsDir() {
			return nil, usagef("kafig: %s is a directory, not a script", name)
		}
		data, err = os.ReadFile(name)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, usagef("kafig: %s: no such file", name)
		}
		return nil, usagef("kafig: cannot read %s: %v", name, unwrapPathError(err))
	}
	code := strings.TrimPrefix(string(data), "\uFEFF")
	switch {
	case strings.IndexByte(code, 0) >= 0:
		return nil, usagef("kafig: %s contains a NUL byte: not a script", name)
	case !utf8.ValidString(code):
		return nil, usagef("kafig: %s is not UTF-8 text: not a script", name)
	}
	if strings.HasPrefix(code, "#!") { // a shebang line becomes a comment
		code = "//" + code[2:]
	}
	if !needsBundle(name, code) {
		if strings.TrimSpace(code) == "" {
			code = "undefined"
		}
		return &source{name: name, code: code}, nil
	}
	return bundle(name, code)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// evalPos is a position in a stack that QuickJS reports for evaluated code.
var evalPos = regexp.MustCompile(`<eval>:(\d+):(\d+)`)

// sourceName is the name the sandbox gives the script (kafig.WithSourceName)
// so that its stacks name the file: "<stdin>" for stdin. It is "" for -e
// and for a bundle (esbuild's source map names the files instead, see
// explain), and for a file name WithSourceName would refuse (too long, not
// UTF-8): explain then renames the positions after the fact.
func (s *source) sourceName() string {
	switch {
	case s == nil || s.name == "" || s.smap != nil:
		return ""
	case s.name == "-":
		return "<stdin>"
	case len(s.name) > kafig.MaxSourceNameLen || !utf8.ValidString(s.name):
		return ""
	}
	return s.name
}

// evalOpts are the options that evaluate the script under its name.
func (s *source) evalOpts() []kafig.EvalOption {
	if name := s.sourceName(); name != "" {
		return []kafig.EvalOption{kafig.WithSourceName(name)}
	}
	return nil
}

// explain rewrites the positions in a JavaScript error's stack to name the
// script's files, for a bundle through its source map. A script evaluated
// under its name (sourceName) needs nothing.
func (s *source) explain(err error) error {
	var je *kafig.JsError
	if s == nil || s.name == "" || s.sourceName() != "" || !errors.As(err, &je) || je.Stack == nil {
		return err
	}
	stack := s.rewrite(*je.Stack)
	return &kafig.JsError{Name: je.Name, Message: je.Message, Stack: &stack}
}

func (s *source) rewrite(stack string) string {
	name := s.name
	if name == "-" {
		name = "<stdin>"
	}
	return evalPos.ReplaceAllStringFunc(stack, func(m string) string {
		sub := evalPos.FindStringSubmatch(m)
		line, err1 := strconv.Atoi(sub[1])
		col, err2 := strconv.Atoi(sub[2])
		if err1 != nil || err2 != nil {
			return m
		}
		if s.smap != nil {
			if file, l, c, ok := s.smap.lookup(line, col); ok {
				return file + ":" + strconv.Itoa(l) + ":" + strconv.Itoa(c)
			}
			return m
		}
		return name + ":" + sub[1] + ":" + sub[2]
	})
}
