// main.ts: TypeScript with a local import.
//
//   go run ./cmd/kafig examples/ts/main.ts
//
// The CLI bundles main.ts and util.ts with esbuild (types are stripped, not
// checked) into one script before it enters the sandbox. The printed value is
// the entry's default export.

import { check, total, type Order } from "./util.ts";

const orders: Order[] = [
  { item: "tea", price: 3.5, quantity: 2 },
  { item: "cake", price: 4, quantity: 1 },
].map(check);

// Top-level await works: the bundle runs in async mode.
await host.rpc("sleep", 10);

console.log(`${orders.length} orders`);

export default { orders: orders.length, total: total(orders) };
