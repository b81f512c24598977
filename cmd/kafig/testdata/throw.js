function inner() {
  throw new Error("from inner");
}
function outer() {
  inner();
}
outer();
