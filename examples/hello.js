// hello.js: plain JavaScript in the kafig sandbox.
//
//   go run ./cmd/kafig examples/hello.js
//
// console.log is the kafig CLI's: it prints on stdout. The value of the last
// expression is the script's result, printed as JSON.

function fib(n) {
  let a = 0, b = 1;
  for (let i = 0; i < n; i++) [a, b] = [b, a + b];
  return a;
}

const primes = [];
for (let n = 2; primes.length < 10; n++) {
  if (primes.every((p) => n % p !== 0)) primes.push(n);
}

console.log("Hello from the sandbox!");
console.log("fib(30) =", fib(30));

({ fib30: fib(30), primes, engine: "QuickJS" });
