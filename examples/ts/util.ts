// util.ts: a module that main.ts imports.

export interface Order {
  item: string;
  price: number;
  quantity: number;
}

export function total(orders: readonly Order[]): number {
  return orders.reduce((sum, o) => sum + o.price * o.quantity, 0);
}

export function check(order: Order): Order {
  if (order.quantity <= 0) {
    throw new RangeError(`bad quantity for ${order.item}: ${order.quantity}`);
  }
  return order;
}
