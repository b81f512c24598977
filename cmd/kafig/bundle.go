package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/evanw/esbuild/pkg/api"
)

// Bundling turns a TypeScript or ES module entry and the local files it
// imports into one script: esbuild bundles them in ESM format (so top-level
// await keeps working), through a wrapper entry that imports the real one and
// parks its namespace in a global. Nothing imports or exports in the result;
// the sandbox evaluates it as a script, and the epilogue appended to it makes
// the entry's default export the completion value.

// entryKey is the global (a registered symbol) the wrapper parks the entry's
// namespace in.
const entryKey = `Symbol.for("kafig.entry")`

const bundleEpilogue = "\n;(() => { const k = " + entryKey + ", m = globalThis[k]; delete globalThis[k]; return m === undefined ? undefined : m.default; })()\n"

// stdinPath is the import path of a script read from stdin.
const stdinPath = "kafig:stdin"

// bundleError is a failure to bundle, with esbuild's messages.
type bundleError struct {
	msgs []api.Message
}

func (e *bundleError) Error() string {
	if len(e.msgs) == 0 {
		return "kafig: bundling failed"
	}
	m := e.msgs[0]
	var b strings.Builder
	b.WriteString("kafig: ")
	if l := m.Location; l != nil {
		fmt.Fprintf(&b, "%s:%d:%d: ", l.File, l.Line, l.Column+1)
	}
	b.WriteString(m.Text)
	if n := len(e.msgs) - 1; n > 0 {
		fmt.Fprintf(&b, " (and %d more errors)", n)
	}
	return b.String()
}

// pretty formats the messages as esbuild does, with the lines they point to.
func (e *bundleError) pretty(color bool) string {
	return strings.Join(api.FormatMessages(e.msgs, api.FormatMessagesOptions{
		Kind:  api.ErrorMessage,
		Color: color,
	}), "")
}

// localOnly refuses every import that is not a relative or absolute file
// path: there is no package resolution and no network. With stdin set, the
// wrapper's import of stdinPath loads it.
func localOnly(stdin *string, cwd string) api.Plugin {
	return api.Plugin{
		Name:  "kafig-local-only",
		Setup: func(b api.PluginBuild) { setupLocalOnly(b, stdin, cwd) },
	}
}

func setupLocalOnly(b api.PluginBuild, stdin *string, cwd string) {
	if stdin != nil {
		b.OnLoad(api.OnLoadOptions{Filter: `.*`, Namespace: "kafig-stdin"}, func(api.OnLoadArgs) (api.OnLoadResult, error) {
			return api.OnLoadResult{Contents: stdin, ResolveDir: cwd, Loader: api.LoaderJS}, nil
		})
	}
	b.OnResolve(api.OnResolveOptions{Filter: `.*`}, func(args api.OnResolveArgs) (api.OnResolveResult, error) {
		p := args.Path
		switch {
		case args.Kind == api.ResolveEntryPoint:
			return api.OnResolveResult{}, nil
		case p == stdinPath && stdin != nil && args.Namespace != "kafig-stdin":
			return api.OnResolveResult{Path: "<stdin>", Namespace: "kafig-stdin"}, nil
		case strings.HasPrefix(p, "./"), strings.HasPrefix(p, "../"), p == ".", p == "..", filepath.IsAbs(p):
			return api.OnResolveResult{}, nil // esbuild resolves the file
		}
		return api.OnResolveResult{Errors: []api.Message{{
			Text: fmt.Sprintf("cannot import %q: kafig bundles local files only; import them by a relative path such as \"./%s.ts\" (packages and URLs are not resolved)", p, lastElem(p)),
		}}}, nil
	})
}

func lastElem(p string) string {
	p = strings.TrimRight(p, "/")
	if i := strings.LastIndexAny(p, "/:"); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		return "file"
	}
	return strings.TrimSuffix(p, filepath.Ext(p))
}

// bundle bundles the entry name (whose text is code; "-" is stdin).
func bundle(name, code string) (*source, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return nil, usagef("kafig: cannot bundle %s: %v", name, err)
	}
	importPath := stdinPath
	if name != "-" {
		abs, err := filepath.Abs(name)
		if err != nil {
			return nil, usagef("kafig: cannot bundle %s: %v", name, err)
		}
		importPath = abs
	}
	q, _ := json.Marshal(importPath)
	wrapper := "import * as entry from " + string(q) + ";\nglobalThis[" + entryKey + "] = entry;\n"

	var stdin *string
	if name == "-" {
		stdin = &code
	}
	res := api.Build(api.BuildOptions{
		Stdin: &api.StdinOptions{
			Contents:   wrapper,
			ResolveDir: cwd,
			Sourcefile: "<kafig>",
			Loader:     api.LoaderJS,
		},
		Bundle:         true,
		Format:         api.FormatESModule,
		Platform:       api.PlatformNeutral,
		Target:         api.ES2023,
		Charset:        api.CharsetUTF8,
		AbsWorkingDir:  cwd,
		Outfile:        filepath.Join(cwd, "kafig-bundle.js"),
		Write:          false,
		Sourcemap:      api.SourceMapExternal,
		SourcesContent: api.SourcesContentExclude,
		LogLevel:       api.LogLevelSilent,
		Plugins:        []api.Plugin{localOnly(stdin, cwd)},
	})
	if len(res.Errors) > 0 {
		return nil, &bundleError{msgs: res.Errors}
	}
	if len(res.Warnings) > 0 {
		fmt.Fprint(os.Stderr, strings.Join(api.FormatMessages(res.Warnings, api.FormatMessagesOptions{
			Kind:  api.WarningMessage,
			Color: colorFor(os.Stderr),
		}), ""))
	}
	s := &source{name: name}
	for _, f := range res.OutputFiles {
		if strings.HasSuffix(f.Path, ".map") {
			if m, err := parseSourceMap(f.Contents); err == nil {
				s.smap = m
			}
		} else {
			s.code = string(f.Contents)
		}
	}
	// The source map comment would be the last line; the epilogue goes after
	// every line the map covers.
	s.code = strings.TrimRight(s.code, "\n") + bundleEpilogue
	return s, nil
}
