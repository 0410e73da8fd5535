// How a money movement reads: its kind in words, and whether it took money out or put it in.
"use strict";

export const KINDS = { deposit: "Deposit", withdrawal: "Withdrawal", transfer_out: "Transfer out",
  transfer_in: "Transfer in", hold_out: "Held (pending out)", hold_in: "Announced (pending in)",
  posted_out: "Hold posted", posted_in: "Hold posted", voided_out: "Hold voided",
  voided_in: "Hold voided", expired_out: "Hold expired", expired_in: "Hold expired",
  transaction_debit: "Entry debit", transaction_credit: "Entry credit" };

const SIDES = { withdrawal: "debit", transfer_out: "debit", transaction_debit: "debit",
  deposit: "credit", transfer_in: "credit", transaction_credit: "credit" };

// "−" or "+" for a movement that changed the balance, "" for a pending side (it changes none);
// with "class", the CSS class that colours it.
export function signOf(kind, what = "sign") {
  const side = SIDES[kind];
  if (what === "class") return side || "held";
  return { debit: "−", credit: "+" }[side] || "";
}
