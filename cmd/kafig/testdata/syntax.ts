const a: number = 1;
let b = a +* 2;
