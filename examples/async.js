// async.js: top-level await and host.rpc.
//
//   go run ./cmd/kafig examples/async.js
//
// host.rpc(method, params) returns a promise that the host settles. The kafig
// CLI answers "sleep" (resolve after some milliseconds) and "echo" (return the
// params); in JSON mode (-json) the controlling process answers any other
// method. The calls below wait concurrently: the script takes about 100 ms of
// wall time but almost no CPU time (run with -stats to see it).

const started = Date.now();
const results = await Promise.all(
  [100, 50, 75].map(async (ms, i) => {
    await host.rpc("sleep", ms);
    return host.rpc("echo", { task: i, slept: ms });
  }),
);
console.log(`3 calls in ${Date.now() - started} ms`);

// An unknown method rejects the promise with the host's error.
let refused;
try {
  await host.rpc("fetch", { url: "https://example.com" });
} catch (e) {
  refused = e.message;
}

({ results, refused });
