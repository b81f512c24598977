import { check } from "./lib.ts";

const n: number = 1;
check(n);
