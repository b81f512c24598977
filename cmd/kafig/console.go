package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kafig-dev/kafig/kafig"
)

// cliPrelude is evaluated in every instance before the user's prelude. It
// defines console on top of the CLI's "console" RPC method; values are
// formatted here, in the sandbox, where they still are JavaScript values.
const cliPrelude = `(() => {
"use strict";
const rpcSync = host.rpcSync;
const ident = /^[A-Za-z_$][\w$]*$/;
const limit = 100;
function inspect(v, depth, seen) {
  switch (typeof v) {
  case "string": return JSON.stringify(v);
  case "number": return Object.is(v, -0) ? "-0" : String(v);
  case "bigint": return v + "n";
  case "undefined": return "undefined";
  case "boolean": return String(v);
  case "symbol": return v.toString();
  case "function": return v.name ? "[Function: " + v.name + "]" : "[Function (anonymous)]";
  }
  if (v === null) return "null";
  if (seen.includes(v)) return "[Circular]";
  if (v instanceof Error) return errorText(v);
  if (v instanceof Date) return isNaN(v) ? "Invalid Date" : v.toISOString();
  if (v instanceof RegExp) return String(v);
  if (v instanceof Promise) return "Promise {}";
  if (depth > 2) return Array.isArray(v) ? "[Array]" : "[Object]";
  seen.push(v);
  try {
    let parts = [], open = "{", close = "}", more = 0;
    if (Array.isArray(v)) {
      open = "[", close = "]";
      const n = Math.min(v.length, limit);
      for (let i = 0; i < n; i++) parts.push(i in v ? inspect(v[i], depth + 1, seen) : "<empty>");
      more = v.length - n;
    } else if (v instanceof Map || v instanceof Set) {
      const isMap = v instanceof Map;
      open = (isMap ? "Map(" : "Set(") + v.size + ") {";
      for (const e of v) {
        if (parts.length === limit) { more = v.size - limit; break; }
        parts.push(isMap ? inspect(e[0], depth + 1, seen) + " => " + inspect(e[1], depth + 1, seen) : inspect(e, depth + 1, seen));
      }
    } else {
      const proto = Object.getPrototypeOf(v);
      if (proto === null) open = "[Object: null prototype] {";
      else if (proto !== Object.prototype && typeof proto.constructor === "function" && proto.constructor.name) open = proto.constructor.name + " {";
      const keys = Object.keys(v);
      for (const k of keys.slice(0, limit)) {
        const d = Object.getOwnPropertyDescriptor(v, k);
        const val = !d ? "undefined" : d.get || d.set ? (d.get && d.set ? "[Getter/Setter]" : d.get ? "[Getter]" : "[Setter]") : inspect(d.value, depth + 1, seen);
        parts.push((ident.test(k) ? k : JSON.stringify(k)) + ": " + val);
      }
      more = keys.length - Math.min(keys.length, limit);
    }
    if (more > 0) parts.push("... " + more + " more");
    return parts.length ? open + " " + parts.join(", ") + " " + close : open + close;
  } finally {
    seen.pop();
  }
}
function errorText(e) {
  let head;
  try { head = String(e); } catch { head = "Error"; }
  const stack = typeof e.stack === "string" ? e.stack.replace(/\s+$/, "") : "";
  return stack ? head + "\n" + stack : head;
}
function format(args) {
  let out = [], i = 0;
  if (typeof args[0] === "string" && args.length > 1 && args[0].includes("%")) {
    i = 1;
    out.push(args[0].replace(/%[sdifjoOc%]/g, (m) => {
      if (m === "%%") return "%";
      if (i >= args.length) return m;
      const a = args[i++];
      switch (m) {
      case "%s": return typeof a === "string" ? a : inspect(a, 1, []);
      case "%d": case "%i": return typeof a === "bigint" ? a + "n" : String(m === "%i" ? Math.trunc(Number(a)) : Number(a));
      case "%f": return String(Number(a));
      case "%j": try { return JSON.stringify(a); } catch { return "[Circular]"; }
      case "%c": return "";
      default: return inspect(a, 0, []);
      }
    }));
  }
  for (; i < args.length; i++) out.push(typeof args[i] === "string" ? args[i] : inspect(args[i], 0, []));
  return out.join(" ");
}
const method = (level) => function (...args) { rpcSync("console", { level, text: format(args) }); };
const console = {};
for (const level of ["log", "info", "debug", "warn", "error"]) {
  Object.defineProperty(console, level, { value: method(level), writable: true, enumerable: true, configurable: true });
}
Object.defineProperty(globalThis, "console", { value: console, writable: true, enumerable: false, configurable: true });
})();`

// Built-in RPC methods, answered by the CLI in every mode.
const (
	methodConsole = "console"
	methodSleep   = "sleep"
	methodEcho    = "echo"
)

// maxSleep bounds the "sleep" method.
const maxSleep = 24 * time.Hour

// consoleSink receives console output of the sandbox.
type consoleSink interface {
	console(level, text string)
}

// consoleParams are the params of the "console" method.
type consoleParams struct {
	Level string `json:"level"`
	Text  string `json:"text"`
}

// newRouter returns the CLI's router: the built-in methods, and for any
// other method fallback (nil: an error naming the built-ins).
func newRouter(sink consoleSink, fallback kafig.RPCHandler) *kafig.RPCRouter {
	r := kafig.NewRPCRouter().
		WithSync(methodConsole, func(_ context.Context, params json.RawMessage) (json.RawMessage, error) {
			var p consoleParams
			if err := json.Unmarshal(params, &p); err != nil {
				return nil, fmt.Errorf("console: params must be {level, text}: %v", err)
			}
			switch p.Level {
			case "log", "info", "debug", "warn", "error":
			default:
				p.Level = "log"
			}
			sink.console(p.Level, p.Text)
			return nil, nil
		}).
		WithSync(methodEcho, func(_ context.Context, params json.RawMessage) (json.RawMessage, error) {
			return params, nil
		}).
		WithAsync(methodSleep, sleep)
	if fallback == nil {
		fallback = func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			name, _ := kafig.MethodName(ctx)
			return nil, fmt.Errorf("kafig: unknown RPC method %s (the kafig CLI answers console, sleep and echo; in JSON mode the controlling process answers other methods)", name)
		}
	}
	return r.WithFallback(fallback)
}

// sleep answers host.rpc("sleep", ms) after ms milliseconds.
func sleep(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
	var ms float64
	if err := json.Unmarshal(params, &ms); err != nil {
		return nil, errors.New("sleep: params must be a number of milliseconds")
	}
	if ms < 0 || ms != ms {
		ms = 0
	}
	d := time.Duration(ms * float64(time.Millisecond))
	if ms > float64(maxSleep/time.Millisecond) {
		d = maxSleep
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
