import { describe, expect, it } from "vitest";
import { amount, dollars, perDayAtRate, perHour, wasteShare } from "./money";

describe("money", () => {
  it("formats dollars", () => {
    expect(dollars(8)).toBe("$8.00");
    expect(dollars(1234.567)).toBe("$1,234.57");
    expect(dollars(123456.7)).toBe("$123,457");
    expect(dollars(null)).toBe("–");
    expect(perHour(2.5)).toBe("$2.50/hr");
  });
  it("never shows a real, tiny amount as $0.00", () => {
    expect(amount(0.0017)).toBe("<$0.01");
    expect(amount(0.006)).toBe("$0.01");
    expect(amount(0)).toBe("$0.00");
    expect(amount(12.5)).toBe("$12.50");
    expect(amount(null)).toBe("–");
  });
  it("computes the wasted share of spend", () => {
    expect(wasteShare(4, 16)).toBe(0.25);
    expect(wasteShare(0, 0)).toBeNull();
    expect(wasteShare(20, 16)).toBe(1);
  });
  it("projects a rate over a day", () => {
    expect(perDayAtRate(2)).toBe(48);
  });
});

import { roleAtLeast } from "./roles";
describe("roles", () => {
  it("orders viewer < operator < admin", () => {
    expect(roleAtLeast("viewer", "operator")).toBe(false);
    expect(roleAtLeast("operator", "operator")).toBe(true);
    expect(roleAtLeast("admin", "operator")).toBe(true);
    expect(roleAtLeast(undefined, "viewer")).toBe(false);
    expect(roleAtLeast("root", "viewer")).toBe(false);
  });
});
