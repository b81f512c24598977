// lib.ts
export function check(x: number): void {
  if (x > 0) {
    throw new TypeError("boom " + x);
  }
}
