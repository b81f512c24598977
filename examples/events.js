// events.js: event handlers that the host calls later.
//
//   go run ./cmd/kafig examples/events.js      # registers the handlers
//
// Handlers live as long as the instance, so try them in the REPL:
//
//   $ go run ./cmd/kafig -prelude examples/events.js
//   > .dispatch greet {"name": "Ada"}
//   "Hello, Ada!"
//   > .dispatch count
//   1
//
// or in JSON mode:
//
//   printf '%s\n' '{"dispatch": {"name": "greet", "params": {"name": "Ada"}}}' \
//     | go run ./cmd/kafig -prelude examples/events.js

let calls = 0;

host.on("greet", (params) => {
  calls++;
  return `Hello, ${params?.name ?? "stranger"}!`;
});

host.on("count", () => ++calls);

// An async handler: the host awaits the promise it returns.
host.on("slow", async (params) => {
  calls++;
  await host.rpc("sleep", params?.ms ?? 10);
  return { waited: params?.ms ?? 10 };
});

"handlers registered: greet, count, slow";
